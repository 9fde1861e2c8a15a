#!/usr/bin/env bash
# A real local Kubernetes control plane for eventscale, on loopback.
#
#   e2e/cluster.sh up      install what is missing, build/cache Kubernetes v1.20.2, start
#                          etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
#                          one real node (containerd, kubelet, kube-proxy: e2e/node.sh),
#                          install eventscale into the cluster and start it and its HTTP
#                          interceptor; idempotent
#   e2e/cluster.sh down    stop what `up` started (by PID file) and undo the node's host
#                          changes; keeps the cache and state (`down --purge` also deletes
#                          the state directory)
#   e2e/cluster.sh env     print `export KUBECONFIG=...` and friends (the interceptor's
#                          EVENTSCALE_INTERCEPTOR_PROXY and EVENTSCALE_INTERCEPTOR_ADMIN), for `eval`
#   e2e/cluster.sh status  one line per component
#   e2e/cluster.sh logs [component]   print the logs (all, or one component)
#   e2e/cluster.sh deps    only install packages and build/cache the Kubernetes binaries
#
# Environment: EVENTSCALE_CACHE_DIR (default ~/.cache/eventscale), EVENTSCALE_STATE_DIR
# (default <repo>/.state/cluster), EVENTSCALE_CARGO_PROFILE (dev or release; default dev),
# EVENTSCALE_BIN (an already built eventscale binary to run instead of building one; the
# end-to-end tests pass the binary cargo built for them).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../certs/pki.sh
source "$REPO/certs/pki.sh"

K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE_DIR=${EVENTSCALE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/eventscale}
# The suffix names the vendor fix below (binaries cached without it crash, so never reuse them)
# and the set of binaries built: the control plane and the node (kubelet, kube-scheduler,
# kube-proxy, the pause binary), all from one source tree and one `make`.
K8S_DIR=$CACHE_DIR/k8s-v$K8S_VERSION-reflect2-1.0.2-node
K8S_COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet"
K8S_BIN=$K8S_DIR/bin
STATE_DIR=${EVENTSCALE_STATE_DIR:-$REPO/.state/cluster}
PKI=$STATE_DIR/pki
LOGS=$STATE_DIR/logs
PIDS=$STATE_DIR/pids
KUBECONFIG_FILE=$STATE_DIR/admin.kubeconfig
KUBECTL=$K8S_BIN/kubectl

ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
KCM_PORT=20257
ADAPTER_PORT=16444
ADAPTER_METRICS_PORT=16445
INTERCEPTOR_PROXY_PORT=16480
INTERCEPTOR_ADMIN_PORT=16481
INTERCEPTOR_SCALER_PORT=16482
ADAPTER_NAMESPACE=eventscale
ADAPTER_SERVICE=eventscale-metrics-apiserver
CARGO_PROFILE=${EVENTSCALE_CARGO_PROFILE:-dev}

LOG_TAG=cluster
# shellcheck source=lib.sh
source "$REPO/e2e/lib.sh"
# shellcheck source=node.sh
source "$REPO/e2e/node.sh"

# --- packages and the Kubernetes build --------------------------------------------------

ensure_deb_src() {
  local f=/etc/apt/sources.list.d/eventscale-deb-src.sources
  [[ -f $f ]] && return 0
  [[ -f /etc/apt/sources.list.d/debian.sources ]] ||
    die "no /etc/apt/sources.list.d/debian.sources to derive a deb-src entry from"
  log "adding a deb-src entry for Debian's kubernetes source package"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | as_root tee "$f" >/dev/null
  APT_UPDATED=0
}

k8s_built() {
  local c
  for c in $K8S_COMPONENTS pause; do [[ -x $K8S_BIN/$c ]] || return 1; done
}

build_k8s() {
  k8s_built && return 0
  ensure_pkg go golang-go
  ensure_pkg gcc gcc
  ensure_pkg make make
  ensure_pkg rsync rsync
  ensure_deb_src
  apt_update_once
  local work=$CACHE_DIR/build
  mkdir -p "$work" "$K8S_BIN"
  if [[ ! -d $work/kubernetes-$K8S_VERSION ]]; then
    log "downloading Debian's kubernetes source package ($K8S_DEB_VERSION)"
    (cd "$work" && apt-get source --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null 2>&1) ||
      die "apt-get source kubernetes=$K8S_DEB_VERSION failed"
    local orig
    orig=$(ls "$work"/kubernetes_*.orig.tar.gz 2>/dev/null | head -n1)
    [[ -n $orig ]] || die "no kubernetes .orig.tar.gz in $work"
    tar -xzf "$orig" -C "$work"
    [[ -d $work/kubernetes-$K8S_VERSION ]] || die "the source tarball did not unpack into kubernetes-$K8S_VERSION"
  fi
  local src=$work/kubernetes-$K8S_VERSION
  # v1.20.2 vendors modern-go/reflect2 v1.0.1, whose map iteration crashes binaries built
  # with Go >= 1.18 ("fatal error: fault" in reflect2.UnsafeIterate, seen on the first
  # custom resource written). reflect2 v1.0.2 is the fixed, API-compatible release and
  # Debian packages its source; it replaces the vendored copy before the build.
  if ! dpkg -s golang-github-modern-go-reflect2-dev >/dev/null 2>&1; then
    apt_update_once
    log "installing golang-github-modern-go-reflect2-dev (reflect2 v1.0.2 source)"
    apt_install golang-github-modern-go-reflect2-dev ||
      die "apt-get install golang-github-modern-go-reflect2-dev failed"
  fi
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [[ -f $reflect2/go_above_118.go ]] || die "$reflect2 is not reflect2 v1.0.2 (no go_above_118.go)"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r "$reflect2" "$src/vendor/github.com/modern-go/reflect2"
  local what="" c
  for c in $K8S_COMPONENTS; do what+="cmd/$c "; done
  log "building $K8S_COMPONENTS v$K8S_VERSION (about 20 minutes on 2 cores, once; log: $work/build.log)"
  mkdir -p "$src/.go/src/k8s.io" "$work/home"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  (
    cd "$src"
    GOPATH=$src/.go CGO_ENABLED=0 HOME=$work/home GOFLAGS= GO111MODULE=off make WHAT="${what% }"
  ) >"$work/build.log" 2>&1 || die "building Kubernetes failed; read $work/build.log"
  # The pod sandbox's pause process, from the same tree (build/pause/linux/pause.c), static so
  # that its image needs nothing else; packed into an image by e2e/node.sh.
  gcc -Os -Wall -static -DVERSION="v$K8S_VERSION-eventscale" -o "$src/_output/bin/pause" \
    "$src/build/pause/linux/pause.c" >>"$work/build.log" 2>&1 ||
    die "building the pause binary failed; read $work/build.log"
  strip "$src/_output/bin/pause"
  for c in $K8S_COMPONENTS pause; do cp "$src/_output/bin/$c" "$K8S_BIN/"; done
  log "cached the Kubernetes binaries in $K8S_BIN"
  # The source tree is 1+ GB once built; the binaries are all we keep.
  rm -rf "$src"
}

# kubectl v1.20 from Debian's kubernetes-client, unpacked into the cache rather than
# installed, so it matches the apiserver and never replaces a kubectl the machine has.
ensure_kubectl() {
  [[ -x $KUBECTL ]] && return 0
  apt_update_once
  local tmp
  tmp=$(mktemp -d)
  log "fetching kubectl v$K8S_VERSION (Debian kubernetes-client)"
  (cd "$tmp" && apt-get download "kubernetes-client=$K8S_DEB_VERSION" >/dev/null 2>&1) ||
    die "apt-get download kubernetes-client failed"
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
  mkdir -p "$K8S_BIN"
  cp "$tmp/x/usr/bin/kubectl" "$KUBECTL"
  rm -rf "$tmp"
}

deps() {
  ensure_pkg openssl openssl
  ensure_pkg curl curl
  ensure_pkg jq jq
  ensure_pkg etcd etcd-server
  ensure_kubectl
  node_deps
  build_k8s
}

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# --- the control plane ---------------------------------------------------------------------

write_kubeconfig() {
  local file=$1 user_block=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: eventscale-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: user
  user:
$user_block
contexts:
- name: eventscale-local
  context: {cluster: eventscale-local, user: user}
current-context: eventscale-local
EOF
  chmod 600 "$file"
}

cert_user_block() {
  printf '    client-certificate-data: %s\n    client-key-data: %s\n' \
    "$(base64 -w0 <"$PKI/$1.crt")" "$(base64 -w0 <"$PKI/$1.key")"
}

start_etcd() {
  running etcd && return 0
  port_free "$ETCD_PORT" || die "port $ETCD_PORT (etcd) is taken by a process this script did not start"
  start_bg etcd "$(command -v etcd)" --name eventscale --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "eventscale=http://127.0.0.1:$ETCD_PEER_PORT" --quota-backend-bytes 1073741824
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  local args=(--etcd-servers "http://127.0.0.1:$ETCD_PORT"
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" --insecure-port 0
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key"
    --client-ca-file "$PKI/ca.crt"
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key"
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key"
    --service-account-issuer https://kubernetes.default.svc.cluster.local
    --authorization-mode Node,RBAC --service-cluster-ip-range "$SERVICE_CIDR"
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group
    --requestheader-extra-headers-prefix X-Remote-Extra-
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key"
    --enable-aggregator-routing=false --allow-privileged=true --v 1)
  start_unless_same kube-apiserver "$APISERVER_PORT" "$K8S_BIN/kube-apiserver" "${args[@]}"
  wait_for kube-apiserver 90 k get --raw /readyz
}

start_controller_manager() {
  local kc=$STATE_DIR/controller-manager.kubeconfig
  [[ -s $kc ]] || write_kubeconfig "$kc" "$(cert_user_block controller-manager)"
  # nodelifecycle takes the not-ready taint off the node once it is Ready (and puts it back
  # when the kubelet stops reporting), so users' manifests need no tolerations.
  local args=(--kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc"
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --port 0
    --use-service-account-credentials --service-account-private-key-file "$PKI/sa.key"
    --root-ca-file "$PKI/ca.crt" --leader-elect=false
    --controllers '*,-nodeipam,-attachdetach,-persistentvolume-binder,-ttl'
    --horizontal-pod-autoscaler-sync-period 2s --v 1)
  start_unless_same kube-controller-manager "$KCM_PORT" "$K8S_BIN/kube-controller-manager" "${args[@]}"
  # The token controller creating the default ServiceAccount shows the manager is working.
  wait_for kube-controller-manager 60 k -n default get serviceaccount default
}

# --- eventscale, installed the way a user would ----------------------------------------------

eventscale_bin() {
  local dir=debug
  [[ $CARGO_PROFILE == release ]] && dir=release
  echo "${CARGO_TARGET_DIR:-$REPO/target}/$dir/eventscale"
}

build_eventscale() {
  log "building eventscale (cargo, profile $CARGO_PROFILE)"
  (cd "$REPO" && cargo build --profile "$CARGO_PROFILE" -p metrics-adapter --bin eventscale) \
    >"$STATE_DIR/logs/cargo-build.log" 2>&1 ||
    die "building eventscale failed; read $STATE_DIR/logs/cargo-build.log"
}

install_eventscale() {
  local bin=$1 certs=$STATE_DIR/eventscale-certs
  k apply -f "$REPO/apiservice/namespace.yaml" >/dev/null
  "$bin" crds | k apply -f - >/dev/null || die "applying the CRDs printed by '$bin crds' failed"
  k apply -f "$REPO/apiservice/rbac.yaml" >/dev/null || die "applying apiservice/rbac.yaml failed"
  # Locally the adapter is reached through an ExternalName Service pointing at localhost:
  # an Endpoints object may not point into 127.0.0.0/8. In a cluster, apiservice/service.yaml.
  k apply -f "$REPO/e2e/manifests/service-local.yaml" >/dev/null || die "applying the local Service failed"
  "$bin" certs --dir "$certs" --service "$ADAPTER_SERVICE" --namespace "$ADAPTER_NAMESPACE" >/dev/null ||
    die "'eventscale certs' failed"
  sed -e "s|caBundle: .*|caBundle: $(base64 -w0 <"$certs/ca.crt")|" \
    -e "s|port: 443|port: $ADAPTER_PORT|" "$REPO/apiservice/apiservice.yaml" | k apply -f - >/dev/null ||
    die "applying the APIService failed"
  # eventscale and its interceptor run under their own ServiceAccounts' tokens, so their
  # RBAC is exercised as in a cluster.
  sa_kubeconfig eventscale "$STATE_DIR/eventscale.kubeconfig"
  sa_kubeconfig eventscale-interceptor "$STATE_DIR/interceptor.kubeconfig"
}

# sa_kubeconfig ACCOUNT FILE: a kubeconfig with the token of ServiceAccount eventscale/ACCOUNT.
sa_kubeconfig() {
  local account=$1 file=$2 token="" i
  for i in $(seq 1 100); do
    token=$(k -n "$ADAPTER_NAMESPACE" get secret -o json |
      jq -r --arg sa "$account" '.items[] | select(.type=="kubernetes.io/service-account-token" and .metadata.annotations["kubernetes.io/service-account.name"]==$sa) | .data.token' |
      head -n1)
    [[ -n $token ]] && break
    sleep 0.2
  done
  [[ -n $token ]] || die "no token for ServiceAccount $ADAPTER_NAMESPACE/$account; read $LOGS/kube-controller-manager.log"
  write_kubeconfig "$file" "    token: $(base64 -d <<<"$token")"
}

# restart_needed NAME BIN PORT...: false when NAME already runs from this very binary;
# otherwise stops it, checks that its ports are free and records the binary it will run.
restart_needed() {
  local name=$1 bin=$2 sum port
  shift 2
  sum=$(sha256sum "$bin" | cut -d' ' -f1)
  if running "$name" && [[ $(cat "$PIDS/$name.sum" 2>/dev/null) == "$sum" ]]; then
    return 1
  fi
  stop_one "$name"
  for port in "$@"; do
    port_free "$port" || die "port $port ($name) is taken by a process this script did not start"
  done
  echo "$sum" >"$PIDS/$name.sum"
}

start_eventscale() {
  local bin=$1
  restart_needed eventscale "$bin" "$ADAPTER_PORT" || return 0
  start_bg eventscale "$bin" run --kubeconfig "$STATE_DIR/eventscale.kubeconfig" \
    --secure-port "$ADAPTER_PORT" --bind-address 127.0.0.1 --cert-dir "$STATE_DIR/eventscale-certs" \
    --cert-reload-seconds 2 --metrics-port "$ADAPTER_METRICS_PORT" --metrics-bind-address 127.0.0.1 \
    --interceptor-scaler-address "127.0.0.1:$INTERCEPTOR_SCALER_PORT"
  wait_for eventscale 30 curl -fsSk "https://127.0.0.1:$ADAPTER_PORT/readyz"
}

# The HTTP interceptor, on loopback; it forwards only to the pod network,
# whatever an Endpoints object names: the network rule holds for the host's processes too.
start_interceptor() {
  local bin=$1
  restart_needed interceptor "$bin" "$INTERCEPTOR_PROXY_PORT" "$INTERCEPTOR_ADMIN_PORT" \
    "$INTERCEPTOR_SCALER_PORT" || return 0
  start_bg interceptor "$bin" interceptor --kubeconfig "$STATE_DIR/interceptor.kubeconfig" \
    --bind-address 127.0.0.1 --proxy-port "$INTERCEPTOR_PROXY_PORT" \
    --admin-port "$INTERCEPTOR_ADMIN_PORT" --scaler-port "$INTERCEPTOR_SCALER_PORT" \
    --backend-cidrs "$POD_CIDR" --drain-delay 1s
  wait_for interceptor 30 curl -fsS "http://127.0.0.1:$INTERCEPTOR_ADMIN_PORT/readyz"
}

# apiservice_available [NAME]: whether the APIService (default: the metrics one) is Available.
apiservice_available() {
  [[ $(k get apiservice "${1:-v1beta1.external.metrics.k8s.io}" \
    -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}') == True ]]
}

up() {
  mkdir -p "$STATE_DIR" "$LOGS" "$PIDS"
  deps
  pki_cluster "$PKI"
  [[ -s $KUBECONFIG_FILE ]] || write_kubeconfig "$KUBECONFIG_FILE" "$(cert_user_block admin)"
  start_etcd
  start_apiserver
  start_controller_manager
  node_up
  local bin=${EVENTSCALE_BIN:-}
  if [[ -z $bin ]]; then
    build_eventscale
    bin=$(eventscale_bin)
  fi
  [[ -x $bin ]] || die "eventscale binary $bin is missing or not executable"
  install_eventscale "$bin"
  start_interceptor "$bin"
  start_eventscale "$bin"
  local i
  local svc
  for svc in v1beta1.external.metrics.k8s.io v1alpha1.explain.eventscale.sh; do
    for i in $(seq 1 150); do
      apiservice_available "$svc" && break
      sleep 0.4
    done
    apiservice_available "$svc" || die "APIService $svc is not Available: $(k get apiservice "$svc" -o 'jsonpath={.status.conditions[0].message}'); read $LOGS/eventscale.log and $LOGS/kube-apiserver.log"
  done
  log "up: APIServices v1beta1.external.metrics.k8s.io and v1alpha1.explain.eventscale.sh are Available; run: eval \"\$($0 env)\""
}

down() {
  stop_one eventscale
  stop_one interceptor
  node_down
  stop_one kube-controller-manager
  stop_one kube-apiserver
  stop_one etcd
  if [[ ${1:-} == --purge ]]; then
    log "deleting $STATE_DIR"
    rm -rf "$STATE_DIR"
  fi
}

env_cmd() {
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
  echo "export EVENTSCALE_KUBECTL=$KUBECTL"
  echo "export EVENTSCALE_STATE_DIR=$STATE_DIR"
  echo "export EVENTSCALE_ADAPTER_URL=https://127.0.0.1:$ADAPTER_PORT"
  echo "export EVENTSCALE_METRICS_URL=http://127.0.0.1:$ADAPTER_METRICS_PORT/metrics"
  echo "export EVENTSCALE_INTERCEPTOR_PROXY=http://127.0.0.1:$INTERCEPTOR_PROXY_PORT"
  echo "export EVENTSCALE_INTERCEPTOR_ADMIN=http://127.0.0.1:$INTERCEPTOR_ADMIN_PORT"
  echo "export PATH=$K8S_BIN:\$PATH"
}

COMPONENTS=(etcd kube-apiserver kube-controller-manager "${NODE_COMPONENTS[@]}" eventscale interceptor)

status() {
  local name rc=0
  for name in "${COMPONENTS[@]}"; do
    if running "$name"; then
      printf '%-24s running (pid %s)\n' "$name" "$(cat "$PIDS/$name.pid")"
    else
      printf '%-24s stopped\n' "$name"
      rc=1
    fi
  done
  if [[ -s $KUBECONFIG_FILE ]] && node_schedulable 2>/dev/null; then
    printf '%-24s Ready\n' "node/$NODE_NAME"
  else
    printf '%-24s not ready\n' "node/$NODE_NAME"
    rc=1
  fi
  if [[ -s $KUBECONFIG_FILE ]] && apiservice_available 2>/dev/null; then
    printf '%-24s Available\n' apiservice
  else
    printf '%-24s not available\n' apiservice
    rc=1
  fi
  return $rc
}

logs() {
  local name
  if [[ -n ${1:-} ]]; then
    [[ -f $LOGS/$1.log ]] || die "no log for '$1' in $LOGS"
    cat "$LOGS/$1.log"
    return
  fi
  for name in "${COMPONENTS[@]}"; do
    [[ -f $LOGS/$name.log ]] || continue
    echo "==> $LOGS/$name.log <=="
    tail -n 50 "$LOGS/$name.log"
  done
}

case ${1:-} in
  up)
    mkdir -p "$STATE_DIR"
    # One `up` at a time (tests and a user may start it at once); servers started here
    # do not inherit the lock (start_bg closes descriptor 9).
    exec 9>"$STATE_DIR/.lock"
    flock -w 1200 9 || die "another e2e/cluster.sh up has held $STATE_DIR/.lock for 20 minutes"
    up
    ;;
  down)
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    flock -w 1200 9 || die "another e2e/cluster.sh has held $STATE_DIR/.lock for 20 minutes"
    down "${2:-}"
    ;;
  env) env_cmd ;;
  status) status ;;
  logs) logs "${2:-}" ;;
  deps) deps ;;
  *)
    echo "usage: $0 up|down [--purge]|env|status|logs [component]|deps" >&2
    exit 2
    ;;
esac
