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
  if [[ -f $state/pids/port-forward.pid ]]; then
    kill "$(cat "$state/pids/port-forward.pid")" 2>/dev/null || true
    rm -f "$state/pids/port-forward.pid"
  fi
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

say "applying the samples in namespace $ns, with the loop closed on real data (manifests/loop)"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
s3_endpoint=${MODELWORKS_S3_ENDPOINT:-}
if [[ -z $s3_endpoint ]]; then
  say "no object store (MODELWORKS_S3_*): the samples without data capture"
  kubectl apply -n "$ns" -k "$repo/manifests/samples"
else
  # The store's key and the /feedback token live in Secrets of the namespace; nothing else
  # (no object, status, log or tag) ever holds them.
  kubectl create secret generic modelworks-s3 -n "$ns" --dry-run=client -o yaml \
    --from-literal=AWS_ACCESS_KEY_ID="$MODELWORKS_S3_ACCESS_KEY_ID" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$MODELWORKS_S3_SECRET_ACCESS_KEY" | kubectl apply -f - >/dev/null
  kubectl get secret churn-feedback -n "$ns" >/dev/null 2>&1 ||
    kubectl create secret generic churn-feedback -n "$ns" \
      --from-literal=token="$(head -c 32 /dev/urandom | base64 | tr -d '/+=' )" >/dev/null
  kubectl kustomize "$repo/manifests/loop" |
    "$repo/.venv/bin/python" "$repo/hack/with-endpoint.py" "$s3_endpoint" "${MODELWORKS_S3_BUCKET:-modelworks}" |
    kubectl apply -n "$ns" -f -
fi
for obj in trainingjob/churn-train modeldeployment/churn driftmonitor/churn-drift; do
  deadline=$((SECONDS + 60))
  while :; do
    read -r gen seen < <(kubectl get -n "$ns" "$obj" -o jsonpath='{.metadata.generation} {.status.observedGeneration}{"\n"}')
    [[ -n ${seen:-} && $gen == "$seen" ]] && break
    (( SECONDS < deadline )) || { say "the operator did not report on $obj in 60s"; tail -n 40 "$logfile" >&2; exit 1; }
    sleep 0.5
  done
done

jsonpath() { kubectl get -n "$ns" "$1" -o "jsonpath=$2" 2>/dev/null || true; }

# follow_training TJ: a progress line from the run's metrics until the phase is final.
follow_training() {
  local tj=$1 deadline=$((SECONDS + 600)) phase pct reason
  while :; do
    IFS='|' read -r phase pct reason < <(jsonpath "tj/$tj" '{.status.phase}|{.status.progress.percent}|{.status.conditions[?(@.type=="Succeeded")].reason}{"\n"}')
    printf '\r    %s: phase=%-10s progress=%5s%%  %-30s' "$tj" "${phase:-?}" "${pct:-0}" "${reason:-}" >&2
    [[ $phase == Succeeded || $phase == Failed ]] && break
    (( SECONDS < deadline )) || { echo >&2; say "still not finished; see: kubectl describe tj $tj -n $ns"; return 1; }
    sleep 2
  done
  echo >&2
  kubectl get -n "$ns" "tj/$tj" -o jsonpath='{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
  [[ $phase == Succeeded ]]
}

# wait_for WHAT SECONDS CMD...: poll CMD (true when done) with a deadline.
wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    (( SECONDS < deadline )) || { say "gave up waiting for $what after ${limit}s"; return 1; }
    sleep 2
  done
}

serving_version() { jsonpath mdep/churn '{.status.stableVersion}'; }
mdep_ready() { [[ $(jsonpath mdep/churn '{.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
# Serving: a stable version answers (a canary may still be in progress next to it).
mdep_serving() { [[ -n $(serving_version) && $(jsonpath mdep/churn '{.status.conditions[?(@.type=="Available")].status}') == True ]]; }

# The URL of the churn Service from here: its ClusterIP (the local cluster routes it),
# else a port-forward (kind and other clusters).
service_url() {
  local ip; ip=$(jsonpath svc/churn '{.spec.clusterIP}')
  if [[ -n $ip ]] && curl -fsS -m 2 "http://$ip/ping" >/dev/null 2>&1; then echo "http://$ip"; return; fi
  if [[ ! -f $state/pids/port-forward.pid ]] || ! kill -0 "$(cat "$state/pids/port-forward.pid")" 2>/dev/null; then
    nohup kubectl port-forward -n "$ns" svc/churn 18090:80 >"$state/logs/port-forward.log" 2>&1 &
    echo $! >"$state/pids/port-forward.pid"
    sleep 2
  fi
  echo "http://127.0.0.1:18090"
}

# Traffic generators of this run stop with it, however it ends.
traffic=""
trap 'if [[ -n $traffic ]]; then kill "$traffic" 2>/dev/null || true; fi' EXIT

if [[ -z ${MODELWORKS_MLFLOW_TRACKING_URI:-} ]]; then
  say "no MLflow server configured (MODELWORKS_MLFLOW_TRACKING_URI): training waits on it"
else
  say "1/6 train: churn-train runs for real (progress from its MLflow run)"
  follow_training churn-train || exit 1

  say "2/6 register and serve: ModelDeployment churn follows the alias champion"
  wait_for "the ModelDeployment to serve" 300 mdep_serving || { kubectl describe mdep churn -n "$ns" | tail -20 >&2; exit 1; }
  url=$(service_url)
  say "    version $(serving_version) serves at $(jsonpath mdep/churn '{.status.url}') (from here: $url)"
  if [[ -n $(jsonpath mdep/churn '{.status.canary.version}') ]]; then
    # An earlier run left a canary waiting for requests to analyse: give it some.
    say "    a canary of version $(jsonpath mdep/churn '{.status.canary.version}') is in progress: sending traffic until it is decided"
    "$repo/.venv/bin/python" "$repo/hack/traffic.py" "$url/invocations" --seconds 600 >"$state/logs/traffic.log" 2>&1 &
    traffic=$!
    wait_for "the canary to be decided" 600 bash -c "[[ -z \$(kubectl get -n $ns mdep/churn -o jsonpath='{.status.canary.version}') ]]" || true
    kill "$traffic" 2>/dev/null || true
    say "    version $(serving_version) serves"
  fi

  say "3/6 predict: POST $url/invocations"
  curl -fsS -H 'Content-Type: application/json' "$url/invocations" -d '{"dataframe_split": {"columns": ["tenure_months","monthly_charges","support_calls","age","contract","payment_method"], "data": [[2, 99.0, 5, 30, "month-to-month", "check"], [60, 40.0, 0, 52, "two-year", "card"]]}}' >&2
  echo >&2

  if [[ -n $(jsonpath dmon/churn-drift '{.status.lastRetrain.trainingJob}') ]]; then
    say "4/6 the world changes: an earlier run already closed the loop ($(jsonpath dmon/churn-drift '{.status.lastRetrain.trainingJob}'); cooldown $(jsonpath dmon/churn-drift '{.spec.retrain.cooldown}')); skipping"
  elif [[ -z $(jsonpath mdep/churn '{.spec.dataCapture.destination}') ]]; then
    say "4/6 the world changes: no data capture (no object store), so nothing to learn from; skipping"
  else
    # The samples check every minute over an hour; the demo has less patience. Drift in
    # two of six features plus the model's score is 3 of 8 entries: 0.3 will do. Four
    # drifting windows in a row (a minute) leave the quality check time to measure the drop
    # on the first labels before the retraining starts.
    kubectl patch -n "$ns" dmon/churn-drift --type=merge \
      -p '{"spec":{"interval":"15s","window":"30s","driftShare":0.3,"consecutiveWindows":4,"performance":{"interval":"20s","window":"10m"}}}' >/dev/null
    # Shorter canary pauses; and a looser p99 bound: on a small machine the servers share
    # their cores with the cluster and the traffic generator, and the analysis compares the
    # canary's counters (all under load) with the stable pods' lifetime counters.
    kubectl patch -n "$ns" mdep/churn --type=merge \
      -p '{"spec":{"rollout":{"steps":[{"weight":25,"pauseSeconds":15},{"weight":50,"pauseSeconds":15}],"analysis":{"maxLatencyRatio":3}}}}' >/dev/null
    say "4/6 the world changes: longer tenure, higher charges, and customers now churn for other reasons; a labelling pipeline posts each true label to /feedback 5 s after the answer"
    token=$(kubectl get secret churn-feedback -n "$ns" -o jsonpath='{.data.token}' | base64 -d)
    MODELWORKS_FEEDBACK_TOKEN=$token "$repo/.venv/bin/python" "$repo/hack/traffic.py" "$url/invocations" \
      --seconds 1200 --world changed --feedback "$url/feedback" --label-delay 5 >"$state/logs/traffic.log" 2>&1 &
    traffic=$!
    deadline=$((SECONDS + 420))
    while :; do
      IFS='|' read -r drifted outputs auc base rows retrain < <(jsonpath dmon/churn-drift '{.status.features[?(@.drifted==true)].name}|{.status.predictions[?(@.drifted==true)].name}|{.status.performance.metrics[?(@.metric=="roc_auc")].value}|{.status.performance.metrics[?(@.metric=="roc_auc")].baseline}|{.status.performance.labelledRows}|{.status.lastRetrain.trainingJob}{"\n"}')
      printf '\r    drifted features=%-32s outputs=%-18s roc_auc=%-8.8s (training: %-6.6s, %s labelled rows)  ' "${drifted:-}" "${outputs:-}" "${auc:--}" "${base:--}" "${rows:-0}" >&2
      [[ -n $retrain ]] && break
      (( SECONDS < deadline )) || { echo >&2; say "no retraining yet; see: kubectl describe dmon churn-drift -n $ns"; break; }
      sleep 3
    done
    echo >&2
    kubectl get -n "$ns" dmon/churn-drift -o jsonpath='{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2
    if [[ -n ${retrain:-} ]]; then
      wait_for "the snapshot" 300 bash -c "[[ \$(kubectl get -n $ns tj/$retrain -o jsonpath='{.spec.dataset.version}') == sha256-* ]]" || true
      say "5/6 retrain on what production saw: TrainingJob $retrain trains on $(jsonpath "tj/$retrain" '{.spec.dataset.uri}') ($(jsonpath dmon/churn-drift '{.status.snapshot.rows}') labelled rows, $(jsonpath dmon/churn-drift '{.status.snapshot.holdoutRows}') held out, digest $(jsonpath "tj/$retrain" '{.spec.dataset.version}'))"
      before=$(serving_version)
      if follow_training "$retrain"; then
        say "6/6 roll out: the canary of the retrained version is analysed on the new world's traffic"
        wait_for "the new version to roll out" 420 bash -c "[[ \$(kubectl get -n $ns mdep/churn -o jsonpath='{.status.stableVersion}') != '$before' ]]" &&
          say "    the loop closed: version $(serving_version) serves (was $before)"
        model=$(jsonpath mdep/churn '{.spec.model.name}')
        say "    on a fresh sample of the new world (3000 customers), ROC AUC:"
        "$repo/.venv/bin/python" "$repo/hack/score.py" "$model" "$before" "$(serving_version)" >&2 || true
      fi
    fi
    kill "$traffic" 2>/dev/null || true
  fi
  kubectl get -n "$ns" mdep/churn -o jsonpath='{range .status.history[*]}    version {.version} since {.since}: {.reason}{"\n"}{end}' >&2
fi

kubectl get modelworks -n "$ns"
cat >&2 <<MSG

Where to look:
  export KUBECONFIG=${KUBECONFIG}
  kubectl get modelworks -n $ns            # all three kinds, with their printer columns
  kubectl describe tj churn-train -n $ns   # conditions and Events
  kubectl get mdep churn -n $ns -o yaml    # resolved version, history, canary, rollback
  kubectl get dmon churn-drift -n $ns -o yaml   # per-feature scores
  .venv/bin/python -m modelworks status -n $ns  # lineage: training -> version -> serving -> drift
  MLflow UI: ${MODELWORKS_MLFLOW_TRACKING_URI:-(none)}
  curl -s http://127.0.0.1:${MODELWORKS_METRICS_PORT:-18081}/metrics | grep ^modelworks_
  tail -f $logfile
Stop everything with: make cluster-down
MSG
