#!/usr/bin/env bash
# The main job: a local cluster (or $KUBECONFIG's), the Modelworks CRDs, the operator
# and the samples; then where to look. Safe to rerun. `hack/demo.sh stop` stops the
# operator it started.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=$repo/.cluster
pidfile=$state/pids/operator.pid
logfile=$state/logs/operator.log
ns=${MODELWORKS_DEMO_NAMESPACE:-modelworks-demo}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

operator_alive() {
  [[ -f $pidfile ]] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && grep -q "modelworks" "/proc/$pid/cmdline" 2>/dev/null
}

stop() {
  if operator_alive; then
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    say "stopped the demo operator (pid $pid)"
  fi
  rm -f "$pidfile"
}

if [[ ${1:-} == stop ]]; then stop; exit 0; fi

"$repo/hack/bootstrap.sh"
if [[ -n ${KUBECONFIG:-} ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
  say "using the cluster of KUBECONFIG=$KUBECONFIG"
else
  say "starting the local cluster (the first run builds Kubernetes from source: ~20 min on 2 cores)"
  "$repo/hack/cluster.sh" up
  eval "$("$repo/hack/cluster.sh" env)"
fi

say "installing the CRDs"
kubectl apply --server-side --force-conflicts -f "$repo/crds" >/dev/null
kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=modelworks --timeout=60s >/dev/null

mkdir -p "$state/pids" "$state/logs"
if operator_alive; then
  say "the operator already runs (pid $(cat "$pidfile"))"
else
  say "starting the operator (log: $logfile)"
  MODELWORKS_HEALTH_PORT=${MODELWORKS_HEALTH_PORT:-18080} MODELWORKS_METRICS_PORT=${MODELWORKS_METRICS_PORT:-18081} \
    nohup "$repo/.venv/bin/python" -m modelworks run >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:${MODELWORKS_HEALTH_PORT:-18080}/healthz" >/dev/null 2>&1 && break
    operator_alive || { tail -n 40 "$logfile" >&2; exit 1; }
    sleep 0.2
  done
fi

say "applying the samples in namespace $ns"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n "$ns" -k "$repo/manifests/samples"
for obj in trainingjob/churn-train modeldeployment/churn driftmonitor/churn-drift; do
  deadline=$((SECONDS + 60))
  while :; do
    read -r gen seen < <(kubectl get -n "$ns" "$obj" -o jsonpath='{.metadata.generation} {.status.observedGeneration}{"\n"}')
    [[ -n ${seen:-} && $gen == "$seen" ]] && break
    (( SECONDS < deadline )) || { say "the operator did not report on $obj in 60s"; tail -n 40 "$logfile" >&2; exit 1; }
    sleep 0.5
  done
done

if [[ -n ${MODELWORKS_MLFLOW_TRACKING_URI:-} ]]; then
  say "training churn-train for real (progress from its MLflow run; up to 10 min)"
  deadline=$((SECONDS + 600))
  while :; do
    IFS='|' read -r phase pct reason < <(kubectl get -n "$ns" tj/churn-train -o jsonpath='{.status.phase}|{.status.progress.percent}|{.status.conditions[?(@.type=="Succeeded")].reason}{"\n"}')
    printf '\r    phase=%-10s progress=%5s%%  %-30s' "${phase:-?}" "${pct:-0}" "${reason:-}" >&2
    [[ $phase == Succeeded || $phase == Failed ]] && break
    (( SECONDS < deadline )) || { echo >&2; say "still not finished; see: kubectl describe tj churn-train -n $ns"; break; }
    sleep 2
  done
  echo >&2
  kubectl get -n "$ns" tj/churn-train -o jsonpath='{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
else
  say "no MLflow server configured (MODELWORKS_MLFLOW_TRACKING_URI): training waits on it"
fi

kubectl get modelworks -n "$ns"
cat >&2 <<MSG

Where to look:
  export KUBECONFIG=${KUBECONFIG}
  kubectl get modelworks -n $ns            # all three kinds, with their printer columns
  kubectl describe tj churn-train -n $ns   # conditions and Events
  MLflow UI: ${MODELWORKS_MLFLOW_TRACKING_URI:-(none)}
  curl -s http://127.0.0.1:${MODELWORKS_METRICS_PORT:-18081}/metrics | grep ^modelworks_
  tail -f $logfile
Stop everything with: make cluster-down
MSG
