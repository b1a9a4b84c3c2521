"""Benchmark: N TrainingJobs at once against N bare batch/v1 Jobs, pods on kwok nodes.

The peer is Kubernetes itself: the same N Jobs created directly, which is the floor any
training operator builds on. Both run in the same cluster in the same run; kwok
completes each pod ~2 s after it starts. For Modelworks every TrainingJob also gets a
real MLflow experiment run (SQLite-backed server on loopback) before its Job exists.

Printed: time until every Job exists, time until every status is final, the ratio to
bare Jobs, operator peak RSS, API requests per object (every request the operator makes
outside kopf's watches, status writes and Events included, and what the watch sees
written to each TrainingJob), and writes per minute once everything has settled (the
target is zero).

    python bench/trainingjobs.py --count 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.support import Cluster, cluster_session, mlflow_server, run_operator  # noqa: E402

KWOK_POD: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def bare_job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"job-{i:05d}"},
        "spec": {
            "backoffLimit": 0,
            "completionMode": "Indexed",
            "template": {
                "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "2s"}},
                "spec": {
                    "restartPolicy": "Never",
                    **KWOK_POD,
                    "containers": [{"name": "trainer", "image": "modelworks:0.1.0"}],
                },
            },
        },
    }


def training_job(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": f"tj-{i:05d}"},
        "spec": {
            "image": "modelworks:0.1.0",
            "hyperparameters": {"seed": i},
            "experiment": "bench",
            "podTemplate": {
                **KWOK_POD,
                "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "2s"},
            },
        },
    }


def create_all(cluster: Cluster, namespace: str, objs: list[dict[str, Any]], tmp: Path) -> None:
    path = tmp / f"{namespace}.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    cluster.kubectl("create", "-n", namespace, "-f", str(path), timeout=1800)


def count_lines(cluster: Cluster, namespace: str, resource: str, jsonpath: str) -> list[str]:
    out = cluster.kubectl(
        "get", resource, "-n", namespace, "-o", f"jsonpath={jsonpath}", timeout=300
    ).stdout
    return [line for line in out.splitlines() if line]


def wait_until(probe: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1.0)
    return time.monotonic()


class Watch:
    """Counts the watch events on one resource in one namespace: every MODIFIED is a write."""

    def __init__(self, cluster: Cluster, resource: str, namespace: str) -> None:
        self.proc = subprocess.Popen(
            [
                cluster.kubectl_path,
                "--kubeconfig",
                cluster.kubeconfig,
                "get",
                resource,
                "-n",
                namespace,
                "-w",
                "--output-watch-events",
                "-o",
                'jsonpath={.type}{"\\n"}',
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.counts: dict[str, int] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind = line.strip()
            if kind:
                self.counts[kind] = self.counts.get(kind, 0) + 1

    def modified(self) -> int:
        return self.counts.get("MODIFIED", 0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_bare_jobs(cluster: Cluster, n: int, tmp: Path) -> dict[str, float]:
    ns = f"bench-jobs-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    try:
        t0 = time.monotonic()
        create_all(cluster, ns, [bare_job(i) for i in range(n)], tmp)
        t_created = time.monotonic()
        done = wait_until(
            lambda: (
                sum(
                    1
                    for s in count_lines(
                        cluster, ns, "jobs", '{range .items[*]}{.status.succeeded}{"\\n"}{end}'
                    )
                    if s == "1"
                )
                >= n
            ),
            1800,
            "the bare Jobs to complete",
        )
        return {"exist": t_created - t0, "final": done - t0}
    finally:
        # Wait for the namespace to go, so its garbage collection does not count as
        # writes in the settled window of the next part.
        cluster.kubectl("delete", "namespace", ns, "--timeout=600s", check=False, timeout=700)


def bench_modelworks(cluster: Cluster, n: int, tmp: Path, settle: float) -> dict[str, float]:
    ns = f"bench-tj-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", ns)
    try:
        with (
            mlflow_server(tmp / "mlflow") as mlflow,
            run_operator(cluster, tmp, namespaces=ns, mlflow_tracking_uri=mlflow.uri) as op,
        ):
            tj_watch, job_watch = Watch(cluster, "trainingjobs", ns), Watch(cluster, "jobs", ns)
            t0 = time.monotonic()
            create_all(cluster, ns, [training_job(i) for i in range(n)], tmp)
            t_created = time.monotonic()
            t_jobs = wait_until(
                lambda: (
                    len(
                        count_lines(
                            cluster, ns, "jobs", '{range .items[*]}{.metadata.name}{"\\n"}{end}'
                        )
                    )
                    >= n
                ),
                1800,
                "every Job to exist",
            )
            t_final = wait_until(
                lambda: (
                    sum(
                        1
                        for p in count_lines(
                            cluster,
                            ns,
                            "trainingjobs",
                            '{range .items[*]}{.status.phase}{"\\n"}{end}',
                        )
                        if p in ("Succeeded", "Failed")
                    )
                    >= n
                ),
                3600,
                "every TrainingJob to be final",
            )
            failed = [
                p
                for p in count_lines(
                    cluster, ns, "trainingjobs", '{range .items[*]}{.status.phase}{"\\n"}{end}'
                )
                if p != "Succeeded"
            ]
            tj_writes = tj_watch.modified()
            client = {
                v: op.metric("modelworks_kube_requests_total", verb=v)
                for v in ("GET", "PATCH", "POST", "DELETE")
            }
            status_writes = op.metric("modelworks_status_writes_total")
            events = op.metric("modelworks_events_total")
            # Settled: everything is final; watch the writes for `settle` seconds.
            w0 = {v: op.metric("modelworks_kube_requests_total", verb=v) for v in WRITE_VERBS}
            m0 = tj_watch.modified() + job_watch.modified()
            reads0 = op.metric("modelworks_kube_requests_total", verb="GET")
            time.sleep(settle)
            w1 = {v: op.metric("modelworks_kube_requests_total", verb=v) for v in WRITE_VERBS}
            m1 = tj_watch.modified() + job_watch.modified()
            tj_watch.stop()
            job_watch.stop()
            # The operator's client makes its status writes and Events too: counted once.
            settled_writes = sum(w1.values()) - sum(w0.values())
            settled_api = m1 - m0
            settled_reads = op.metric("modelworks_kube_requests_total", verb="GET") - reads0
            rss = peak_rss_mib(op.process.pid)
        return {
            "exist": t_jobs - t0,
            "created": t_created - t0,
            "final": t_final - t0,
            "not_succeeded": float(len(failed)),
            "rss": rss,
            "client_per_obj": sum(client.values()) / n,
            "client_get_per_obj": client["GET"] / n,
            "client_write_per_obj": (client["PATCH"] + client["POST"] + client["DELETE"]) / n,
            "status_writes_per_obj": status_writes / n,
            "events_per_obj": events / n,
            "api_tj_writes_per_obj": tj_writes / n,
            "settled_writes_per_min": (settled_writes + 0.0) * 60 / settle,
            "settled_api_writes_per_min": settled_api * 60 / settle,
            "settled_reads_per_min": settled_reads * 60 / settle,
        }
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds to watch writes once settled"
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    os.environ.setdefault("MODELWORKS_KEEP_CLUSTER", "1")
    with tempfile.TemporaryDirectory() as d, cluster_session() as cluster:
        tmp = Path(d)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        print(f"bench: {args.count} bare Jobs ...", file=sys.stderr)
        bare = bench_bare_jobs(cluster, args.count, tmp)
        print(f"bench: {args.count} TrainingJobs ...", file=sys.stderr)
        mw = bench_modelworks(cluster, args.count, tmp, args.settle)
    n = args.count
    print(f"\n{n} objects, pods on kwok nodes (~2 s each), one MLflow run per TrainingJob")
    print(f"{'':44}{'bare Jobs':>12}{'Modelworks':>12}{'ratio':>8}")
    print(
        f"{'time until every Job exists (s)':44}{bare['exist']:>12.1f}{mw['exist']:>12.1f}{mw['exist'] / bare['exist']:>8.2f}"
    )
    print(
        f"{'time until every status is final (s)':44}{bare['final']:>12.1f}{mw['final']:>12.1f}{mw['final'] / bare['final']:>8.2f}"
    )
    print(f"{'operator peak RSS (MiB)':44}{'':>12}{mw['rss']:>12.0f}")
    print(f"{'API requests per object (operator, all)':44}{'':>12}{mw['client_per_obj']:>12.2f}")
    print(
        f"{'  of which reads / writes':44}{'':>12}{mw['client_get_per_obj']:>6.2f} / {mw['client_write_per_obj']:.2f}"
    )
    print(f"{'status writes per object':44}{'':>12}{mw['status_writes_per_obj']:>12.2f}")
    print(f"{'Events per object':44}{'':>12}{mw['events_per_obj']:>12.2f}")
    print(
        f"{'writes to each TrainingJob (watch, all clients)':44}{'':>12}{mw['api_tj_writes_per_obj']:>12.2f}"
    )
    print(f"{'writes/min once settled (operator)':44}{'':>12}{mw['settled_writes_per_min']:>12.1f}")
    print(
        f"{'TrainingJob+Job changes/min settled (watch)':44}{'':>12}{mw['settled_api_writes_per_min']:>12.1f}"
    )
    print(f"{'reads/min once settled (operator)':44}{'':>12}{mw['settled_reads_per_min']:>12.1f}")
    if mw["not_succeeded"]:
        print(f"WARNING: {mw['not_succeeded']:.0f} TrainingJobs did not succeed")
    if args.json:
        print(json.dumps({"bare": bare, "modelworks": mw}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
