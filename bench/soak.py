"""Soak: the operator runs for a long time with work in flight; does its memory stay flat?

One operator subprocess (``python -m modelworks run``, restricted to a fresh namespace)
against the local cluster and a real MLflow server (SQLite, loopback), for ``--minutes``:

- a ModelDeployment serving a registered scikit-learn model version on a kwok node;
- a DriftMonitor on it, checking every ``--interval`` against a Prometheus HTTP API
  served by this script (``/api/v1/query``, the same PromQL the operator sends to a real
  Prometheus), whose answers are the feature histograms of live traffic: counts drawn
  around the reference profile, so every check scores every feature;
- TrainingJob churn: one new TrainingJob every ``--churn-every`` seconds (its kwok pod
  completes after 2 s, so each gets an MLflow run, a Job, a final status), and the one
  before the previous one deleted, so objects come and go for the whole run.

The operator's RSS (``VmRSS``) is sampled every 10 s. Printed at the end: RSS at the end
of the warm-up (``--warmup`` minutes), at the end, the growth in % (target < 5 %), the
peak, and the pass counts per kind, drift checks and TrainingJobs cycled.

    python bench/soak.py                   # 30 minutes
    python bench/soak.py --minutes 5 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.integration.test_modeldeployment import register  # noqa: E402
from tests.support import (  # noqa: E402
    Cluster,
    Operator,
    cluster_session,
    create_namespace,
    eventually,
    mlflow_client,
    mlflow_server,
    run_operator,
)

from modelworks.drift.profile import PROFILE_FILE, Profile, bucket_labels, build_profile  # noqa: E402
from modelworks.names import FEATURE_BUCKET_METRIC  # noqa: E402

API = "modelworks.dev/v1alpha1"
KWOK_POD: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}
KINDS = ("TrainingJob", "ModelDeployment", "DriftMonitor")


class FakeTraffic:
    """A Prometheus query API whose histograms are live traffic around ``profile``."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.queries = 0
        self.rng = random.Random(20261130)
        self.lock = threading.Lock()

    def answer(self, promql: str) -> list[dict[str, Any]]:
        with self.lock:
            self.queries += 1
            if FEATURE_BUCKET_METRIC not in promql or "bucket" not in promql:
                return [
                    {"metric": {"feature": f.name, "pod": "srv-0"}, "value": [time.time(), "0"]}
                    for f in self.profile.features
                ]
            rows = []
            for feature in self.profile.features:
                for label in bucket_labels(feature):
                    count = self.rng.randint(5, 60)
                    rows.append(
                        {
                            "metric": {"feature": feature.name, "bucket": label, "pod": "srv-0"},
                            "value": [time.time(), str(count)],
                        }
                    )
            return rows

    def serve(self) -> ThreadingHTTPServer:
        traffic = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                body = json.dumps(
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": traffic.answer(query.get("query", [""])[0]),
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def training_job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "TrainingJob",
        "metadata": {"name": f"soak-{i:05d}"},
        "spec": {
            "image": "modelworks:0.1.0",
            "hyperparameters": {"seed": i},
            "experiment": "soak",
            "podTemplate": {
                **KWOK_POD,
                "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "2s"},
            },
        },
    }


def serving_objects(model: str, version: str, prometheus: str, interval: int) -> list[Any]:
    mdep = {
        "apiVersion": API,
        "kind": "ModelDeployment",
        "metadata": {"name": "srv"},
        "spec": {"model": {"name": model, "version": version}, "podTemplate": KWOK_POD},
    }
    dmon = {
        "apiVersion": API,
        "kind": "DriftMonitor",
        "metadata": {"name": "srv-drift"},
        "spec": {
            "target": {"modelDeployment": {"name": "srv"}, "prometheus": {"url": prometheus}},
            "interval": f"{interval}s",
            "window": "5m",
            "minSamples": 10,
        },
    }
    return [mdep, dmon]


def registered_model(uri: str, model: str) -> tuple[str, Profile]:
    import numpy as np

    version = register(uri, model)
    client = mlflow_client(uri)
    run_id = client.get_model_version(model, version).run_id
    rng = np.random.default_rng(7)
    profile = build_profile(
        {"x": rng.normal(0, 1, 2000), "c": np.array(["a", "b", "c", "d"] * 500)}
    )
    client.log_dict(run_id, profile.to_json(), PROFILE_FILE)
    return version, profile


class Churn(threading.Thread):
    """Creates a TrainingJob every ``every`` s and deletes the one before the previous."""

    def __init__(self, cluster: Cluster, namespace: str, every: float) -> None:
        super().__init__(name="churn", daemon=True)
        self.cluster, self.namespace, self.every = cluster, namespace, every
        self.stop = threading.Event()
        self.created = self.deleted = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.cluster.apply(training_job(i), "-n", self.namespace)
            self.created += 1
            if i >= 2:
                self.cluster.kubectl(
                    "delete", "tj", f"soak-{i - 2:05d}", "-n", self.namespace, "--wait=false"
                )
                self.deleted += 1
            i += 1
            self.stop.wait(self.every)


def sample(op: Operator, minutes: float, log: list[tuple[float, float]]) -> None:
    start = time.monotonic()
    end = start + minutes * 60
    while time.monotonic() < end:
        if op.process.poll() is not None:
            raise SystemExit(f"the operator exited with {op.process.returncode}")
        log.append((time.monotonic() - start, rss_mib(op.process.pid)))
        print(f"  t={log[-1][0]:7.0f}s  rss={log[-1][1]:7.1f} MiB", flush=True)
        time.sleep(10)


def summary(
    samples: list[tuple[float, float]], warmup: float, op: Operator, extra: dict[str, Any]
) -> dict[str, Any]:
    after = [r for t, r in samples if t >= warmup * 60] or [r for _, r in samples]
    start = sum(after[:3]) / len(after[:3])
    end = sum(after[-3:]) / len(after[-3:])
    return {
        "samples": len(samples),
        "rss_first_mib": round(samples[0][1], 1),
        "rss_after_warmup_mib": round(start, 1),
        "rss_end_mib": round(end, 1),
        "rss_peak_mib": round(max(r for _, r in samples), 1),
        "rss_growth_pct": round((end - start) / start * 100, 2),
        "passes": {k: op.metric("modelworks_reconcile_total", kind=k) for k in KINDS},
        "pass_errors": op.metric("modelworks_reconcile_errors_total"),
        **extra,
    }


def soak(cluster: Cluster, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ns = create_namespace(cluster, f"soak-{uuid.uuid4().hex[:5]}")
    try:
        with mlflow_server(tmp / "mlflow") as mlflow:
            version, profile = registered_model(mlflow.uri, f"soak-{ns}")
            traffic = FakeTraffic(profile)
            prom = traffic.serve()
            url = f"http://127.0.0.1:{prom.server_address[1]}"
            with run_operator(
                cluster, tmp, namespaces=ns, mlflow_tracking_uri=mlflow.uri, workers="2"
            ) as op:
                for obj in serving_objects(f"soak-{ns}", version, url, args.interval):
                    cluster.apply(obj, "-n", ns)
                eventually(
                    lambda: (
                        (cluster.get("dmon", "srv-drift", ns) or {})
                        .get("status", {})
                        .get("lastCheckTime")
                    ),
                    timeout=180,
                    what="the first drift check",
                )
                churn = Churn(cluster, ns, args.churn_every)
                churn.start()
                samples: list[tuple[float, float]] = []
                sample(op, args.minutes, samples)
                churn.stop.set()
                churn.join(60)
                dmon = cluster.get("dmon", "srv-drift", ns) or {}
                extra = {
                    "minutes": args.minutes,
                    "warmup_minutes": args.warmup,
                    "prometheus_queries": traffic.queries,
                    "drift_checks": traffic.queries // 2,
                    "last_verdict": (dmon.get("status") or {}).get("verdict"),
                    "trainingjobs_created": churn.created,
                    "trainingjobs_deleted": churn.deleted,
                }
                result = summary(samples, args.warmup, op, extra)
                prom.shutdown()
                return result
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0, help="minutes before the baseline")
    p.add_argument("--interval", type=int, default=15, help="drift check interval, s")
    p.add_argument("--churn-every", type=float, default=20.0, help="s between TrainingJobs")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="modelworks-soak-") as tmp,
        cluster_session() as cluster,
    ):
        result = soak(cluster, args, Path(tmp))
    print(json.dumps(result, indent=2))
    growth = result["rss_growth_pct"]
    print(
        f"RSS {result['rss_after_warmup_mib']} -> {result['rss_end_mib']} MiB after warm-up: "
        f"{growth:+.2f} % (target < 5 %); {result['drift_checks']} drift checks, "
        f"{result['trainingjobs_created']} TrainingJobs, passes {result['passes']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if growth < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
