#!/usr/bin/env bash
# Local Kubernetes cluster for Modelworks: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (simulated nodes), built from
# their Go modules at the versions pinned in hack/versions.env and run as plain
# processes; the local S3 object store (SeaweedFS, hack/seaweedfs.sh); plus
# (MODELWORKS_NODE=1, the default) one real node: containerd + runc, kubelet,
# kube-proxy, CoreDNS, a CNI bridge, the MLflow server and the project image. See
# docs/cluster.md.
#
#   hack/cluster.sh build [component...]  build missing binaries (cached by version)
#   hack/cluster.sh up                    start the cluster (idempotent)
#   hack/cluster.sh down                  stop it and remove its state (idempotent)
#   hack/cluster.sh status                show components; exit 0 only if all are up
#   hack/cluster.sh env                   print exports for eval: KUBECONFIG, PATH, ...
#   hack/cluster.sh env --json            the same variables as one JSON object (PATH expanded)
#   hack/cluster.sh gomod                 regenerate hack/*/go.mod from versions.env
#
#   MODELWORKS_NODE=0 hack/cluster.sh up  control plane, kwok and the object store only
#                                         (no real node, DNS, MLflow or image)
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
# shellcheck source=hack/versions.env
source "$HACK_DIR/versions.env"

CACHE_DIR=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
BIN_ROOT=$CACHE_DIR/bin
K8S_BIN=$BIN_ROOT/k8s-$K8S_VERSION
ETCD_BIN=$BIN_ROOT/etcd-$ETCD_VERSION
KWOK_BIN=$BIN_ROOT/kwok-$KWOK_VERSION
SEAWEEDFS_BIN=$BIN_ROOT/seaweedfs-$SEAWEEDFS_VERSION

STATE_DIR=$REPO_DIR/.cluster
PKI_DIR=$STATE_DIR/pki
LOG_DIR=$STATE_DIR/logs
PID_DIR=$STATE_DIR/pids
KUBECONFIG_FILE=$STATE_DIR/kubeconfig

HOST=127.0.0.1
APISERVER_PORT=${MODELWORKS_APISERVER_PORT:-16443}
ETCD_CLIENT_PORT=${MODELWORKS_ETCD_CLIENT_PORT:-12379}
ETCD_PEER_PORT=${MODELWORKS_ETCD_PEER_PORT:-12380}
CONTROLLER_MANAGER_PORT=${MODELWORKS_CONTROLLER_MANAGER_PORT:-16257}
SCHEDULER_PORT=${MODELWORKS_SCHEDULER_PORT:-16259}
KWOK_PORT=${MODELWORKS_KWOK_PORT:-16080}
KWOK_NODES=${MODELWORKS_KWOK_NODES:-3}

SERVICE_CIDR=10.96.0.0/16
FIRST_SERVICE_IP=10.96.0.1
KWOK_POD_CIDR=10.244.0.1/16
KWOK_POD_NET=10.244.0.0/16

# The real node (MODELWORKS_NODE=1). Its pods live on a bridge of their own; the
# bridge's address is the node IP, where the apiserver, CoreDNS, the kubelet and
# MLflow listen so pods reach them. Nothing else on the host is touched.
NODE=${MODELWORKS_NODE:-1}
NODE_SUBNET=${MODELWORKS_NODE_SUBNET:-10.42.0.0/24}
[[ $NODE_SUBNET =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] ||
  { printf 'cluster: error: MODELWORKS_NODE_SUBNET must be a /24 like 10.42.0.0/24\n' >&2; exit 1; }
NODE_IP=${BASH_REMATCH[1]}.1
# shellcheck disable=SC2034 # used by render (hack/node/ templates) through ${!v}
POD_RANGE_START=${BASH_REMATCH[1]}.10
BRIDGE=mwbr0
NODE_NAME=modelworks-node
# shellcheck disable=SC2034 # used by render (hack/node/ templates) through ${!v}
DNS_IP=10.96.0.10
KUBELET_PORT=${MODELWORKS_KUBELET_PORT:-16250}
KUBELET_HEALTHZ_PORT=${MODELWORKS_KUBELET_HEALTHZ_PORT:-16248}
KUBE_PROXY_HEALTHZ_PORT=${MODELWORKS_KUBE_PROXY_HEALTHZ_PORT:-16256}
KUBE_PROXY_METRICS_PORT=${MODELWORKS_KUBE_PROXY_METRICS_PORT:-16249}
COREDNS_HEALTH_PORT=${MODELWORKS_COREDNS_HEALTH_PORT:-16181}
COREDNS_READY_PORT=${MODELWORKS_COREDNS_READY_PORT:-16182}
MLFLOW_PORT=${MLFLOW_PORT:-15000}
SEAWEEDFS_PORT=${SEAWEEDFS_PORT:-18333}
NODE_STATE=$STATE_DIR/node
# containerd's content store and snapshots outlive `down` (an image cache, like the
# binaries: the project image is ~1 GB); its run state, socket and containers do not.
CONTAINERD_ROOT=${MODELWORKS_CONTAINERD_ROOT:-$CACHE_DIR/containerd}
CONTAINERD_STATE=$NODE_STATE/containerd
CONTAINERD_SOCK=$NODE_STATE/containerd.sock
KUBELET_ROOT=$NODE_STATE/kubelet
CGROUP_ROOT=modelworks
CNI_BIN_DIR=/usr/lib/cni
PAUSE_IMAGE=localhost/modelworks/pause:1.0
COREDNS_BIN=$BIN_ROOT/coredns-$COREDNS_VERSION
MODE_FILE=$STATE_DIR/mode
MLFLOW_URI_FILE=$STATE_DIR/mlflow-uri
S3_ENDPOINT_FILE=$STATE_DIR/s3-endpoint
FORWARD_CHAIN=MODELWORKS-FORWARD
# Host sysctls the node changes (kubelet's kernel defaults, forwarding for the
# bridge); saved before the first change and restored by `down`.
HOST_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

if [[ $NODE == 1 ]]; then MODE=node; API_HOST=$NODE_IP; else MODE=control-plane; API_HOST=$HOST; fi

# Start order; down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
NODE_COMPONENTS=(containerd kubelet kube-proxy coredns)
K8S_BUILDABLE=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
UP_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok seaweedfs)
NODE_BINARIES=(kubelet kube-proxy coredns)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# build

go_env() {
  command -v go >/dev/null || die "go is not installed (needed to build the cluster binaries)"
  export GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build
  export GOFLAGS=-buildvcs=false GOWORK=off
}

bin_path() {
  case $1 in
    etcd) echo "$ETCD_BIN/etcd" ;;
    kwok) echo "$KWOK_BIN/kwok" ;;
    seaweedfs) echo "$SEAWEEDFS_BIN/weed" ;;
    coredns) echo "$COREDNS_BIN/coredns" ;;
    # The pause program is cached by the hash of its source.
    pause) echo "$BIN_ROOT/pause-$(pause_hash)/pause" ;;
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      echo "$K8S_BIN/$1" ;;
    # From the distribution (apt), not built here.
    containerd) echo /usr/bin/containerd ;;
    *) die "unknown component '$1' (known: etcd kwok seaweedfs coredns pause ${K8S_BUILDABLE[*]})" ;;
  esac
}

pause_hash() { cat "$HACK_DIR/node/pause/go.mod" "$HACK_DIR/node/pause/main.go" | sha256sum | cut -c1-16; }

# module_dir COMPONENT -> the hack/ Go module that builds it
module_dir() {
  case $1 in
    etcd) echo "$HACK_DIR/etcd" ;;
    kwok) echo "$HACK_DIR/kwok" ;;
    seaweedfs) echo "$HACK_DIR/seaweedfs" ;;
    coredns) echo "$HACK_DIR/node/coredns" ;;
    pause) echo "$HACK_DIR/node/pause" ;;
    *) echo "$HACK_DIR/k8s" ;;
  esac
}

# pinned_version GO_MOD MODULE -> the version GO_MOD requires for MODULE
pinned_version() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

check_gomod() {
  local dir=$1 module=$2 want=$3 have
  have=$(pinned_version "$dir/go.mod" "$module")
  [[ $have == "$want" ]] ||
    die "$dir/go.mod pins $module ${have:-<none>} but hack/versions.env says $want; run: hack/cluster.sh gomod"
}

build_one() {
  local c=$1 out pkg dir ldflags tags="" start
  out=$(bin_path "$c")
  if [[ -x $out ]]; then
    log "build: $c is cached ($out)"
    return 0
  fi
  dir=$(module_dir "$c")
  case $c in
    etcd)
      check_gomod "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
      pkg=go.etcd.io/etcd/server/v3
      ldflags="-s -w"
      ;;
    kwok)
      check_gomod "$dir" sigs.k8s.io/kwok "$KWOK_VERSION"
      pkg=sigs.k8s.io/kwok/cmd/kwok
      ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
      ;;
    seaweedfs)
      check_gomod "$dir" github.com/seaweedfs/seaweedfs "$SEAWEEDFS_VERSION"
      pkg=github.com/seaweedfs/seaweedfs/weed
      ldflags="-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=${SEAWEEDFS_VERSION##*-}"
      ;;
    coredns)
      # hack/node/coredns/main.go: CoreDNS's own main with the plugins we use.
      check_gomod "$dir" github.com/coredns/coredns "$COREDNS_VERSION"
      pkg=.
      ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
      ;;
    pause)
      pkg=.
      ldflags="-s -w"
      ;;
    *)
      check_gomod "$dir" k8s.io/kubernetes "$K8S_VERSION"
      pkg=k8s.io/kubernetes/cmd/$c
      local major minor key val
      major=${K8S_VERSION#v}; major=${major%%.*}
      minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
      ldflags="-s -w"
      for key in gitVersion=$K8S_VERSION gitMajor=$major gitMinor=$minor gitTreeState=clean; do
        val=${key#*=}; key=${key%%=*}
        ldflags+=" -X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
      done
      # Upstream's build tags (hack/lib/golang.sh).
      tags=selinux,notest
      ;;
  esac
  mkdir -p "$(dirname "$out")"
  log "build: $c from $([[ $pkg == . ]] && echo "${dir#"$REPO_DIR"/}" || echo "$pkg") ..."
  start=$SECONDS
  # Build to a temporary name so an interrupted build never leaves a binary that
  # later counts as cached.
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -tags="$tags" -ldflags="$ldflags" -o "$out.tmp" "$pkg") ||
    { rm -f "$out.tmp"; die "build of $c failed"; }
  mv -f "$out.tmp" "$out"
  log "build: $c built in $((SECONDS - start))s -> $out"
}

cmd_build() {
  local -a want=("$@") missing=()
  local c total
  if ((${#want[@]} == 0)); then
    want=("${UP_BINARIES[@]}")
    [[ $MODE == node ]] && want+=("${NODE_BINARIES[@]}" pause)
  fi
  for c in "${want[@]}"; do
    bin_path "$c" >/dev/null # validates the name
    [[ -x $(bin_path "$c") ]] || missing+=("$c")
  done
  if ((${#missing[@]} == 0)); then
    log "build: all cached: ${want[*]}"
    return 0
  fi
  go_env
  total=$SECONDS
  for c in "${want[@]}"; do build_one "$c"; done
  log "build: done in $((SECONDS - total))s (${missing[*]})"
}

# Rewrites hack/{k8s,etcd,kwok,seaweedfs,node/coredns}/go.mod from versions.env and tidies them.
cmd_gomod() {
  go_env
  local kdir=$HACK_DIR/k8s kmod
  kmod=$(cd "$HACK_DIR" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f $kmod ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  {
    cat <<EOF
// Builds the Kubernetes control-plane binaries (and, on request, kubelet and
// kube-proxy) from k8s.io/kubernetes at a pinned tag. k8s.io/kubernetes refers to
// its staging modules as v0.0.0 with local replaces, which do not apply to a
// dependent module, so every staging module is replaced here with its matching
// $K8S_STAGING_VERSION tag. Generated by: hack/cluster.sh gomod (from hack/versions.env).
module modelworks.dev/hack/k8s

go 1.24.0

godebug default=go1.24

require k8s.io/kubernetes $K8S_VERSION

replace (
EOF
    awk -v v="$K8S_STAGING_VERSION" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' "$kmod"
    echo ")"
    echo
    echo "tool ("
    local t
    for t in "${K8S_BUILDABLE[@]}"; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$t"; done
    echo ")"
  } >"$kdir/go.mod"
  cat >"$HACK_DIR/etcd/go.mod" <<EOF
// Builds etcd from its server module (whose package main wraps etcdmain) at the
// version pinned in hack/versions.env. Generated by: hack/cluster.sh gomod.
module modelworks.dev/hack/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

tool go.etcd.io/etcd/server/v3
EOF
  cat >"$HACK_DIR/kwok/go.mod" <<EOF
// Builds kwok (simulated nodes and pods) at the version pinned in
// hack/versions.env. Generated by: hack/cluster.sh gomod.
module modelworks.dev/hack/kwok

go 1.24.0

require sigs.k8s.io/kwok $KWOK_VERSION

tool sigs.k8s.io/kwok/cmd/kwok
EOF
  cat >"$HACK_DIR/seaweedfs/go.mod" <<EOF
// Builds SeaweedFS's weed (the local S3-compatible object store, hack/seaweedfs.sh) at
// the version pinned in hack/versions.env. Its go.mod replaces go-bip39, which go
// install refuses, so the replace is repeated here. Generated by: hack/cluster.sh gomod.
module modelworks.dev/hack/seaweedfs

go 1.26.6

require github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION

replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
EOF
  cat >"$HACK_DIR/node/coredns/go.mod" <<EOF
// Builds CoreDNS (cluster DNS of the local node) at the version pinned in
// hack/versions.env, with the plugins main.go imports. Generated by: hack/cluster.sh gomod.
module modelworks.dev/hack/node/coredns

go 1.24.0

require github.com/coredns/coredns $COREDNS_VERSION
EOF
  local d
  for d in k8s etcd kwok seaweedfs node/coredns; do
    rm -f "$HACK_DIR/$d/go.sum"
    log "gomod: tidying hack/$d/go.mod"
    (cd "$HACK_DIR/$d" && go mod tidy)
  done
}

# ---------------------------------------------------------------------------
# certificates and kubeconfigs

# new_cert NAME CN O EXT_USAGE [SANS]: a key and a certificate signed by the CA.
new_cert() {
  local name=$1 cn=$2 org=$3 usage=$4 sans=${5:-} subj ext
  subj="/CN=$cn"
  [[ -n $org ]] && subj="/O=$org$subj"
  ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$usage"
  [[ -n $sans ]] && ext+=$'\n'"subjectAltName=$sans"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/$name.key" 2>/dev/null
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" -out "$PKI_DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile <(printf '%s\n' "$ext") \
    -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr"
}

# ensure_cert NAME CN O EXT_USAGE [SANS]: new_cert unless NAME exists with these
# subject and SANs (recorded next to it), so `up` adds what a newer script needs to
# an existing PKI without touching the rest.
ensure_cert() {
  local name=$1 spec="$2|$3|$4|${5:-}"
  if [[ -f $PKI_DIR/$name.crt && -f $PKI_DIR/$name.key && -f $PKI_DIR/$name.spec ]] &&
    [[ $(<"$PKI_DIR/$name.spec") == "$spec" ]]; then
    return 0
  fi
  new_cert "$@"
  printf '%s\n' "$spec" >"$PKI_DIR/$name.spec"
  chmod 600 "$PKI_DIR/$name.key"
}

gen_pki() {
  command -v openssl >/dev/null || die "openssl is required"
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  if [[ ! -f $PKI_DIR/ca.key || ! -f $PKI_DIR/ca.crt ]]; then
    # A new CA: every certificate signed by an older one goes.
    rm -f "$PKI_DIR"/*.crt "$PKI_DIR"/*.key "$PKI_DIR"/*.spec "$PKI_DIR"/sa.* "$PKI_DIR/done"
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=modelworks-local-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI_DIR/ca.crt" 2>/dev/null
  fi
  # The node IP is in the apiserver's SANs in both modes (pods reach it there).
  ensure_cert apiserver kube-apiserver "" serverAuth \
    "IP:$HOST,IP:$NODE_IP,IP:$FIRST_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  ensure_cert etcd etcd "" serverAuth,clientAuth "IP:$HOST,DNS:localhost"
  ensure_cert apiserver-etcd-client kube-apiserver-etcd-client "" clientAuth
  ensure_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
  ensure_cert admin modelworks-admin system:masters clientAuth
  ensure_cert kube-controller-manager system:kube-controller-manager "" clientAuth
  ensure_cert kube-scheduler system:kube-scheduler "" clientAuth
  # kwok patches node and pod status, deletes pods and renews node leases for the
  # nodes it simulates: it gets the admin group, as kwokctl does.
  ensure_cert kwok kwok-controller system:masters clientAuth
  # The real node: the kubelet's client identity (Node authorizer, NodeRestriction)
  # and serving certificate, kube-proxy (bound to system:node-proxier by default
  # RBAC) and CoreDNS (hack/node/addons.yaml binds system:coredns).
  ensure_cert kubelet-client "system:node:$NODE_NAME" system:nodes clientAuth
  ensure_cert kubelet "$NODE_NAME" "" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  ensure_cert kube-proxy system:kube-proxy "" clientAuth
  ensure_cert coredns system:coredns "" clientAuth
  # Service-account token signing key pair.
  if [[ ! -f $PKI_DIR/sa.key || ! -f $PKI_DIR/sa.pub ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/sa.key" 2>/dev/null
    openssl ec -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI_DIR"/*.key
  touch "$PKI_DIR/done"
}

# write_kubeconfig FILE CERT_NAME USER
write_kubeconfig() {
  local file=$1 cert=$2 user=$3
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modelworks
  cluster:
    server: https://$API_HOST:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI_DIR/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI_DIR/$cert.key")
contexts:
- name: modelworks
  context:
    cluster: modelworks
    user: $user
current-context: modelworks
EOF
  chmod 600 "$file.tmp"
  mv -f "$file.tmp" "$file"
}

write_kubeconfigs() {
  write_kubeconfig "$KUBECONFIG_FILE" admin modelworks-admin
  write_kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" kube-controller-manager system:kube-controller-manager
  write_kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" kube-scheduler system:kube-scheduler
  write_kubeconfig "$STATE_DIR/kwok.kubeconfig" kwok kwok-controller
  if [[ $MODE == node ]]; then
    write_kubeconfig "$STATE_DIR/kubelet.kubeconfig" kubelet-client "system:node:$NODE_NAME"
    write_kubeconfig "$STATE_DIR/kube-proxy.kubeconfig" kube-proxy system:kube-proxy
    write_kubeconfig "$STATE_DIR/coredns.kubeconfig" coredns system:coredns
  fi
}

# ---------------------------------------------------------------------------
# processes

# addr_of COMPONENT -> HOST:PORT of its health (or main) endpoint, the one status shows
addr_of() {
  case $1 in
    etcd) echo "$HOST:$ETCD_CLIENT_PORT" ;;
    kube-apiserver) echo "$API_HOST:$APISERVER_PORT" ;;
    kube-controller-manager) echo "$HOST:$CONTROLLER_MANAGER_PORT" ;;
    kube-scheduler) echo "$HOST:$SCHEDULER_PORT" ;;
    kwok) echo "$HOST:$KWOK_PORT" ;;
    kubelet) echo "$HOST:$KUBELET_HEALTHZ_PORT" ;;
    kube-proxy) echo "$HOST:$KUBE_PROXY_HEALTHZ_PORT" ;;
    coredns) echo "$HOST:$COREDNS_READY_PORT" ;;
    containerd) echo "" ;;
  esac
}

# addrs_of COMPONENT -> every HOST:PORT it listens on
addrs_of() {
  case $1 in
    etcd) echo "$HOST:$ETCD_CLIENT_PORT $HOST:$ETCD_PEER_PORT" ;;
    kubelet) echo "$HOST:$KUBELET_HEALTHZ_PORT $NODE_IP:$KUBELET_PORT" ;;
    kube-proxy) echo "$HOST:$KUBE_PROXY_HEALTHZ_PORT $HOST:$KUBE_PROXY_METRICS_PORT" ;;
    coredns) echo "$HOST:$COREDNS_HEALTH_PORT $HOST:$COREDNS_READY_PORT $NODE_IP:53" ;;
    *) addr_of "$1" ;;
  esac
}

# is_ours PID COMPONENT: the process runs our binary for COMPONENT with this
# state dir on its command line (so a recycled pid is never mistaken for ours).
is_ours() {
  local pid=$1 c=$2 exe cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ $exe == "$(bin_path "$c")" ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$STATE_DIR/"* ]]
}

pid_of() {
  local c=$1 pid
  [[ -f $PID_DIR/$c.pid ]] || return 1
  pid=$(<"$PID_DIR/$c.pid")
  is_ours "$pid" "$c" || return 1
  echo "$pid"
}

# is_local_ip IP: IP is loopback or an address of this host. Nothing here ever
# connects anywhere else (the node IP exists only while the bridge does).
is_local_ip() {
  [[ $1 == 127.* ]] || ip -4 -o addr show 2>/dev/null | grep -q " inet $1/"
}

# port_listening HOST:PORT (or PORT on 127.0.0.1): something accepts TCP connections there.
port_listening() {
  local addr=$1 h p
  [[ $addr == *:* ]] || addr=$HOST:$addr
  h=${addr%:*} p=${addr##*:}
  is_local_ip "$h" || return 1
  (exec 3<>"/dev/tcp/$h/$p") 2>/dev/null
}

port_owner() {
  ss -Hltnp "sport = :${1##*:}" 2>/dev/null | sed -n 's/.*users:((\(.*\)))$/\1/p' | head -1
}

# Refuse to start COMPONENT while another process owns one of its ports.
check_ports_free() {
  local c=$1 a owner
  for a in $(addrs_of "$c"); do
    if port_listening "$a"; then
      owner=$(port_owner "$a")
      die "cannot start $c: $a is already in use${owner:+ by $owner}. Another cluster may be running (hack/cluster.sh status), or set MODELWORKS_*_PORT (see docs/cluster.md)."
    fi
  done
}

args_of() {
  local c=$1
  case $c in
    etcd)
      printf '%s\n' \
        --name=modelworks \
        --data-dir="$STATE_DIR/etcd" \
        --listen-client-urls="https://$HOST:$ETCD_CLIENT_PORT" \
        --advertise-client-urls="https://$HOST:$ETCD_CLIENT_PORT" \
        --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster="modelworks=http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster-state=new \
        --cert-file="$PKI_DIR/etcd.crt" \
        --key-file="$PKI_DIR/etcd.key" \
        --trusted-ca-file="$PKI_DIR/ca.crt" \
        --client-cert-auth=true \
        --unsafe-no-fsync=true \
        --log-level=warn
      ;;
    kube-apiserver)
      if [[ $MODE == node ]]; then
        # Pods reach it through the kubernetes Service: it listens on and advertises
        # the node IP, and reconciles the Service's endpoints (the default lease
        # reconciler); it reaches kubelets by InternalIP and checks their certificates.
        printf '%s\n' \
          --kubelet-preferred-address-types=InternalIP,Hostname \
          --kubelet-certificate-authority="$PKI_DIR/ca.crt"
      else
        # Endpoints may not hold loopback addresses: no endpoints for `kubernetes`.
        printf '%s\n' --endpoint-reconciler-type=none
      fi
      printf '%s\n' \
        --bind-address="$API_HOST" \
        --advertise-address="$API_HOST" \
        --secure-port="$APISERVER_PORT" \
        --cert-dir="$STATE_DIR/kube-apiserver" \
        --etcd-servers="https://$HOST:$ETCD_CLIENT_PORT" \
        --etcd-cafile="$PKI_DIR/ca.crt" \
        --etcd-certfile="$PKI_DIR/apiserver-etcd-client.crt" \
        --etcd-keyfile="$PKI_DIR/apiserver-etcd-client.key" \
        --tls-cert-file="$PKI_DIR/apiserver.crt" \
        --tls-private-key-file="$PKI_DIR/apiserver.key" \
        --client-ca-file="$PKI_DIR/ca.crt" \
        --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
        --authorization-mode=Node,RBAC \
        --allow-privileged=true \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI_DIR/sa.pub" \
        --service-account-signing-key-file="$PKI_DIR/sa.key"
      ;;
    kube-controller-manager)
      printf '%s\n' \
        --bind-address="$HOST" \
        --secure-port="$CONTROLLER_MANAGER_PORT" \
        --cert-dir="$STATE_DIR/kube-controller-manager" \
        --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
        --client-ca-file="$PKI_DIR/ca.crt" \
        --service-account-private-key-file="$PKI_DIR/sa.key" \
        --root-ca-file="$PKI_DIR/ca.crt" \
        --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
        --cluster-signing-key-file="$PKI_DIR/ca.key" \
        --use-service-account-credentials=true \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --cluster-name=modelworks \
        --leader-elect=false
      ;;
    kube-scheduler)
      printf '%s\n' \
        --bind-address="$HOST" \
        --secure-port="$SCHEDULER_PORT" \
        --cert-dir="$STATE_DIR/kube-scheduler" \
        --kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
        --client-ca-file="$PKI_DIR/ca.crt" \
        --leader-elect=false
      ;;
    kwok)
      printf '%s\n' \
        --kubeconfig="$STATE_DIR/kwok.kubeconfig" \
        --config="$STATE_DIR/kwok-stages.yaml" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --server-address="$HOST:$KWOK_PORT" \
        --cidr="$KWOK_POD_CIDR" \
        --node-lease-duration-seconds=40
      ;;
    containerd)
      printf '%s\n' --config="$NODE_STATE/containerd.toml"
      ;;
    kubelet)
      printf '%s\n' \
        --config="$NODE_STATE/kubelet.yaml" \
        --kubeconfig="$STATE_DIR/kubelet.kubeconfig" \
        --root-dir="$KUBELET_ROOT" \
        --hostname-override="$NODE_NAME" \
        --node-ip="$NODE_IP" \
        --node-labels=type=real,modelworks.dev/node-kind=real
      ;;
    kube-proxy)
      printf '%s\n' --config="$NODE_STATE/kube-proxy.yaml"
      ;;
    coredns)
      printf '%s\n' -conf "$NODE_STATE/Corefile"
      ;;
  esac
}

start_component() {
  local c=$1 bin pid
  local -a args
  if pid=$(pid_of "$c"); then
    log "up: $c already running (pid $pid)"
    return 0
  fi
  check_ports_free "$c"
  bin=$(bin_path "$c")
  mapfile -t args < <(args_of "$c")
  mkdir -p "$LOG_DIR" "$PID_DIR" "$STATE_DIR/home/$c"
  # kwok also reads ~/.kwok/kwok.yaml when it exists: give it a HOME of its own.
  # setsid detaches the process from our session and terminal; as a background
  # job of a non-interactive shell it is no group leader, so setsid execs in place
  # and $! is the component's own pid. The node's processes run iptables, mount,
  # runc and the containerd shim: the sbin directories are on their PATH.
  HOME=$STATE_DIR/home/$c PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    setsid "$bin" "${args[@]}" </dev/null >>"$LOG_DIR/$c.log" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_DIR/$c.pid"
  # Until setsid has exec'd the binary, the pid is not recognisably ours yet.
  local deadline=$((SECONDS + 5))
  while ! is_ours "$pid" "$c" && kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  log "up: started $c (pid $pid, log $LOG_DIR/$c.log)"
}

fail_component() {
  local c=$1 msg=$2
  printf 'cluster: error: %s\n' "$msg" >&2
  if [[ -f $LOG_DIR/$c.log ]]; then
    printf 'cluster: last lines of %s:\n' "$LOG_DIR/$c.log" >&2
    tail -n 30 "$LOG_DIR/$c.log" | sed 's/^/  | /' >&2
  fi
  printf 'cluster: the cluster is left as it is for inspection; stop it with: hack/cluster.sh down\n' >&2
  exit 1
}

# wait_for COMPONENT TIMEOUT_S DESCRIPTION CMD...: poll CMD every 0.2s until it
# succeeds; fail (with COMPONENT's log) when the deadline passes or it exits.
wait_for() {
  local c=$1 timeout=$2 what=$3
  shift 3
  local deadline=$((SECONDS + timeout)) t0=$EPOCHREALTIME
  until "$@" >/dev/null 2>&1; do
    pid_of "$c" >/dev/null || fail_component "$c" "$c exited while waiting for $what"
    ((SECONDS < deadline)) || fail_component "$c" "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
  log "up: $what: ok after $(elapsed "$t0")s"
}

# elapsed EPOCHREALTIME_START -> seconds since then, one decimal
elapsed() {
  local now=${EPOCHREALTIME/./} then=${1/./}
  local ms=$(((now - then) / 1000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

curl_admin() {
  curl -sf --max-time 2 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" "$@"
}

etcd_healthy() {
  curl -sf --max-time 2 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/apiserver-etcd-client.crt" \
    --key "$PKI_DIR/apiserver-etcd-client.key" "https://$HOST:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'
}

apiserver_ready() {
  is_local_ip "$API_HOST" && [[ $(curl_admin "https://$API_HOST:$APISERVER_PORT/readyz") == ok ]]
}

healthz_ok() { # PORT SCHEME
  [[ $(curl -sfk --max-time 2 "${2:-https}://$HOST:$1/healthz") == ok ]]
}

http_ok() { # URL: answers 2xx
  curl -sf --max-time 2 -o /dev/null "$1"
}

default_sa_exists() {
  curl_admin "https://$API_HOST:$APISERVER_PORT/api/v1/namespaces/default/serviceaccounts/default" >/dev/null
}

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

node_manifests() {
  local i
  for ((i = 0; i < KWOK_NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    modelworks.dev/node-kind: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
status:
  capacity: &res
    cpu: "32"
    memory: 256Gi
    pods: "110"
    nvidia.com/gpu: "8"
  allocatable: *res
EOF
  done
}

nodes_ready() {
  local n=$1 ready
  ready=$(kubectl_ get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  ((ready >= n))
}

# ---------------------------------------------------------------------------
# the real node (MODELWORKS_NODE=1)

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ensure_packages PKG...: apt-get install the missing ones (after one apt-get update).
ensure_packages() {
  local -a missing=()
  local p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing packages: ${missing[*]} (no apt-get here to install them)"
  local t0=$EPOCHREALTIME
  log "up: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
  log "up: installed ${missing[*]} in $(elapsed "$t0")s"
}

# Debian bookworm: containerd 1.6.20, runc 1.1.5, CNI plugins 1.1.1 (/usr/lib/cni).
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux buildah curl openssl)

node_preflight() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (MODELWORKS_NODE=0 starts the control plane only)"
  ensure_packages "${NODE_PACKAGES[@]}"
  [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/portmap && -x $CNI_BIN_DIR/loopback ]] ||
    die "CNI plugins missing in $CNI_BIN_DIR (package containernetworking-plugins)"
  # The node's addresses must be free: no other interface or route may use them.
  local prefix=${NODE_IP%.*}.
  if ip -4 -o addr show | awk -v b="$BRIDGE" '$2 != b { print $4 }' | grep -q "^${prefix//./\\.}"; then
    die "$NODE_SUBNET is in use on this host ($(ip -4 -o addr show | grep -F " inet $prefix" | awk '{ print $2, $4 }' | head -1)); set MODELWORKS_NODE_SUBNET"
  fi
  local net
  for net in "$NODE_SUBNET" "$SERVICE_CIDR" "$KWOK_POD_NET"; do
    if ip -4 route show exact "$net" | grep -v -e "dev $BRIDGE" -e '^unreachable' | grep -q .; then
      die "the host already routes $net ($(ip -4 route show exact "$net" | head -1)); the node needs it"
    fi
  done
}

save_sysctls() {
  local f=$NODE_STATE/host-sysctls k v
  [[ -f $f ]] && return 0
  mkdir -p "$NODE_STATE"
  for k in "${HOST_SYSCTLS[@]}"; do
    v=$(sysctl -n "$k" 2>/dev/null) && printf '%s=%s\n' "$k" "$v"
  done >"$f.tmp"
  mv -f "$f.tmp" "$f"
}

restore_sysctls() {
  local f=$NODE_STATE/host-sysctls line
  [[ -f $f ]] || return 0
  while read -r line; do
    [[ -n $line ]] || continue
    sysctl -qw "$line" >/dev/null 2>&1 || log "down: could not restore sysctl $line"
  done <"$f"
  rm -f "$f"
  log "down: restored host sysctls (${HOST_SYSCTLS[*]})"
}

saved_sysctl() { sed -n "s/^$1=//p" "$NODE_STATE/host-sysctls" 2>/dev/null; }

# The pods' network: a bridge whose address is the node IP, routes that keep
# service and kwok addresses on the machine, and a FORWARD guard.
node_network_up() {
  save_sysctls
  if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
    ip link add name "$BRIDGE" type bridge || die "could not create bridge $BRIDGE"
    log "up: created bridge $BRIDGE ($NODE_IP/24)"
  fi
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set dev "$BRIDGE" up
  [[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || die "br_netfilter is not available"
  # Forwarding: pod -> ClusterIP -> pod is routed by the host (the CNI bridge
  # plugin turns it on too); the guard below limits it to pod <-> pod.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 >/dev/null
  # Cluster IPs from the host leave through the bridge (kube-proxy DNATs them),
  # never through the default route; kwok's fake pod IPs go nowhere.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  ip route replace unreachable "$KWOK_POD_NET"
  forward_guard
}

# forward_guard: first rule of FORWARD. Pods talk to pods; nothing is forwarded
# from a pod to any other address (REJECT, so clients fail fast) or to a pod from
# outside; and when the host forwarded nothing before, it still forwards nothing else.
forward_guard() {
  iptables -w -N "$FORWARD_CHAIN" 2>/dev/null || iptables -w -F "$FORWARD_CHAIN"
  iptables -w -A "$FORWARD_CHAIN" -s "$NODE_SUBNET" -d "$NODE_SUBNET" -m comment --comment "modelworks: pod to pod" -j RETURN
  iptables -w -A "$FORWARD_CHAIN" -i "$BRIDGE" -m comment --comment "modelworks: pods reach nothing off the node" \
    -j REJECT --reject-with icmp-admin-prohibited
  iptables -w -A "$FORWARD_CHAIN" -o "$BRIDGE" -m comment --comment "modelworks: nothing else reaches the pods" -j DROP
  if [[ $(saved_sysctl net.ipv4.ip_forward) == 0 ]]; then
    iptables -w -A "$FORWARD_CHAIN" -m comment --comment "modelworks: the host forwarded nothing before" -j DROP
  fi
  while iptables -w -D FORWARD -j "$FORWARD_CHAIN" 2>/dev/null; do :; done
  iptables -w -I FORWARD 1 -j "$FORWARD_CHAIN"
}

# iptables_sweep iptables|ip6tables: remove the chains the node made (KUBE-* of
# kube-proxy and the kubelet, the CNI portmap chains of our network, our guard) and
# every rule that jumps to them. Chains of other CNI networks are left alone.
iptables_sweep() {
  local cmd=$1 t dump script
  command -v "$cmd-save" >/dev/null || return 0
  for t in filter nat mangle raw; do
    dump=$("$cmd-save" -t "$t" 2>/dev/null) || continue
    script=$(awk -v table="$t" -v net="\"modelworks-pods\"" '
      /^:/ { name = substr($1, 2); order[++n] = name; next }
      /^-A / { rules[++r] = $0; owner[r] = $2; if (index($0, net)) mentions[$2] = 1 }
      END {
        for (i = 1; i <= n; i++) { c = order[i]
          if (c ~ /^(KUBE-|MODELWORKS-)/ || (c ~ /^CNI-/ && (c in mentions))) ours[c] = 1 }
        others = 0
        for (i = 1; i <= n; i++) if (order[i] ~ /^CNI-DN-/ && !(order[i] in ours)) others = 1
        if (!others) for (i = 1; i <= n; i++) if (order[i] ~ /^CNI-HOSTPORT-/) ours[order[i]] = 1
        any = 0
        for (c in ours) any = 1
        if (!any) exit
        print "*" table
        for (j = 1; j <= r; j++) {
          if (owner[j] in ours) continue
          k = split(rules[j], f, " "); tgt = ""
          for (i = 1; i < k; i++) if (f[i] == "-j" || f[i] == "-g") tgt = f[i + 1]
          if (tgt in ours) print "-D " substr(rules[j], 4)
        }
        for (c in ours) print "-F " c
        for (c in ours) print "-X " c
        print "COMMIT"
      }' <<<"$dump")
    [[ -n $script ]] || continue
    "$cmd-restore" -w --noflush <<<"$script" || log "down: $cmd-restore failed for table $t"
  done
}

node_network_down() {
  local v
  if [[ -x $(bin_path kube-proxy) ]] && iptables-save 2>/dev/null | grep -q '^:KUBE-'; then
    "$(bin_path kube-proxy)" --cleanup >>"$LOG_DIR/kube-proxy-cleanup.log" 2>&1 || true
    rm -f "$LOG_DIR/kube-proxy-cleanup.log"
  fi
  iptables_sweep iptables
  iptables_sweep ip6tables
  if ip link show dev "$BRIDGE" >/dev/null 2>&1; then
    for v in $(ip -o link show master "$BRIDGE" | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
      ip link delete "$v" 2>/dev/null || true
    done
    ip link delete "$BRIDGE"
    log "down: deleted bridge $BRIDGE (and its routes)"
  fi
  if ip -4 route show exact "$KWOK_POD_NET" | grep -q '^unreachable'; then
    ip route delete unreachable "$KWOK_POD_NET"
  fi
  restore_sysctls
}

# cgroup hierarchies mounted on this host (v1: one per controller; v2: one).
cgroup_mounts() { findmnt -rn -t cgroup,cgroup2 -o TARGET 2>/dev/null; }

# The kubelet's cgroupRoot (/modelworks): it must exist before the kubelet starts.
cgroup_root_up() {
  local h
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    mkdir -p "/sys/fs/cgroup/$CGROUP_ROOT"
    sed 's/\([^ ]\+\)/+\1/g' "/sys/fs/cgroup/$CGROUP_ROOT/cgroup.controllers" \
      >"/sys/fs/cgroup/$CGROUP_ROOT/cgroup.subtree_control" 2>/dev/null || true
    return 0
  fi
  for h in $(cgroup_mounts); do
    mkdir -p "$h/$CGROUP_ROOT"
    if [[ -f $h/cpuset.cpus ]]; then
      [[ -n $(<"$h/$CGROUP_ROOT/cpuset.cpus") ]] || cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"
      [[ -n $(<"$h/$CGROUP_ROOT/cpuset.mems") ]] || cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

# Every process left in the pods' cgroups.
cgroup_pids() {
  local h
  for h in $(cgroup_mounts); do
    [[ -d $h/$CGROUP_ROOT ]] && find "$h/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

cgroup_root_down() {
  local h _ left
  for _ in 1 2 3 4 5; do
    left=0
    for h in $(cgroup_mounts); do
      [[ -d $h/$CGROUP_ROOT ]] || continue
      find "$h/$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d $h/$CGROUP_ROOT ]] && left=1
    done
    ((left)) || return 0
    sleep 0.5
  done
  log "down: warning: some cgroups under /$CGROUP_ROOT are still in use"
}

# mounts_under DIR...: mount points at or under DIRs, deepest first.
mounts_under() {
  local d
  for d in "$@"; do
    awk -v d="$d/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo
  done | awk '{ print length($0), $0 }' | sort -rn | cut -d' ' -f2- | uniq
}

unmount_under() {
  local _ m
  for _ in 1 2 3 4 5; do
    [[ -n $(mounts_under "$@") ]] || return 0
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(mounts_under "$@")
  done
  [[ -z $(mounts_under "$@") ]] || die "down: could not unmount: $(mounts_under "$@" | tr '\n' ' ')"
}

render() { # TEMPLATE (in hack/node/) OUT
  local out=$2 v
  local -a expr=()
  # shellcheck disable=SC2034 # read through ${!v}
  local POD_CIDR=$NODE_SUBNET RUNC
  # shellcheck disable=SC2034 # read through ${!v}
  RUNC=$(command -v runc || echo /usr/sbin/runc)
  for v in NODE_IP NODE_NAME POD_CIDR POD_RANGE_START BRIDGE DNS_IP STATE_DIR NODE_STATE PKI_DIR \
    CONTAINERD_ROOT CONTAINERD_STATE CONTAINERD_SOCK PAUSE_IMAGE CNI_BIN_DIR RUNC KUBELET_PORT \
    KUBELET_HEALTHZ_PORT KUBE_PROXY_HEALTHZ_PORT KUBE_PROXY_METRICS_PORT COREDNS_HEALTH_PORT COREDNS_READY_PORT; do
    expr+=(-e "s|@$v@|${!v}|g")
  done
  sed "${expr[@]}" "$HACK_DIR/node/$1" >"$out.tmp"
  if grep -q '@[A-Z_]*@' "$out.tmp"; then
    die "render $1: unknown placeholders: $(grep -o '@[A-Z_]*@' "$out.tmp" | sort -u | tr '\n' ' ')"
  fi
  mv -f "$out.tmp" "$out"
}

node_configs() {
  mkdir -p "$NODE_STATE"/{cni/net.d,cni/ipam,certs.d/_default,pod-logs,volume-plugins} \
    "$CONTAINERD_STATE" "$CONTAINERD_ROOT" "$KUBELET_ROOT"
  render containerd.toml "$NODE_STATE/containerd.toml"
  render kubelet.yaml "$NODE_STATE/kubelet.yaml"
  render kube-proxy.yaml "$NODE_STATE/kube-proxy.yaml"
  render Corefile "$NODE_STATE/Corefile"
  render cni.conflist "$NODE_STATE/cni/net.d/10-modelworks.conflist"
  render addons.yaml "$NODE_STATE/addons.yaml"
  cp "$HACK_DIR/node/registry-hosts.toml" "$NODE_STATE/certs.d/_default/hosts.toml"
}

containerd_ready() {
  [[ -S $CONTAINERD_SOCK ]] && ctr --address "$CONTAINERD_SOCK" plugins ls 2>/dev/null |
    awk '$2 == "cri" && $NF == "ok" { found = 1 } END { exit !found }'
}

# The pause image: hack/node/pause built by Go, packaged `buildah from scratch`,
# imported into containerd (k8s.io) and pinned. Rebuilt when its source changes.
pause_image() {
  local hash have ctr tmp t0=$EPOCHREALTIME
  hash=$(pause_hash)
  have=$(ctr_ images ls "name==$PAUSE_IMAGE" 2>/dev/null | awk 'NR > 1 { print $NF }' | tr ',' '\n' |
    sed -n 's,^dev.modelworks/pause-source=,,p')
  if [[ $have == "$hash" ]]; then
    log "up: pause image $PAUSE_IMAGE is loaded"
    return 0
  fi
  if [[ $(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "dev.modelworks.pause-source"}}' \
    "$PAUSE_IMAGE" 2>/dev/null) != "$hash" ]]; then
    ctr=$(buildah from --pull=never scratch)
    buildah copy --quiet "$ctr" "$(bin_path pause)" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 --os linux --arch "$(dpkg --print-architecture)" \
      --label "dev.modelworks.pause-source=$hash" --created-by "hack/cluster.sh (hack/node/pause)" "$ctr"
    buildah commit --quiet --rm "$ctr" "$PAUSE_IMAGE" >/dev/null
  fi
  tmp=$(mktemp -u "$NODE_STATE/.pause.XXXXXX.tar")
  buildah push --quiet "$PAUSE_IMAGE" "docker-archive:$tmp:$PAUSE_IMAGE" >/dev/null
  ctr_ images import --snapshotter overlayfs "$tmp" >/dev/null || { rm -f "$tmp"; die "could not import $PAUSE_IMAGE"; }
  rm -f "$tmp"
  ctr_ images label "$PAUSE_IMAGE" "dev.modelworks/pause-source=$hash" io.cri-containerd.pinned=pinned >/dev/null
  log "up: pause image $PAUSE_IMAGE built and loaded in $(elapsed "$t0")s"
}

node_condition() { # CONDITION -> status of the real node's condition
  kubectl_ get node "$NODE_NAME" -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}" 2>/dev/null
}
node_registered() { kubectl_ get node "$NODE_NAME" >/dev/null 2>&1; }
node_ready() { [[ $(node_condition Ready) == True ]]; }

node_up() {
  local c
  for c in "${NODE_COMPONENTS[@]}"; do
    pid_of "$c" >/dev/null || check_ports_free "$c"
  done
  node_configs
  cgroup_root_up
  start_component containerd
  wait_for containerd 30 "containerd (CRI) on $CONTAINERD_SOCK" containerd_ready
  pause_image
  start_component kubelet
  wait_for kubelet 60 "node $NODE_NAME registered" node_registered
  kubectl_ apply -f "$NODE_STATE/addons.yaml" >/dev/null || fail_component kube-apiserver "applying hack/node/addons.yaml failed"
  start_component kube-proxy
  start_component coredns
  wait_for kubelet 30 "kubelet /healthz" http_ok "http://$HOST:$KUBELET_HEALTHZ_PORT/healthz"
  wait_for kubelet 120 "node $NODE_NAME Ready" node_ready
  wait_for kube-proxy 60 "kube-proxy /healthz" http_ok "http://$HOST:$KUBE_PROXY_HEALTHZ_PORT/healthz"
  wait_for coredns 60 "CoreDNS /ready" http_ok "http://$HOST:$COREDNS_READY_PORT/ready"
  # kube-proxy put its own jumps at the top of FORWARD: ours goes first again.
  forward_guard
}

# The object store on the address the apiserver binds: the node IP (pods reach it) or,
# without the node, 127.0.0.1.
seaweedfs_() {
  SEAWEEDFS_HOST=$API_HOST SEAWEEDFS_PORT=$SEAWEEDFS_PORT "$HACK_DIR/seaweedfs.sh" "$@"
}

seaweedfs_up() {
  seaweedfs_ up || die "hack/seaweedfs.sh up failed (log: $LOG_DIR/seaweedfs.log)"
  seaweedfs_ endpoint >"$S3_ENDPOINT_FILE"
}

# MLflow's artifacts go to the object store's mlflow bucket (hack/mlflow.sh reads the
# store's endpoint and key from hack/seaweedfs.sh).
mlflow_() {
  MLFLOW_HOST=$NODE_IP MLFLOW_PORT=$MLFLOW_PORT SEAWEEDFS_HOST=$API_HOST SEAWEEDFS_PORT=$SEAWEEDFS_PORT \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true "$HACK_DIR/mlflow.sh" "$@"
}

# MLflow on the node IP, where pods and the host reach it. Its Host-header check
# (--allowed-hosts) admits exactly the addresses it is reached by.
mlflow_up() {
  [[ -x $REPO_DIR/.venv/bin/mlflow ]] || "$HACK_DIR/bootstrap.sh"
  MLFLOW_ALLOWED_HOSTS=${MLFLOW_ALLOWED_HOSTS:-$NODE_IP:$MLFLOW_PORT,$NODE_IP} mlflow_ up ||
    die "hack/mlflow.sh up failed (log: $LOG_DIR/mlflow.log)"
  mlflow_ uri >"$MLFLOW_URI_FILE"
}

# The project image (hack/image.sh: debootstrap base, buildah bud, load into the
# node's containerd). image.sh rebuilds only when its inputs changed.
image_up() {
  local t0=$EPOCHREALTIME ref
  CONTAINERD_ADDRESS=$CONTAINERD_SOCK "$HACK_DIR/image.sh" all ||
    die "hack/image.sh all failed: the node has no project image (MODELWORKS_NODE=0 skips the node)"
  ref=$("$HACK_DIR/image.sh" name)
  ctr_ images ls -q "name==$ref" | grep -q . || die "$ref is not in the node's containerd after hack/image.sh all"
  log "up: project image $ref on the node ($(elapsed "$t0")s)"
}

# Stop every pod container through containerd (the kubelet is gone by then), then
# whatever is left: shims of our socket, processes in the pods' cgroups, mounts.
node_teardown() {
  local id p exe
  local -a pids
  if containerd_ready; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  mapfile -t pids < <({ pid_of containerd || true; stray_pids containerd; } | sort -u)
  ((${#pids[@]} == 0)) || stop_pids containerd "${pids[@]}"
  for p in $(pgrep -f -- "-address $CONTAINERD_SOCK" || true); do
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    if [[ ${exe##*/} == containerd-shim* ]]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  mapfile -t pids < <(cgroup_pids)
  if ((${#pids[@]})); then
    log "down: killing ${#pids[@]} processes left in /$CGROUP_ROOT cgroups"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.5
  fi
  unmount_under "$NODE_STATE" "$CONTAINERD_ROOT"
  cgroup_root_down
}

# ---------------------------------------------------------------------------
# commands

# The mode the state in .cluster was made with: node, control-plane (also a
# cluster started before the node existed), or nothing.
saved_mode() {
  local c
  if [[ -f $MODE_FILE ]]; then
    cat "$MODE_FILE"
    return 0
  fi
  for c in "${COMPONENTS[@]}"; do
    if pid_of "$c" >/dev/null || [[ -f $PID_DIR/$c.pid ]]; then
      echo control-plane
      return 0
    fi
  done
}

# use_saved_mode: status, env and down follow the mode the cluster was started in.
use_saved_mode() {
  local m
  m=$(saved_mode)
  case $m in
    node) MODE=node API_HOST=$NODE_IP ;;
    control-plane) MODE=control-plane API_HOST=$HOST ;;
  esac
}

cmd_up() {
  local t0=$EPOCHREALTIME c saved
  saved=$(saved_mode)
  if [[ -n $saved && $saved != "$MODE" ]]; then
    die "the cluster in $STATE_DIR runs as '$saved' but this is MODELWORKS_NODE=$NODE ('$MODE'): run hack/cluster.sh down first"
  fi
  [[ $MODE == node ]] && node_preflight
  cmd_build
  # Refuse before touching anything when another process owns one of our ports.
  for c in "${COMPONENTS[@]}"; do
    pid_of "$c" >/dev/null || check_ports_free "$c"
  done
  mkdir -p "$STATE_DIR" "$LOG_DIR" "$PID_DIR"
  echo "$MODE" >"$MODE_FILE"
  # The apiserver binds the node IP: the bridge comes first.
  [[ $MODE == node ]] && node_network_up
  gen_pki
  write_kubeconfigs
  cp "$HACK_DIR/kwok/stages.yaml" "$STATE_DIR/kwok-stages.yaml"

  start_component etcd
  wait_for etcd 30 "etcd /health" etcd_healthy
  start_component kube-apiserver
  wait_for kube-apiserver 60 "kube-apiserver /readyz" apiserver_ready
  start_component kube-controller-manager
  start_component kube-scheduler
  start_component kwok
  wait_for kube-controller-manager 60 "kube-controller-manager /healthz" healthz_ok "$CONTROLLER_MANAGER_PORT"
  wait_for kube-scheduler 60 "kube-scheduler /healthz" healthz_ok "$SCHEDULER_PORT"
  wait_for kwok 30 "kwok /healthz" healthz_ok "$KWOK_PORT" http
  wait_for kube-controller-manager 60 "the default ServiceAccount (made by kube-controller-manager)" default_sa_exists
  node_manifests | kubectl_ apply -f - >/dev/null || fail_component kube-apiserver "creating the kwok nodes failed"
  wait_for kwok 60 "$KWOK_NODES kwok nodes to be Ready" nodes_ready "$KWOK_NODES"
  log "up: control plane ready after $(elapsed "$t0")s (API https://$API_HOST:$APISERVER_PORT)"
  seaweedfs_up
  if [[ $MODE == node ]]; then
    node_up
    log "up: node $NODE_NAME ready after $(elapsed "$t0")s"
    mlflow_up
    image_up
  fi
  log "up: cluster ready in $(elapsed "$t0")s (API https://$API_HOST:$APISERVER_PORT, mode $MODE)"
  log "up: use it with: eval \"\$(hack/cluster.sh env)\"   or   export KUBECONFIG=$KUBECONFIG_FILE"
}

# Our processes that have lost their pid file (e.g. a crashed `up`): any process
# running one of our binaries with this state dir on its command line.
stray_pids() {
  local c=$1 p candidates
  if command -v pgrep >/dev/null; then
    candidates=$(pgrep -f -- "$STATE_DIR/" || true)
  else
    candidates=$(cd /proc && echo [0-9]*)
  fi
  for p in $candidates; do
    is_ours "$p" "$c" && echo "$p"
  done
  return 0
}

stop_pids() { # COMPONENT PIDS...
  local c=$1 p deadline
  shift
  (($#)) || return 0
  local t0=$EPOCHREALTIME
  log "down: stopping $c (pid $*)"
  kill -TERM "$@" 2>/dev/null || true
  deadline=$((SECONDS + 20))
  for p in "$@"; do
    while is_ours "$p" "$c"; do
      if ((SECONDS >= deadline)); then
        log "down: $c (pid $p) did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
        sleep 0.2
        break
      fi
      sleep 0.1
    done
  done
  log "down: $c stopped after $(elapsed "$t0")s"
}

stop_component() {
  local c=$1
  local -a pids
  mapfile -t pids < <({ pid_of "$c" || true; stray_pids "$c"; } | sort -u)
  ((${#pids[@]} == 0)) || stop_pids "$c" "${pids[@]}"
}

# The state that belongs to the cluster. <repo>/.cluster is shared with other
# tools (the demo keeps its operator's pid and log there), so down removes only these
# and then the directories that are left empty. MLflow's database and the object store
# (which holds MLflow's artifacts) go together.
own_state() {
  local c
  printf '%s\n' "$PKI_DIR" "$STATE_DIR/etcd" "$STATE_DIR/home" "$KUBECONFIG_FILE" "$STATE_DIR/kwok-stages.yaml" \
    "$NODE_STATE" "$MODE_FILE" "$MLFLOW_URI_FILE" "$S3_ENDPOINT_FILE"
  for c in "${COMPONENTS[@]}" "${NODE_COMPONENTS[@]}" mlflow seaweedfs; do
    printf '%s\n' "$LOG_DIR/$c.log" "$PID_DIR/$c.pid" "$STATE_DIR/$c" "$STATE_DIR/$c.kubeconfig"
  done
}

# Anything of the node left on the host (even without state files).
node_leftovers() {
  ip link show dev "$BRIDGE" >/dev/null 2>&1 ||
    iptables -w -n -L "$FORWARD_CHAIN" >/dev/null 2>&1 ||
    [[ -n $(mounts_under "$NODE_STATE") ]] ||
    [[ -n $(cgroup_pids) ]]
}

cmd_down() {
  local t0=$EPOCHREALTIME i c f found=0
  while read -r f; do [[ -e $f ]] && found=1; done < <(own_state)
  if ((!found)) && ! node_leftovers; then
    log "down: nothing to do (no cluster state in $STATE_DIR)"
    return 0
  fi
  # The node first: MLflow, the node agents, the pods and containerd; then kwok,
  # scheduler and controller-manager, the apiserver, etcd; then the network.
  if [[ -f $PID_DIR/mlflow.pid ]]; then
    MLFLOW_PORT=$MLFLOW_PORT "$HACK_DIR/mlflow.sh" down || log "down: hack/mlflow.sh down failed"
  fi
  if [[ -f $PID_DIR/seaweedfs.pid ]]; then
    seaweedfs_ down || log "down: hack/seaweedfs.sh down failed"
  fi
  for c in coredns kube-proxy kubelet; do stop_component "$c"; done
  node_teardown
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_component "${COMPONENTS[i]}"
  done
  for c in "${COMPONENTS[@]}" "${NODE_COMPONENTS[@]}"; do
    [[ -z $(stray_pids "$c") ]] || die "down: $c is still running; state kept in $STATE_DIR"
  done
  # Only when this cluster had a node: KUBE-* chains of another Kubernetes on the
  # host are not ours.
  if [[ -d $NODE_STATE ]] || ip link show dev "$BRIDGE" >/dev/null 2>&1 ||
    iptables -w -n -L "$FORWARD_CHAIN" >/dev/null 2>&1; then
    node_network_down
  fi
  [[ -z $(mounts_under "$STATE_DIR") ]] || die "down: mounts left under $STATE_DIR; state kept"
  own_state | xargs -d '\n' rm -rf --one-file-system --
  rmdir "$LOG_DIR" "$PID_DIR" "$STATE_DIR" 2>/dev/null || true
  log "down: stopped the cluster and removed its state in $(elapsed "$t0")s"
}

status_line() { # COMPONENT CHECK...: prints the line, returns the check's result
  local c=$1 pid alive=no addr rc=0
  shift
  if pid=$(pid_of "$c"); then alive=yes; else pid=-; rc=1; fi
  addr=$(addr_of "$c")
  if [[ $c == containerd ]]; then
    if containerd_ready; then addr="$CONTAINERD_SOCK (CRI ok)"; else addr="$CONTAINERD_SOCK (not answering)"; rc=1; fi
  elif port_listening "$addr"; then
    addr="$addr (listening)"
  else
    addr="$addr (closed)"
    rc=1
  fi
  printf '%-24s %-8s %-6s %s\n' "$c" "$pid" "$alive" "$addr"
  return "$rc"
}

cmd_status() {
  local c ok=0 ready node
  if [[ ! -d $STATE_DIR || -z $(saved_mode) ]]; then
    log "status: not running (no cluster state in $STATE_DIR)"
    return 1
  fi
  printf '%-24s %-8s %-6s %s\n' COMPONENT PID ALIVE ADDRESS
  for c in "${COMPONENTS[@]}"; do status_line "$c" || ok=1; done
  if [[ $MODE == node ]]; then
    for c in "${NODE_COMPONENTS[@]}"; do status_line "$c" || ok=1; done
  fi
  if [[ -f $PKI_DIR/admin.crt ]] && apiserver_ready; then ready=yes; else ready=no; ok=1; fi
  printf 'apiserver ready: %s (https://%s:%s)\nkubeconfig: %s\nmode: %s\n' "$ready" "$API_HOST" "$APISERVER_PORT" \
    "$KUBECONFIG_FILE" "$MODE"
  if is_local_ip "$API_HOST" && seaweedfs_ status >/dev/null 2>&1; then
    printf 's3: %s\n' "$(cat "$S3_ENDPOINT_FILE" 2>/dev/null || seaweedfs_ endpoint)"
  else
    printf 's3: not running\n'
    ok=1
  fi
  if [[ $MODE == node ]]; then
    node=no
    [[ $ready == yes ]] && node_ready && node=yes
    [[ $node == yes ]] || ok=1
    printf 'node %s Ready: %s\n' "$NODE_NAME" "$node"
    if is_local_ip "$NODE_IP" && mlflow_ status >/dev/null 2>&1; then
      printf 'mlflow: %s\n' "$(cat "$MLFLOW_URI_FILE" 2>/dev/null || mlflow_ uri)"
    else
      printf 'mlflow: not running\n'
      ok=1
    fi
  fi
  return "$ok"
}

# A JSON string literal for $1: backslash, quote and control characters escaped.
json_string() {
  local s=$1 out='' c i
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  if [[ $s == *[[:cntrl:]]* ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      if [[ $c == [[:cntrl:]] ]]; then
        printf -v c '\\u%04x' "'$c"
      fi
      out+=$c
    done
    s=$out
  fi
  printf '"%s"' "$s"
}

# The variables a client of the cluster needs, as exports for eval or (--json) one JSON
# object with the same keys for programs. The JSON PATH is already expanded (ours in
# front of the caller's), since a JSON reader has no shell to expand "$PATH" for it.
cmd_env() {
  local json=0 i sep=''
  case $# in
    0) ;;
    1) [[ $1 == --json ]] || die "env: unknown option '$1' (usage: hack/cluster.sh env [--json])"; json=1 ;;
    *) die "env: too many arguments (usage: hack/cluster.sh env [--json])" ;;
  esac
  local path_prefix=$K8S_BIN:$ETCD_BIN:$KWOK_BIN
  local -a keys=(KUBECONFIG PATH) values=("$KUBECONFIG_FILE" "$path_prefix:$PATH")
  if [[ $MODE == node ]]; then
    keys+=(CONTAINERD_ADDRESS CONTAINER_RUNTIME_ENDPOINT)
    values+=("$CONTAINERD_SOCK" "unix://$CONTAINERD_SOCK")
  fi
  if [[ -f $MLFLOW_URI_FILE ]]; then
    keys+=(MODELWORKS_MLFLOW_TRACKING_URI)
    values+=("$(<"$MLFLOW_URI_FILE")")
  fi
  # The object store's endpoint, key and bucket (MODELWORKS_S3_*), once it has run.
  local line
  if [[ -f $S3_ENDPOINT_FILE ]]; then
    while IFS= read -r line; do
      keys+=("${line%%=*}")
      values+=("${line#*=}")
    done < <(seaweedfs_ vars)
  fi
  if ((json)); then
    printf '{'
    for i in "${!keys[@]}"; do
      printf '%s%s: %s' "$sep" "$(json_string "${keys[i]}")" "$(json_string "${values[i]}")"
      sep=', '
    done
    printf '}\n'
    return 0
  fi
  for i in "${!keys[@]}"; do
    if [[ ${keys[i]} == PATH ]]; then
      # shellcheck disable=SC2016 # $PATH is for the caller's shell to expand
      printf 'export PATH=%q:"$PATH"\n' "$path_prefix"
    else
      printf 'export %s=%q\n' "${keys[i]}" "${values[i]}"
    fi
  done
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  local cmd=${1:-help}
  (($#)) && shift
  case $cmd in
    build) cmd_build "$@" ;;
    up) cmd_up ;;
    down) use_saved_mode; cmd_down ;;
    status) use_saved_mode; cmd_status ;;
    env) use_saved_mode; cmd_env "$@" ;;
    gomod) cmd_gomod ;;
    help | -h | --help) usage ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
