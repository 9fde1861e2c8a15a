#!/usr/bin/env bash
# The local cluster's one real node, `eventscale-node`: containerd, kubelet, kube-proxy
# (iptables mode) and a CNI bridge for pods, with the images it runs built here and imported
# (nothing is ever pulled). Sourced by e2e/cluster.sh, which sets REPO, STATE_DIR, PKI, LOGS,
# PIDS, K8S_BIN and CACHE_DIR and defines k, write_kubeconfig and cert_user_block.
#
# The network rule: traffic from the node goes only to loopback or to the pods on its bridge.
# - kubelet v1.20 asks the cloud metadata service at start unless AWS_EC2_METADATA_DISABLED
#   is set: it is always set, and an OUTPUT reject rule for that address is in place before
#   the kubelet first starts.
# - containerd sends every pull, whatever the registry's name, to a closed port on loopback.
# - Pods have no default route (routes to the pod subnet and the Service range only) and no
#   resolver; the EVENTSCALE-FORWARD chain drops anything forwarded into or out of the
#   bridge that is not bridge to bridge; the Service range is routed onto the bridge, never
#   along the machine's default route; the node name resolves from /etc/hosts.
# Every host change is listed in node_down, which undoes it.

NODE_NAME=eventscale-node
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
NODE_BRIDGE=eventscale0
# Configuration, certificates, kubeconfigs and images of this checkout's cluster.
NODE_DIR=$STATE_DIR/node
# Host-wide, as the kubelet and containerd are: their data, runtime state and the record of
# the kernel settings found before the node first started (so that a run killed before its
# `down` still restores what the machine had).
NODE_DATA=/var/lib/eventscale-node
NODE_RUN=/run/eventscale-node
CONTAINERD_SOCK=$NODE_RUN/containerd.sock
# The pods' cgroups live under this root only (kubelet cgroupRoot), so that cleaning up
# never touches another runtime's.
NODE_CGROUP=eventscale-node
SYSCTL_SAVED=$NODE_DATA/sysctl.orig
# Loopback ports, beside the control plane's.
KUBELET_HEALTHZ_PORT=20248
PROXY_METRICS_PORT=20249
PROXY_HEALTHZ_PORT=20256
SCHEDULER_PORT=20259

PAUSE_IMAGE=k8s.gcr.io/pause:3.2
DEMO_IMAGE=localhost/eventscale/demo:v1
# The walkthrough's image name: its Deployment applies unchanged and runs the demo.
DEMO_ALIAS=rg.fr-par.scw.cloud/novigrad/go-helloworld:0.1.0

# The kernel settings the node's components change: the kubelet (overcommit, panic, keys),
# the CNI bridge (forwarding) and kube-proxy (route_localnet, bridge netfilter).
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables)
# Of those, the ones the kubelet and kube-proxy set once at their start and the node does not
# need, put back as soon as the node is Ready (NodePorts open on the bridge address only, so
# route_localnet is not needed either).
START_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# --- packages ----------------------------------------------------------------------------

node_deps() {
  ensure_pkg containerd containerd
  ensure_pkg runc runc
  ensure_pkg /usr/lib/cni/bridge containernetworking-plugins
  ensure_pkg iptables iptables
  ensure_pkg conntrack conntrack
  ensure_pkg ip iproute2
  ensure_pkg findmnt util-linux
}

# --- host changes, each undone by node_down ------------------------------------------------

sysctl_get() { sysctl -n "$1" 2>/dev/null; }

# The values found before the node's first start, recorded once (host-wide).
save_sysctls() {
  [[ -s $SYSCTL_SAVED ]] && return 0
  mkdir -p "$NODE_DATA"
  local s v
  for s in "${NODE_SYSCTLS[@]}"; do
    v=$(sysctl_get "$s") && echo "$s=$v"
  done >"$SYSCTL_SAVED.tmp"
  mv "$SYSCTL_SAVED.tmp" "$SYSCTL_SAVED"
}

# restore_sysctls [NAME...]: put back the recorded values (all, or the ones named).
restore_sysctls() {
  [[ -s $SYSCTL_SAVED ]] || return 0
  local line name
  while IFS= read -r line; do
    name=${line%%=*}
    if [[ $# -eq 0 ]] || [[ " $* " == *" $name "* ]]; then
      sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"
    fi
  done <"$SYSCTL_SAVED"
}

# ensure_chain TABLE PARENT CHAIN RULE...: CHAIN holds exactly RULEs (written as
# `iptables -S` prints them) and PARENT jumps to it; left alone when it already does, and
# replaced by a chain filled beforehand when not, so that there is no moment without it.
ensure_chain() {
  local table=$1 parent=$2 chain=$3 rule want have
  shift 3
  want=$(printf -- "-A $chain %s\n" "$@")
  have=$(iptables -t "$table" -S "$chain" 2>/dev/null | grep -- "^-A " || true)
  if [[ $have != "$want" ]]; then
    # A new chain filled, then swapped in, so that the old one guards until the new does.
    iptables -t "$table" -N "$chain-NEW" 2>/dev/null || iptables -t "$table" -F "$chain-NEW"
    for rule in "$@"; do
      # shellcheck disable=SC2086
      iptables -t "$table" -A "$chain-NEW" $rule || die "could not add '$rule' to $chain"
    done
    iptables -t "$table" -I "$parent" 1 -j "$chain-NEW"
    iptables -t "$table" -D "$parent" -j "$chain" 2>/dev/null || true
    iptables -t "$table" -F "$chain" 2>/dev/null || true
    iptables -t "$table" -X "$chain" 2>/dev/null || true
    iptables -t "$table" -E "$chain-NEW" "$chain"
  fi
  iptables -t "$table" -C "$parent" -j "$chain" 2>/dev/null || iptables -t "$table" -I "$parent" 1 -j "$chain"
}

# The guards go in before anything of the node starts, and stay while it runs.
install_guards() {
  # 1. The cloud metadata service is never reached from this machine while the node runs.
  iptables -C OUTPUT -d 169.254.169.254/32 -j REJECT 2>/dev/null ||
    iptables -I OUTPUT 1 -d 169.254.169.254/32 -j REJECT ||
    die "could not add the OUTPUT reject rule for 169.254.169.254"
  # 2. The pod bridge, also the node's address (the kubelet refuses loopback).
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge ||
    die "could not create the bridge $NODE_BRIDGE"
  # (Tests of command output are on captured text, not `| grep -q`: under pipefail the
  # writer's SIGPIPE, when grep stops reading at the match, would read as "missing".)
  [[ $(ip addr show dev "$NODE_BRIDGE") == *"inet $NODE_IP/"* ]] ||
    ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # 3. Only bridge-to-bridge traffic is forwarded: nothing from a pod leaves the bridge, and
  #    nothing from elsewhere is forwarded onto it. In the mangle table, which runs before
  #    filter, where kube-proxy's KUBE-FORWARD accepts marked and established traffic.
  ensure_chain mangle FORWARD EVENTSCALE-FORWARD \
    "-i $NODE_BRIDGE -o $NODE_BRIDGE -j RETURN" \
    "-i $NODE_BRIDGE -j DROP" \
    "-o $NODE_BRIDGE -j DROP" \
    "-s $CLUSTER_CIDR -j DROP"
  # 3b. A ClusterIP that kube-proxy translates, for this machine's own traffic, to anything
  #     but a pod (an Endpoints object naming an outside address) is refused.
  ensure_chain filter OUTPUT EVENTSCALE-OUTPUT \
    "! -d $POD_CIDR -m conntrack --ctstate DNAT --ctorigdst $SERVICE_CIDR -j REJECT --reject-with icmp-port-unreachable"
  # 4. ClusterIPs that kube-proxy has not translated (yet) stay on the bridge, never take the
  #    default route.
  [[ $(ip route show "$SERVICE_CIDR") == *"dev $NODE_BRIDGE"* ]] ||
    ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  # 5. The node's name resolves here, never by DNS (the apiserver dials the kubelet by its
  #    address first; anything that looks the name up finds it in /etc/hosts).
  grep -q "^$NODE_IP $NODE_NAME " /etc/hosts ||
    echo "$NODE_IP $NODE_NAME # eventscale-node" >>/etc/hosts
}

# --- configuration ---------------------------------------------------------------------------

write_node_config() {
  mkdir -p "$NODE_DIR/certs.d/_default" "$NODE_DIR/net.d" "$NODE_DATA" "$NODE_RUN"
  # Every registry, whatever its name, is this closed loopback port: a pod naming an image
  # that was not imported ends in ErrImagePull / ImagePullBackOff, and nothing leaves.
  cat >"$NODE_DIR/certs.d/_default/hosts.toml" <<'EOF'
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$NODE_DIR/containerd.toml" <<EOF
# containerd for eventscale-node (written by e2e/node.sh)
version = 2
root = "$NODE_DATA/containerd"
state = "$NODE_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE and cannot lower oom_score_adj; without this every
  # sandbox fails in runc ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # The pods' network namespaces under $NODE_RUN, not /var/run/netns with everyone else's.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroupfs, as the kubelet: there is no systemd here.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE_DIR/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DATA/containerd-opt"
EOF
  # No default route in pods (isDefaultGateway false, no masquerade): the pod subnet and the
  # Service range only.
  cat >"$NODE_DIR/net.d/10-eventscale.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "eventscale-pods",
  "plugins": [{
    "type": "bridge",
    "bridge": "$NODE_BRIDGE",
    "isGateway": true,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "$SERVICE_CIDR", "gw": "$NODE_IP"}],
      "dataDir": "$NODE_DATA/cni"
    }
  }]
}
EOF
  printf '%s\n' "# eventscale-node: pods have no resolver; this is each pod's own loopback" \
    "nameserver 127.0.0.1" >"$NODE_DIR/resolv.conf"
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failSwapOn: false
# No resolver in pods: their resolv.conf names only the pod's own loopback, where nothing
# answers. (An empty resolvConf means the machine's file in v1.20, and a file naming no
# server makes containerd copy the machine's.)
resolvConf: $NODE_DIR/resolv.conf
serializeImagePulls: false
# A small node that shares the machine with the control plane: evict only when nearly out.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
# The imported images can never be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
# The tests start and stop hundreds of pods in minutes, and wait for the kubelet's Events
# (pull failures, BackOff): at the default 5 a second a backlog delayed them past a minute.
eventRecordQPS: 50
eventBurst: 100
EOF
  write_kubeconfig "$NODE_DIR/kubelet.kubeconfig" "$(cert_user_block kubelet-client)"
  write_kubeconfig "$NODE_DIR/kube-scheduler.kubeconfig" "$(cert_user_block kube-scheduler)"
  write_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" "$(cert_user_block kube-proxy)"
}

# --- images, offline -------------------------------------------------------------------------

# The demo application, a static binary built from e2e/demo in a target directory of its own
# (so that it never waits on the lock of a cargo command that is running the tests).
build_demo() {
  local target_dir=$REPO/target/demo-image triple
  triple=$(rustc -vV | sed -n 's/^host: //p')
  [[ -n $triple ]] || die "rustc -vV printed no host triple"
  (cd "$REPO" && CARGO_TARGET_DIR=$target_dir RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p eventscale-demo --target "$triple") >"$LOGS/demo-build.log" 2>&1 ||
    die "building the demo application failed; read $LOGS/demo-build.log"
  DEMO_BIN=$target_dir/$triple/release/eventscale-demo
  local linkage
  linkage=$(ldd "$DEMO_BIN" 2>&1 || true)
  [[ $linkage == *"statically linked"* || $linkage == *"not a dynamic executable"* ]] ||
    die "$DEMO_BIN is not static ($linkage); read $LOGS/demo-build.log"
}

# image_digest REF: the manifest digest containerd has for REF, if any.
image_digest() { ctr_k8s images ls 2>/dev/null | awk -v r="$1" '$1 == r {print $3}'; }

# pack_and_import NAME OCI_IMAGE_ARGS...: pack the image and import it unless containerd
# already has it under every reference with the same digest.
pack_and_import() {
  local name=$1 tar=$NODE_DIR/images/$1.tar want ref fresh=1
  shift
  mkdir -p "$NODE_DIR/images"
  want=$(python3 "$REPO/e2e/oci_image.py" --out "$tar" "$@") || die "packing the $name image failed"
  for ref in $(printf '%s\n' "$@" | sed -n '/^--ref$/{n;p}'); do
    [[ $(image_digest "$ref") == "$want" ]] || fresh=0
  done
  [[ $fresh -eq 1 ]] && return 0
  log "importing the $name image ($want)"
  ctr_k8s images import "$tar" >>"$LOGS/images.log" 2>&1 ||
    die "importing $tar into containerd failed; read $LOGS/images.log"
}

node_images() {
  ensure_pkg python3 python3
  local arch
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) die "no image architecture for $(uname -m)" ;;
  esac
  pack_and_import pause --arch "$arch" --ref "$PAUSE_IMAGE" --file "$K8S_BIN/pause=/pause" \
    --user 65535:65535 -- /pause
  build_demo
  pack_and_import demo --arch "$arch" --ref "$DEMO_IMAGE" --ref "$DEMO_ALIAS" \
    --file "$DEMO_BIN=/eventscale-demo" --expose 8080/tcp -- /eventscale-demo
}

# --- processes -------------------------------------------------------------------------------

start_containerd() {
  local args=(--config "$NODE_DIR/containerd.toml") ARGS_SALT
  ARGS_SALT=$(cat "$NODE_DIR/containerd.toml" "$NODE_DIR/net.d/10-eventscale.conflist" \
    "$NODE_DIR/certs.d/_default/hosts.toml" | sha256sum)
  same_args containerd "$(command -v containerd)" "${args[@]}" && return 0
  # A fresh start: whatever an earlier run left (its processes ended before a `down`, say)
  # goes first, or the pod subnet's addresses and the pods' mounts would leak away.
  stop_one kubelet
  stop_one containerd
  clear_node_runtime
  mkdir -p "$NODE_RUN"
  start_bg containerd "$(command -v containerd)" "${args[@]}"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
}

start_kubelet() {
  local args=(--config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig"
    --container-runtime=remote --container-runtime-endpoint="unix://$CONTAINERD_SOCK"
    --image-service-endpoint="unix://$CONTAINERD_SOCK" --pod-infra-container-image="$PAUSE_IMAGE"
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$NODE_DATA/kubelet"
    --volume-plugin-dir="$NODE_DATA/volume-plugins" --v=1)
  local ARGS_SALT
  ARGS_SALT=$(cat "$NODE_DIR/kubelet.yaml" "$NODE_DIR/kubelet.kubeconfig" "$NODE_DIR/resolv.conf" | sha256sum)
  make_cgroup_root
  # The kubelet's in-tree AWS credential provider asks the metadata service at start
  # unless this is set (the OUTPUT reject rule above is the second guard).
  AWS_EC2_METADATA_DISABLED=true start_unless_same kubelet "" "$K8S_BIN/kubelet" "${args[@]}"
  wait_for kubelet 60 curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
}

# The kubelet's cgroup root, in every v1 hierarchy (it must exist before the kubelet starts;
# cpuset needs its CPUs and memory nodes set before a child may hold a task).
make_cgroup_root() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -f $h/cgroup.procs ]] || continue
    mkdir -p "$h$NODE_CGROUP"
    if [[ -f $h/cpuset.cpus && -f $h$NODE_CGROUP/cpuset.cpus ]]; then
      [[ -n $(cat "$h$NODE_CGROUP/cpuset.cpus") ]] || cat "$h/cpuset.cpus" >"$h$NODE_CGROUP/cpuset.cpus"
      [[ -n $(cat "$h$NODE_CGROUP/cpuset.mems") ]] || cat "$h/cpuset.mems" >"$h$NODE_CGROUP/cpuset.mems"
    fi
  done
  # cgroup v2: one hierarchy.
  [[ -f /sys/fs/cgroup/cgroup.controllers ]] && mkdir -p "/sys/fs/cgroup/$NODE_CGROUP"
  return 0
}

start_scheduler() {
  local kc=$NODE_DIR/kube-scheduler.kubeconfig ARGS_SALT
  ARGS_SALT=$(sha256sum <"$kc")
  local args=(--kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc"
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --port=0 --leader-elect=false --v=1)
  start_unless_same kube-scheduler "$SCHEDULER_PORT" "$K8S_BIN/kube-scheduler" "${args[@]}"
  wait_for kube-scheduler 30 curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
}

start_kube_proxy() {
  # Conntrack sizes and timeouts are left as the machine has them (0 = do not set); NodePorts
  # open on the node's bridge address only, never on the machine's other interfaces.
  local args=(--kubeconfig="$NODE_DIR/kube-proxy.kubeconfig" --proxy-mode=iptables
    --cluster-cidr="$CLUSTER_CIDR" --hostname-override="$NODE_NAME" --bind-address="$NODE_IP"
    --nodeport-addresses="$POD_CIDR" --healthz-bind-address="127.0.0.1:$PROXY_HEALTHZ_PORT"
    --metrics-bind-address="127.0.0.1:$PROXY_METRICS_PORT" --conntrack-max-per-core=0
    --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 --v=1)
  local ARGS_SALT
  ARGS_SALT=$(sha256sum <"$NODE_DIR/kube-proxy.kubeconfig")
  start_unless_same kube-proxy "" "$K8S_BIN/kube-proxy" "${args[@]}"
  wait_for kube-proxy 30 curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
}

node_ready() {
  [[ $(k get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# Ready, and without the not-ready taint (removed by the node lifecycle controller).
node_schedulable() {
  node_ready && [[ $(k get node "$NODE_NAME" -o 'jsonpath={.spec.taints[*].key}' 2>/dev/null) != *node.kubernetes.io/not-ready* ]]
}

node_up() {
  [[ $(id -u) -eq 0 ]] || die "the node (containerd, kubelet, kube-proxy, a bridge and iptables rules) needs root; run e2e/cluster.sh as root"
  save_sysctls
  install_guards
  write_node_config
  start_containerd
  node_images
  mount_pod_logs
  start_kubelet
  start_scheduler
  start_kube_proxy
  local i
  for i in $(seq 1 150); do
    node_schedulable && break
    sleep 0.4
  done
  node_schedulable || die "node $NODE_NAME is not Ready and schedulable: $(k get node "$NODE_NAME" -o wide 2>&1 | tail -n1); read $LOGS/kubelet.log"
  # The kubelet and kube-proxy set these once, as they start; the machine is shared.
  restore_sysctls "${START_SYSCTLS[@]}"
}

# --- down --------------------------------------------------------------------------------------

# Every mount under DIR, deepest first.
unmount_under() {
  local dir=$1 m
  findmnt -rn -o TARGET 2>/dev/null | awk -v d="$dir" 'index($0, d) == 1' | sort -r |
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Everything a node's run leaves behind: its containers' processes (the shims and the pods'
# processes outlive a containerd that stopped or was killed), the pods' network namespaces,
# IP leases, mounts, log directories, and containerd's and the kubelet's state. Run with
# neither containerd nor the kubelet running: by node_down, and before containerd starts
# afresh, so that every start begins clean (the images are imported again, in a second).
clear_node_runtime() {
  local pid f
  # containerd itself if it outlived its PID file, and the shims, which outlive containerd.
  for pid in $(grep -ls -e "$CONTAINERD_SOCK" -e "$NODE_DIR/containerd.toml" /proc/[0-9]*/cmdline 2>/dev/null |
    cut -d/ -f3); do
    if [[ $pid != "$$" && $pid != "$BASHPID" ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  # The pods' processes: everything under the kubelet's cgroup root, and nothing else.
  for f in $(find /sys/fs/cgroup/*/"$NODE_CGROUP" "/sys/fs/cgroup/$NODE_CGROUP" -name cgroup.procs 2>/dev/null); do
    for pid in $(cat "$f" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  unmount_pod_logs
  # The pods' network namespaces are mounts under $NODE_RUN (netns_mounts_under_state_dir).
  unmount_under "$NODE_RUN"
  unmount_under "$NODE_DATA"
  rm -rf --one-file-system "$NODE_RUN" "$NODE_DATA/cni" "$NODE_DATA/containerd" \
    "$NODE_DATA/containerd-opt" "$NODE_DATA/kubelet" "$NODE_DATA/volume-plugins" "$NODE_DATA/log"
  # The kubelet's cgroups, emptied above (a killed process may take a moment to go).
  local i
  for i in 1 2 3 4 5; do
    find /sys/fs/cgroup/*/"$NODE_CGROUP" "/sys/fs/cgroup/$NODE_CGROUP" -depth -type d \
      -exec rmdir {} + 2>/dev/null && break
    [[ -n $(ls -d /sys/fs/cgroup/*/"$NODE_CGROUP" "/sys/fs/cgroup/$NODE_CGROUP" 2>/dev/null) ]] || break
    sleep 0.2
  done
  return 0
}

# The kubelet v1.20 writes pod logs to /var/log/pods and /var/log/containers, paths no flag
# changes: both are bind mounts of directories under $NODE_DATA while the node runs, so that
# its pods' logs never mix with the machine's and go with `down`.
POD_LOG_DIRS=(/var/log/pods /var/log/containers)

mount_pod_logs() {
  local d ours
  for d in "${POD_LOG_DIRS[@]}"; do
    ours=$NODE_DATA/log/$(basename "$d")
    [[ $(findmnt -rn -o FSROOT --target "$d" 2>/dev/null) == "$ours" ]] && continue
    mkdir -p "$ours"
    if [[ ! -d $d ]]; then
      mkdir -p "$d"
      touch "$NODE_DATA/log/created-$(basename "$d")"
    fi
    mount --bind "$ours" "$d" || die "could not bind-mount $ours on $d"
  done
}

unmount_pod_logs() {
  local d
  for d in "${POD_LOG_DIRS[@]}"; do
    while [[ $(findmnt -rn -o FSROOT --target "$d" 2>/dev/null) == "$NODE_DATA/log/$(basename "$d")" ]]; do
      umount -l "$d" 2>/dev/null || break
    done
    [[ -f $NODE_DATA/log/created-$(basename "$d") ]] && rmdir "$d" 2>/dev/null
  done
  return 0
}

# delete_chains TABLE PREFIX: remove every jump to a chain named PREFIX* from the table's
# chains, then the chains themselves.
delete_chains() {
  local table=$1 prefix=$2 rule chain
  local rules
  rules=$(iptables -t "$table" -S 2>/dev/null |
    grep -E -- "^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j $prefix" || true)
  while IFS= read -r rule; do
    [[ -n $rule ]] || continue
    eval "iptables -t $table -D ${rule#-A }" 2>/dev/null || true
  done <<<"$rules"
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk -v p="$prefix" '$1 == "-N" && index($2, p) == 1 {print $2}'); do
    iptables -t "$table" -F "$chain" 2>/dev/null || true
  done
  for chain in $(iptables -t "$table" -S 2>/dev/null | awk -v p="$prefix" '$1 == "-N" && index($2, p) == 1 {print $2}'); do
    iptables -t "$table" -X "$chain" 2>/dev/null || true
  done
}

node_down() {
  [[ $(id -u) -eq 0 ]] || die "stopping the node and undoing its host changes needs root"
  stop_one kube-proxy
  stop_one kube-scheduler
  stop_one kubelet
  stop_one containerd
  clear_node_runtime
  # kube-proxy's and the kubelet's iptables chains (KUBE-*), then ours.
  if command -v iptables >/dev/null 2>&1; then
    local t
    for t in filter nat mangle; do delete_chains "$t" KUBE-; done
    delete_chains mangle EVENTSCALE-
    delete_chains filter EVENTSCALE-
    iptables -D OUTPUT -d 169.254.169.254/32 -j REJECT 2>/dev/null || true
  fi
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  # Rewritten in place (not renamed over): /etc/hosts may be a bind mount.
  if grep -q ' # eventscale-node$' /etc/hosts; then
    local hosts
    hosts=$(grep -v ' # eventscale-node$' /etc/hosts || true)
    printf '%s\n' "$hosts" >/etc/hosts
  fi
  restore_sysctls
  rm -f "$SYSCTL_SAVED"
  rmdir "$NODE_DATA" 2>/dev/null || true
}

# --- status and logs -----------------------------------------------------------------------------

NODE_COMPONENTS=(containerd kubelet kube-scheduler kube-proxy)
