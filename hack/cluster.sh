#!/usr/bin/env bash
# Local Kubernetes control plane for Modelworks: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (simulated nodes), built from
# their Go modules at the versions pinned in hack/versions.env and run as plain
# processes on 127.0.0.1. See docs/cluster.md.
#
#   hack/cluster.sh build [component...]  build missing binaries (cached by version)
#   hack/cluster.sh up                    start the cluster (idempotent)
#   hack/cluster.sh down                  stop it and remove its state (idempotent)
#   hack/cluster.sh status                show components; exit 0 only if all are up
#   hack/cluster.sh env                   print exports for eval: KUBECONFIG, PATH
#   hack/cluster.sh gomod                 regenerate hack/*/go.mod from versions.env
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
# shellcheck disable=SC1091 # versions.env: plain KEY=value lines
source "$HACK_DIR/versions.env"

CACHE_DIR=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
BIN_ROOT=$CACHE_DIR/bin
K8S_BIN=$BIN_ROOT/k8s-$K8S_VERSION
ETCD_BIN=$BIN_ROOT/etcd-$ETCD_VERSION
KWOK_BIN=$BIN_ROOT/kwok-$KWOK_VERSION

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

# Start order; down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
K8S_BUILDABLE=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
UP_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

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
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy)
      echo "$K8S_BIN/$1" ;;
    *) die "unknown component '$1' (known: etcd kwok ${K8S_BUILDABLE[*]})" ;;
  esac
}

# module_dir COMPONENT -> the hack/ Go module that builds it
module_dir() {
  case $1 in
    etcd) echo "$HACK_DIR/etcd" ;;
    kwok) echo "$HACK_DIR/kwok" ;;
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
  log "build: $c from $pkg ..."
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
  ((${#want[@]})) || want=("${UP_BINARIES[@]}")
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

# Rewrites hack/{k8s,etcd,kwok}/go.mod from versions.env and tidies them.
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
  local d
  for d in k8s etcd kwok; do
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

gen_pki() {
  [[ -f $PKI_DIR/done ]] && return 0
  command -v openssl >/dev/null || die "openssl is required"
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=modelworks-local-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI_DIR/ca.crt" 2>/dev/null
  new_cert apiserver kube-apiserver "" serverAuth \
    "IP:$HOST,IP:$FIRST_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  new_cert etcd etcd "" serverAuth,clientAuth "IP:$HOST,DNS:localhost"
  new_cert apiserver-etcd-client kube-apiserver-etcd-client "" clientAuth
  new_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
  new_cert admin modelworks-admin system:masters clientAuth
  new_cert kube-controller-manager system:kube-controller-manager "" clientAuth
  new_cert kube-scheduler system:kube-scheduler "" clientAuth
  # kwok patches node and pod status, deletes pods and renews node leases for the
  # nodes it simulates: it gets the admin group, as kwokctl does.
  new_cert kwok kwok-controller system:masters clientAuth
  # Service-account token signing key pair.
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI_DIR/sa.key" 2>/dev/null
  openssl ec -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
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
    server: https://$HOST:$APISERVER_PORT
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
}

# ---------------------------------------------------------------------------
# processes

port_of() {
  case $1 in
    etcd) echo "$ETCD_CLIENT_PORT" ;;
    kube-apiserver) echo "$APISERVER_PORT" ;;
    kube-controller-manager) echo "$CONTROLLER_MANAGER_PORT" ;;
    kube-scheduler) echo "$SCHEDULER_PORT" ;;
    kwok) echo "$KWOK_PORT" ;;
  esac
}

ports_of() {
  if [[ $1 == etcd ]]; then echo "$ETCD_CLIENT_PORT $ETCD_PEER_PORT"; else port_of "$1"; fi
}

# is_ours PID COMPONENT: the process runs our binary for COMPONENT with this
# state dir on its command line (so a recycled pid is never mistaken for ours).
is_ours() {
  local pid=$1 c=$2 exe cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ ${exe##*/} == "$c" && $exe == "$BIN_ROOT"/* ]] || return 1
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

# port_listening PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_listening() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

port_owner() {
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))$/\1/p' | head -1
}

# Refuse to start COMPONENT while another process owns one of its ports.
check_ports_free() {
  local c=$1 p owner
  for p in $(ports_of "$c"); do
    if port_listening "$p"; then
      owner=$(port_owner "$p")
      die "cannot start $c: 127.0.0.1:$p is already in use${owner:+ by $owner}. Another cluster may be running (hack/cluster.sh status), or set MODELWORKS_*_PORT (see docs/cluster.md)."
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
      printf '%s\n' \
        --bind-address="$HOST" \
        --advertise-address="$HOST" \
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
        --service-account-signing-key-file="$PKI_DIR/sa.key" \
        --endpoint-reconciler-type=none
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
  mkdir -p "$LOG_DIR" "$PID_DIR"
  # kwok also reads ~/.kwok/kwok.yaml when it exists: give it a HOME of its own.
  # setsid detaches the process from our session and terminal; as a background
  # job of a non-interactive shell it is no group leader, so setsid execs in place
  # and $! is the component's own pid.
  HOME=$STATE_DIR/home/$c setsid "$bin" "${args[@]}" </dev/null >>"$LOG_DIR/$c.log" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_DIR/$c.pid"
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
  [[ $(curl_admin "https://$HOST:$APISERVER_PORT/readyz") == ok ]]
}

healthz_ok() { # PORT SCHEME
  [[ $(curl -sfk --max-time 2 "${2:-https}://$HOST:$1/healthz") == ok ]]
}

default_sa_exists() {
  curl_admin "https://$HOST:$APISERVER_PORT/api/v1/namespaces/default/serviceaccounts/default" >/dev/null
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

cmd_up() {
  local t0=$EPOCHREALTIME c
  cmd_build
  # Refuse before touching anything when another process owns one of our ports.
  for c in "${COMPONENTS[@]}"; do
    pid_of "$c" >/dev/null || check_ports_free "$c"
  done
  mkdir -p "$STATE_DIR" "$LOG_DIR" "$PID_DIR"
  gen_pki
  write_kubeconfigs
  cp "$HACK_DIR/kwok/stages.yaml" "$STATE_DIR/kwok-stages.yaml"
  for c in "${COMPONENTS[@]}"; do mkdir -p "$STATE_DIR/home/$c"; done

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
  log "up: cluster ready in $(elapsed "$t0")s (API https://$HOST:$APISERVER_PORT)"
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

# The state that belongs to the cluster. <repo>/.cluster is shared with other
# tools (hack/mlflow.sh keeps mlflow/ and its own logs and pid file there), so down
# removes only these and then the directories that are left empty.
own_state() {
  local c
  printf '%s\n' "$PKI_DIR" "$STATE_DIR/etcd" "$STATE_DIR/home" "$KUBECONFIG_FILE" "$STATE_DIR/kwok-stages.yaml"
  for c in "${COMPONENTS[@]}"; do
    printf '%s\n' "$LOG_DIR/$c.log" "$PID_DIR/$c.pid" "$STATE_DIR/$c" "$STATE_DIR/$c.kubeconfig"
  done
}

cmd_down() {
  local t0=$EPOCHREALTIME i c f found=0
  local -a pids
  while read -r f; do [[ -e $f ]] && found=1; done < <(own_state)
  if ((!found)); then
    log "down: nothing to do (no cluster state in $STATE_DIR)"
    return 0
  fi
  # kwok, scheduler and controller-manager first, then the apiserver, then etcd.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    mapfile -t pids < <({ pid_of "$c" || true; stray_pids "$c"; } | sort -u)
    ((${#pids[@]})) || continue
    stop_pids "$c" "${pids[@]}"
  done
  for c in "${COMPONENTS[@]}"; do
    [[ -z $(stray_pids "$c") ]] || die "down: $c is still running; state kept in $STATE_DIR"
  done
  own_state | xargs -d '\n' rm -rf --
  rmdir "$LOG_DIR" "$PID_DIR" "$STATE_DIR" 2>/dev/null || true
  log "down: stopped the cluster and removed its state in $(elapsed "$t0")s"
}

cmd_status() {
  local c pid alive port ok=0 ready
  if [[ ! -d $STATE_DIR ]]; then
    log "status: not running (no $STATE_DIR)"
    return 1
  fi
  printf '%-24s %-8s %-6s %s\n' COMPONENT PID ALIVE PORT
  for c in "${COMPONENTS[@]}"; do
    alive=no
    port=$(port_of "$c")
    if pid=$(pid_of "$c"); then
      alive=yes
    else
      pid=-
      [[ -f $PID_DIR/$c.pid ]] && pid="$(<"$PID_DIR/$c.pid")"
      ok=1
    fi
    if port_listening "$port"; then port="$HOST:$port (listening)"; else port="$HOST:$port (closed)"; ok=1; fi
    printf '%-24s %-8s %-6s %s\n' "$c" "$pid" "$alive" "$port"
  done
  if [[ -f $PKI_DIR/admin.crt ]] && apiserver_ready; then ready=yes; else ready=no; ok=1; fi
  printf 'apiserver ready: %s (https://%s:%s)\nkubeconfig: %s\n' "$ready" "$HOST" "$APISERVER_PORT" "$KUBECONFIG_FILE"
  return "$ok"
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
  # shellcheck disable=SC2016 # $PATH is for the caller's shell to expand
  printf 'export PATH=%q:%q:%q:"$PATH"\n' "$K8S_BIN" "$ETCD_BIN" "$KWOK_BIN"
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-help}
  (($#)) && shift
  case $cmd in
    build) cmd_build "$@" ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    gomod) cmd_gomod ;;
    help | -h | --help) usage ;;
    *) usage >&2; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
