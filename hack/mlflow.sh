#!/usr/bin/env bash
# The local MLflow tracking server: a real `mlflow server` on the host, SQLite backend
# store, proxied artifacts (--serve-artifacts: clients upload through the server, so pods
# need no bucket credentials) stored in the bucket `mlflow` of the local S3 object store
# (hack/seaweedfs.sh; its endpoint and key go into the server's environment only), the
# configuration production MLflow servers run. The server runs from its own Python
# environment (hack/mlflow-server-venv.sh: mlflow + boto3).
#
#   hack/mlflow.sh up       start it (no-op when it already answers); waits for GET /health
#   hack/mlflow.sh down     stop exactly the process group it started
#   hack/mlflow.sh status   running or not, its URI, pid and state
#   hack/mlflow.sh uri      print the tracking URI (http://<host>:<port>)
#   hack/mlflow.sh env      print `export MODELWORKS_MLFLOW_TRACKING_URI=...` for eval
#
# State: <repo>/.cluster/mlflow/mlflow.db, <repo>/.cluster/pids/mlflow.pid,
# <repo>/.cluster/logs/mlflow.log (`down` keeps the data; hack/cluster.sh down removes it
# together with the object store's).
# Environment:
#   MLFLOW_HOST           address to bind and advertise (default 127.0.0.1). Set it to the
#                         node's view of the host (bridge/host IP) so pods reach it.
#   MLFLOW_PORT           default 15000
#   MLFLOW_ADVERTISE_HOST host in the URI when it differs from MLFLOW_HOST (default: MLFLOW_HOST,
#                         127.0.0.1 when binding 0.0.0.0)
#   MLFLOW_ALLOWED_HOSTS  --allowed-hosts (Host header check against DNS rebinding). Default:
#                         MLflow's own (localhost and private IPs) when MLFLOW_HOST is one of
#                         them, otherwise localhost plus MLFLOW_HOST.
#   MLFLOW_WORKERS        default 1;  MLFLOW_START_TIMEOUT  seconds, default 120
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  default false (MLflow's GenAI job runner, not needed)
#   MLFLOW_ARTIFACTS_DESTINATION  default s3://mlflow/ on the local object store, whose
#                         address SEAWEEDFS_HOST and SEAWEEDFS_PORT give (see hack/seaweedfs.sh);
#                         any other value is passed as is (a directory, or s3:// with the
#                         caller's MLFLOW_S3_ENDPOINT_URL and AWS_* in the environment)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=$repo/.cluster
data=$state/mlflow
pidfile=$state/pids/mlflow.pid
logfile=$state/logs/mlflow.log
destination=${MLFLOW_ARTIFACTS_DESTINATION:-s3://mlflow/}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-15000}
workers=${MLFLOW_WORKERS:-1}
timeout=${MLFLOW_START_TIMEOUT:-120}

log() { printf '%s\n' "mlflow: $*" >&2; }
die() { printf '%s\n' "mlflow: error: $*" >&2; exit 1; }

advertise_host() {
  local h=${MLFLOW_ADVERTISE_HOST:-$host}
  case $h in 0.0.0.0) h=127.0.0.1 ;; :: | '[::]') h='[::1]' ;; esac
  [[ $h == *:* && $h != \[* ]] && h="[$h]" # bare IPv6 literal
  printf '%s\n' "$h"
}
uri() { printf 'http://%s:%s\n' "$(advertise_host)" "$port"; }

healthy() { curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$(uri)/health" 2>/dev/null; }

# The pid in the pid file, if that process is still our mlflow server.
running_pid() {
  local pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "mlflow server .*--port $port " || return 1
  printf '%s\n' "$pid"
}

# Loopback and private addresses are accepted by MLflow's default Host check.
default_allowed() {
  local h second
  h=$(advertise_host)
  case $h in
    localhost | 127.* | '[::1]' | 10.* | 192.168.* | '[fc'* | '[fd'*) return 0 ;;
    172.*)
      second=${h#172.}
      second=${second%%.*}
      [[ $second =~ ^[0-9]+$ ]] && ((second >= 16 && second <= 31))
      ;;
    *) return 1 ;;
  esac
}

# The local object store's endpoint and key as the server's S3 client reads them.
store_env() {
  local line
  while IFS= read -r line; do
    case $line in
      MODELWORKS_S3_ENDPOINT=*) export MLFLOW_S3_ENDPOINT_URL=${line#*=} ;;
      MODELWORKS_S3_ACCESS_KEY_ID=*) export AWS_ACCESS_KEY_ID=${line#*=} ;;
      MODELWORKS_S3_SECRET_ACCESS_KEY=*) export AWS_SECRET_ACCESS_KEY=${line#*=} ;;
    esac
  done < <("$repo/hack/seaweedfs.sh" vars)
  [[ -n ${AWS_SECRET_ACCESS_KEY:-} ]] || die "no object store key: run hack/seaweedfs.sh up first"
  "$repo/hack/seaweedfs.sh" status >/dev/null ||
    die "the object store at $MLFLOW_S3_ENDPOINT_URL does not answer: run hack/seaweedfs.sh up first"
  export AWS_DEFAULT_REGION=us-east-1
}

# Artifacts a server before the object store kept in <data>/artifacts move to the bucket
# once, at the same paths (<experiment>/<run>/artifacts/...), so the runs and model
# versions of the database keep loading; the directory goes when all are copied.
migrate_artifacts() {
  local python=$1 src=$data/artifacts
  [[ -d $src ]] || return 0
  log "moving $(find "$src" -type f | wc -l) artifact files from $src to s3://mlflow/"
  "$python" - "$src" <<'EOF' || die "copying $src to s3://mlflow/ failed (kept; the next up retries)"
import os
import sys
from urllib.parse import urlsplit

from pyarrow import fs

url = urlsplit(os.environ["MLFLOW_S3_ENDPOINT_URL"])
s3 = fs.S3FileSystem(
    access_key=os.environ["AWS_ACCESS_KEY_ID"],
    secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    endpoint_override=url.netloc,
    scheme=url.scheme,
    region=os.environ["AWS_DEFAULT_REGION"],
)
fs.copy_files(sys.argv[1], "mlflow", destination_filesystem=s3)
EOF
  rm -rf --one-file-system -- "$src"
}

cmd_up() {
  local pid t0=$EPOCHREALTIME deadline args mlflow venv
  venv=$("$repo/hack/mlflow-server-venv.sh") || die "could not make the MLflow server's environment"
  mlflow=$venv/bin/mlflow
  command -v curl >/dev/null || die "curl is needed to check /health"
  if pid=$(running_pid); then
    if healthy; then
      log "already running (pid $pid) at $(uri)"
      return 0
    fi
    die "pid $pid runs but $(uri)/health does not answer; see $logfile or run hack/mlflow.sh down"
  fi
  rm -f "$pidfile"
  if healthy || (exec 3<>"/dev/tcp/$(advertise_host | tr -d '[]')/$port") 2>/dev/null; then
    die "something else already listens on $(uri); set MLFLOW_PORT"
  fi
  if [[ -z ${MLFLOW_ARTIFACTS_DESTINATION:-} ]]; then
    store_env
    migrate_artifacts "$venv/bin/python"
  fi
  mkdir -p "$data" "$(dirname "$pidfile")" "$(dirname "$logfile")"
  args=(
    server
    --backend-store-uri "sqlite:///$data/mlflow.db"
    --serve-artifacts
    --artifacts-destination "$destination"
    --default-artifact-root mlflow-artifacts:/
    --host "$host" --port "$port" --workers "$workers"
  )
  if [[ -n ${MLFLOW_ALLOWED_HOSTS:-} ]]; then
    args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
  elif ! default_allowed; then
    args+=(--allowed-hosts "localhost,localhost:*,127.0.0.1,127.0.0.1:*,$(advertise_host),$(advertise_host):*")
  fi
  printf '\n%s starting: %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$mlflow" "${args[*]}" >>"$logfile"
  # Its own session and process group: `down` stops the CLI and the uvicorn/job workers it
  # spawns, and nothing else.
  # No job runner and huey consumers (~350 MB in 8 processes): they serve GenAI features
  # (prompt optimisation, trace scoring) Modelworks does not use.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
    setsid "$mlflow" "${args[@]}" </dev/null >>"$logfile" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
  deadline=$((SECONDS + timeout))
  until healthy; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      tail -20 "$logfile" >&2
      die "mlflow server exited during start-up (log: $logfile)"
    fi
    if ((SECONDS >= deadline)); then
      tail -20 "$logfile" >&2
      cmd_down
      die "no answer from $(uri)/health within ${timeout}s (log: $logfile)"
    fi
    sleep 0.2
  done
  log "up at $(uri) (pid $pid) in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
}

cmd_down() {
  local pid deadline
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    log "not running"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 20))
  while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 -- "-$pid" 2>/dev/null; then
    log "still running after 20s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    if healthy; then echo "mlflow: running (pid $pid) at $(uri)"; else echo "mlflow: pid $pid runs, $(uri)/health does not answer"; fi
  else
    echo "mlflow: not running ($(uri))"
    echo "state: $data"
    return 3
  fi
  echo "state: $data"
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  uri) uri ;;
  env) printf 'export MODELWORKS_MLFLOW_TRACKING_URI=%q\n' "$(uri)" ;;
  -h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" ;;
  *)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
