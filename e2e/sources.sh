#!/usr/bin/env bash
# Real event sources for the scaler tests, on loopback, installed from Debian's packages.
#
#   e2e/sources.sh up [SOURCE...]    start the sources (all when none named); idempotent
#   e2e/sources.sh down [SOURCE...]  stop what `up` started (by PID file)
#   e2e/sources.sh env               print `export ...` lines the tests read
#   e2e/sources.sh status            one line per source
#
# Sources: prometheus (two servers: plain on 19090, basic auth on 19091); mysql (MariaDB
# on 13306 with database `shop`, user `eventscale`).
# State: <repo>/.state/sources (EVENTSCALE_SOURCES_DIR).
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
PROM_USER=eventscale
PROM_PASSWORD=local-test-password

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
  wait_for prometheus 60 curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready"
  wait_for prometheus-auth 60 curl -fsS -u "$PROM_USER:$PROM_PASSWORD" "http://127.0.0.1:$PROM_AUTH_PORT/-/ready"
}

prometheus_down() {
  stop_one prometheus
  stop_one prometheus-auth
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

ALL=(prometheus mysql)

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
      *) die "unknown source $n (known: ${ALL[*]})" ;;
    esac
  done
}

cmd=${1:-}
shift || true
case $cmd in
  up)
    mkdir -p "$LOGS" "$PIDS"
    each up "$@"
    ;;
  down) each down "$@" ;;
  env)
    echo "export EVENTSCALE_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
    echo "export EVENTSCALE_PROMETHEUS_AUTH_URL=http://127.0.0.1:$PROM_AUTH_PORT"
    echo "export EVENTSCALE_PROMETHEUS_USER=$PROM_USER"
    echo "export EVENTSCALE_PROMETHEUS_PASSWORD=$PROM_PASSWORD"
    echo "export EVENTSCALE_MYSQL_HOST=127.0.0.1"
    echo "export EVENTSCALE_MYSQL_PORT=$MYSQL_PORT"
    echo "export EVENTSCALE_MYSQL_USER=$MYSQL_USER"
    echo "export EVENTSCALE_MYSQL_PASSWORD=$MYSQL_PASSWORD"
    echo "export EVENTSCALE_MYSQL_DB=$MYSQL_DB"
    ;;
  status)
    for n in prometheus prometheus-auth mysql; do
      if running $n; then echo "$n running (pid $(cat "$PIDS/$n.pid"))"; else echo "$n stopped"; fi
    done
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
