#!/usr/bin/env bash
# Certificate helpers for the local control plane started by e2e/cluster.sh.
#
# Sourced, not executed. Every function writes PEM files into a directory and is a no-op
# when the files already exist, so `cluster.sh up` stays idempotent. The cluster's own
# PKI (cluster CA, apiserver, admin, service accounts, front-proxy) is made here with
# openssl; eventscale's serving certificate is made by `eventscale certs` in Rust.

# pki_ca DIR NAME CN: a self-signed CA, 10 years.
pki_ca() {
  local dir=$1 name=$2 cn=$3
  [[ -s "$dir/$name.crt" && -s "$dir/$name.key" ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$dir/$name.key" -out "$dir/$name.crt" -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# pki_leaf DIR NAME CA SUBJECT USAGE [SAN]: a leaf certificate signed by CA, 1 year.
# USAGE is serverAuth or clientAuth; SAN is an openssl subjectAltName value.
pki_leaf() {
  local dir=$1 name=$2 ca=$3 subj=$4 usage=$5 san=${6:-}
  [[ -s "$dir/$name.crt" && -s "$dir/$name.key" ]] && return 0
  local ext="$dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$dir/$name.key" \
    -out "$dir/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
}

# pki_node DIR NAME IP: the local node's identities. The kubelet's client certificate names
# the node in group system:nodes (the Node authorizer then allows it what a node needs, with
# no RBAC); its serving certificate is what the apiserver verifies for logs and exec;
# kube-scheduler and kube-proxy are the users the bootstrap RBAC roles are bound to.
pki_node() {
  local dir=$1 name=$2 ip=$3
  pki_leaf "$dir" kubelet-client ca "/O=system:nodes/CN=system:node:$name" clientAuth
  pki_leaf "$dir" kubelet-serving ca "/O=system:nodes/CN=system:node:$name" serverAuth "DNS:$name,IP:$ip"
  pki_leaf "$dir" kube-scheduler ca "/CN=system:kube-scheduler" clientAuth
  pki_leaf "$dir" kube-proxy ca "/CN=system:kube-proxy" clientAuth
}

# pki_cluster DIR: everything the control plane needs.
pki_cluster() {
  local dir=$1
  mkdir -p "$dir"
  pki_ca "$dir" ca "eventscale-local-cluster-ca"
  pki_leaf "$dir" apiserver ca "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1"
  pki_leaf "$dir" admin ca "/O=system:masters/CN=eventscale-admin" clientAuth
  pki_leaf "$dir" controller-manager ca "/CN=system:kube-controller-manager" clientAuth
  # The apiserver's client certificate towards the kubelet (logs, exec, port-forward).
  pki_leaf "$dir" apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  pki_node "$dir" "${NODE_NAME:-eventscale-node}" "${NODE_IP:-10.244.0.1}"
  if [[ ! -s "$dir/sa.key" ]]; then
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  fi
  # The aggregator proves itself to extension servers with this pair.
  pki_ca "$dir" front-proxy-ca "eventscale-local-front-proxy-ca"
  pki_leaf "$dir" front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
}
