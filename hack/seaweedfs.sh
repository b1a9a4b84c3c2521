#!/usr/bin/env bash
# The local S3-compatible object store: SeaweedFS's `weed server -s3` (master, volume
# server, filer and S3 gateway in one process) on the host, with one access key and the
# buckets Modelworks uses. Any S3 works in a user's cluster; this is the local one.
#
#   hack/seaweedfs.sh up        start it (no-op when it already answers), create the key
#                               (once) and the buckets; waits for an authenticated S3 call
#   hack/seaweedfs.sh down      stop exactly the process it started (data kept)
#   hack/seaweedfs.sh clean     down, then remove its data, key and log
#   hack/seaweedfs.sh status    running or not, its endpoint, pid and state
#   hack/seaweedfs.sh endpoint  print the S3 endpoint (http://<host>:<port>)
#   hack/seaweedfs.sh env       print the MODELWORKS_S3_* exports (endpoint, key, bucket) for eval
#   hack/seaweedfs.sh vars      the same as KEY=value lines (hack/cluster.sh env reads them)
#
# State: <repo>/.cluster/seaweedfs/{data/,credentials,s3.json}, <repo>/.cluster/pids/seaweedfs.pid,
# <repo>/.cluster/logs/seaweedfs.log. The key is random, made on the first `up`, and kept
# (mode 600) in credentials and s3.json; it is never written to the log.
# Environment:
#   SEAWEEDFS_HOST    address to bind and advertise (default 127.0.0.1); hack/cluster.sh sets
#                     the node IP so pods reach it
#   SEAWEEDFS_PORT    the S3 port (default 18333). The master, volume server and filer take the
#                     three ports below it, and every gRPC port is its HTTP port + 100.
#   SEAWEEDFS_BUCKETS buckets to create (default "mlflow modelworks")
#   SEAWEEDFS_START_TIMEOUT  seconds, default 60
#   MODELWORKS_CACHE  where hack/cluster.sh caches the weed binary (default ~/.cache/modelworks)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/versions.env
source "$repo/hack/versions.env"
cache=${MODELWORKS_CACHE:-$HOME/.cache/modelworks}
weed=$cache/bin/seaweedfs-$SEAWEEDFS_VERSION/weed
state=$repo/.cluster
dir=$state/seaweedfs
credentials=$dir/credentials
identities=$dir/s3.json
pidfile=$state/pids/seaweedfs.pid
logfile=$state/logs/seaweedfs.log
host=${SEAWEEDFS_HOST:-127.0.0.1}
port=${SEAWEEDFS_PORT:-18333}
buckets=${SEAWEEDFS_BUCKETS:-mlflow modelworks}
timeout=${SEAWEEDFS_START_TIMEOUT:-60}
region=us-east-1

log() { printf '%s\n' "seaweedfs: $*" >&2; }
die() { printf '%s\n' "seaweedfs: error: $*" >&2; exit 1; }

if ! [[ $port =~ ^[0-9]+$ ]] || ((port <= 3 || port + 100 >= 65536)); then
  die "SEAWEEDFS_PORT=$port is not a usable port"
fi
master_port=$((port - 3))
volume_port=$((port - 2))
filer_port=$((port - 1))

endpoint() { printf 'http://%s:%s\n' "$host" "$port"; }

# KEY=value lines: the access key id and secret key (the names S3 clients read).
read_credentials() {
  local line
  access_key='' secret_key=''
  while IFS= read -r line; do
    case $line in
      AWS_ACCESS_KEY_ID=*) access_key=${line#*=} ;;
      AWS_SECRET_ACCESS_KEY=*) secret_key=${line#*=} ;;
    esac
  done <"$credentials"
  [[ -n $access_key && -n $secret_key ]] || die "$credentials lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY"
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# The key is made once; later runs reuse it so clients keep working across restarts.
ensure_credentials() {
  mkdir -p "$dir"
  if [[ ! -s $credentials ]]; then
    (
      umask 077
      printf 'AWS_ACCESS_KEY_ID=MW%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
        "$(random_hex 9 | tr 'a-f' 'A-F')" "$(random_hex 20)" >"$credentials.tmp"
    )
    mv -f "$credentials.tmp" "$credentials"
    log "created an access key in $credentials"
  fi
  chmod 600 "$credentials"
  read_credentials
  (
    umask 077
    printf '{"identities": [{"name": "modelworks", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}\n' \
      "$access_key" "$secret_key" >"$identities.tmp"
  )
  mv -f "$identities.tmp" "$identities"
}

# curl signing with SigV4; the key goes in on stdin (a config), never on a command line.
s3_curl() {
  printf 'user = "%s:%s"\n' "$access_key" "$secret_key" |
    curl -K - -sS --noproxy '*' --max-time 5 --aws-sigv4 "aws:amz:$region:s3" "$@"
}

# The master has a leader (/readyz) and an authenticated ListBuckets answers 200: the
# gateway, filer and key all work.
healthy() {
  curl -fsS --noproxy '*' --max-time 2 -o /dev/null "http://$host:$master_port/readyz" 2>/dev/null &&
    s3_curl -f -o /dev/null "$(endpoint)/" 2>/dev/null
}

running_pid() {
  local pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "weed -logtostderr=true server .*-s3.port=$port " || return 1
  printf '%s\n' "$pid"
}

create_buckets() {
  local b code
  for b in $buckets; do
    code=$(s3_curl -o /dev/null -w '%{http_code}' -X PUT "$(endpoint)/$b") || die "creating bucket $b failed"
    case $code in
      200) log "created bucket $b" ;;
      409) ;; # BucketAlreadyOwnedByYou
      *) die "creating bucket $b: HTTP $code" ;;
    esac
  done
}

port_taken() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

server_args() {
  # -logtostderr: glog writes no files (to /tmp by default); stderr is the log file.
  printf '%s\n' -logtostderr=true server -s3 -filer \
    "-ip=$host" "-ip.bind=$host" "-dir=$dir/data" \
    "-master.port=$master_port" "-master.port.grpc=$((master_port + 100))" \
    "-volume.port=$volume_port" "-volume.port.grpc=$((volume_port + 100))" \
    "-filer.port=$filer_port" "-filer.port.grpc=$((filer_port + 100))" \
    "-filer.localSocket=$dir/filer.sock" \
    "-s3.port=$port" "-s3.port.grpc=$((port + 100))" "-s3.localSocket=$dir/s3.sock" \
    -s3.port.iceberg=0 -s3.port.lance=0 "-s3.config=$identities" \
    -master.volumeSizeLimitMB=64 -volume.max=0 -volume.preStopSeconds=1 \
    -master.resumeState=false -master.telemetry=false
}

cmd_up() {
  local pid p t0=$EPOCHREALTIME deadline
  local -a args
  [[ -x $weed ]] || die "$weed not found: run hack/cluster.sh build seaweedfs (make bootstrap builds it)"
  command -v curl >/dev/null || die "curl is needed to check and create the buckets"
  ensure_credentials
  if pid=$(running_pid); then
    healthy || die "pid $pid runs but $(endpoint) does not answer; see $logfile or run hack/seaweedfs.sh down"
    create_buckets
    log "already running (pid $pid) at $(endpoint)"
    return 0
  fi
  rm -f "$pidfile"
  for p in "$master_port" "$volume_port" "$filer_port" "$port" $((master_port + 100)) $((volume_port + 100)) \
    $((filer_port + 100)) $((port + 100)); do
    ! port_taken "$p" || die "something else already listens on $host:$p; set SEAWEEDFS_PORT"
  done
  mkdir -p "$dir/data" "$(dirname "$pidfile")" "$(dirname "$logfile")"
  mapfile -t args < <(server_args)
  printf '\n%s starting: %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$weed" "${args[*]}" >>"$logfile"
  # One volume per new collection (each bucket is one) instead of seven: the small local
  # disk's volume slots then last for many buckets (what `weed mini` sets as well).
  WEED_MASTER_VOLUME_GROWTH_COPY_1=1 setsid "$weed" "${args[@]}" </dev/null >>"$logfile" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  deadline=$((SECONDS + timeout))
  until healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      tail -20 "$logfile" >&2
      die "weed server exited during start-up (log: $logfile)"
    fi
    if ((SECONDS >= deadline)); then
      tail -20 "$logfile" >&2
      cmd_down
      die "no authenticated answer from $(endpoint) within ${timeout}s (log: $logfile)"
    fi
    sleep 0.2
  done
  create_buckets
  log "up at $(endpoint) (pid $pid) in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
}

cmd_down() {
  local pid deadline s
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "still running after 20s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "$dir/filer.sock" "$dir/s3.sock"
  # weed puts its in-process gRPC sockets in /tmp (not configurable) and removes them on
  # SIGTERM; after a SIGKILL they would stay.
  for s in master:$master_port volume:$volume_port filer:$filer_port s3:$port; do
    s=/tmp/seaweedfs-${s%%:*}-grpc-$((${s#*:} + 100)).sock
    [[ ! -S $s ]] || rm -f "$s"
  done
  log "stopped (pid $pid)"
}

cmd_clean() {
  cmd_down
  rm -rf --one-file-system -- "$dir" "$logfile"
  log "removed $dir"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    [[ -s $credentials ]] && read_credentials
    if healthy; then echo "seaweedfs: running (pid $pid) at $(endpoint)"; else echo "seaweedfs: pid $pid runs, $(endpoint) does not answer"; fi
  else
    echo "seaweedfs: not running ($(endpoint))"
    echo "state: $dir"
    return 3
  fi
  echo "state: $dir"
}

# KEY=value lines (no quoting: the values are hex, an URL and a bucket name).
cmd_vars() {
  [[ -s $credentials ]] || die "no key yet ($credentials): run hack/seaweedfs.sh up"
  read_credentials
  printf 'MODELWORKS_S3_ENDPOINT=%s\n' "$(endpoint)"
  printf 'MODELWORKS_S3_ACCESS_KEY_ID=%s\n' "$access_key"
  printf 'MODELWORKS_S3_SECRET_ACCESS_KEY=%s\n' "$secret_key"
  printf 'MODELWORKS_S3_BUCKET=%s\n' modelworks
}

cmd_env() {
  local line
  cmd_vars | while IFS= read -r line; do printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"; done
}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  clean) cmd_clean ;;
  status) cmd_status ;;
  endpoint) endpoint ;;
  env) cmd_env ;;
  vars) cmd_vars ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
