"""Benchmark: ``modelworks serve`` against ``mlflow models serve``, same model, same load;
and ``modelworks serve`` with data capture at 100 % against without.

One run: a real MLflow server on loopback, the example churn model trained and
registered once, a real S3 store (the cluster's SeaweedFS when ``MODELWORKS_S3_*`` is
set, else one of its own), then each server in turn (same worker count, same port kind,
same payload) under the same wrk load from loopback. Printed: requests per second and
p50/p99 latency for each, and the ratios. Modelworks also exports its metrics and
feature histograms during the run (checked at the end: the counts must match), and
with capture on, the rows it captured, wrote and dropped.

    python bench/serving.py --duration 20 --connections 8 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.support import eventually, free_port, mlflow_server, seaweedfs_server  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ROW = {
    "tenure_months": 3.0,
    "monthly_charges": 90.5,
    "support_calls": 4,
    "age": 30.0,
    "contract": "month-to-month",
    "payment_method": "check",
}


def train_and_register(uri: str) -> str:
    from modelworks.clients.mlflow import Registry

    registry = Registry(uri)
    exp = registry.ensure_experiment("bench-serving")
    run = registry.ensure_run(exp, f"bench/{time.time()}", run_name="bench", tags={}, params={})
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_RUN_ID=run.run_id,
        MODELWORKS_HYPERPARAMETERS='{"n_estimators": 100}',
        PYTHONPATH=str(ROOT / "operator"),
    )
    subprocess.run(
        [sys.executable, str(ROOT / "examples/trainers/churn.py")],
        env=env,
        check=True,
        capture_output=True,
    )
    version = registry.register("churn-bench", registry.get_run(run.run_id), "model", tags={})
    return f"models:/churn-bench/{version.version}"


def ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wrk(port: int, body: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--latency",
            "-s",
            script.name,
            f"http://127.0.0.1:{port}/invocations",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{out}")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50": ms("50"),
        "p99": ms("99"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
        "requests": float(requests),
    }


def run_server(
    cmd: list[str], env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    eventually(lambda: ping(port) or proc.poll() is not None, timeout=180, what=" ".join(cmd[:3]))
    if proc.poll() is not None:
        raise SystemExit(f"{cmd[0]} exited:\n{log.read_text()[-2000:]}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


SERVERS = ("mlflow models serve", "modelworks serve", "modelworks + capture")


def capture_counts(text: str) -> dict[str, float]:
    def total(metric: str) -> float:
        return sum(float(m) for m in re.findall(rf"^{metric}\{{[^}}]*\}} ([\d.e+]+)$", text, re.M))

    return {
        "captured": total("modelworks_capture_rows_total"),
        "written": total("modelworks_capture_written_rows_total"),
        "dropped": total("modelworks_capture_dropped_rows_total"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternate the servers this many times"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    body = json.dumps({"dataframe_records": [ROW] * args.rows})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    with (
        tempfile.TemporaryDirectory() as d,
        mlflow_server(Path(d) / "mlflow") as mlflow,
        seaweedfs_server(Path(d) / "weed") as store,
    ):
        model_uri = train_and_register(mlflow.uri)
        env = dict(
            os.environ, MLFLOW_TRACKING_URI=mlflow.uri, PATH=f"{VENV_BIN}:{os.environ['PATH']}"
        )
        # A short flush interval: the measured window includes the writes, not only buffering.
        capture = json.dumps(
            {"destination": f"s3://{store.bucket}/bench-{int(time.time())}", "flushInterval": "5s"}
        )
        envs = {"modelworks + capture": {**env, **store.env(), "MODELWORKS_DATA_CAPTURE": capture}}
        servers = {
            "mlflow models serve": lambda port: [
                str(VENV_BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                str(args.workers),
            ],
            "modelworks serve": lambda port: [
                str(VENV_BIN / "modelworks"),
                "serve",
                "--model-uri",
                model_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
        }
        servers["modelworks + capture"] = servers["modelworks serve"]
        for round_ in range(args.rounds):
            for name, cmd in servers.items():
                port = free_port()
                log = Path(d) / f"{name.replace(' ', '')}-{round_}.log"
                proc = run_server(cmd(port), envs.get(name, env), port, log)
                try:
                    wrk(port, body, 3, args.connections, args.threads)  # warm-up
                    results[name].append(
                        wrk(port, body, args.duration, args.connections, args.threads)
                    )
                    if name.startswith("modelworks"):
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{port}/metrics", timeout=10
                        ) as r:
                            text = r.read().decode()
                        counted = sum(
                            float(m)
                            for m in re.findall(
                                r'^modelworks_serving_requests_total\{code="200"[^}]*\} ([\d.e+]+)$',
                                text,
                                re.M,
                            )
                        )
                        served = sum(
                            float(m)
                            for m in re.findall(
                                r"^modelworks_serving_rows_total\{[^}]*\} ([\d.e+]+)$", text, re.M
                            )
                        )
                        results[name][-1]["counted"] = counted
                        results[name][-1]["rows_counted"] = served
                        results[name][-1].update(capture_counts(text))
                finally:
                    stop(proc)

    def best(name: str) -> dict[str, float]:
        return max(results[name], key=lambda r: r["rps"])

    ml, mw, mwc = (
        best("mlflow models serve"),
        best("modelworks serve"),
        best("modelworks + capture"),
    )
    print(
        f"\nchurn GradientBoosting pipeline, {args.rows} row(s)/request, {args.workers} worker(s), "
        f"{args.connections} connections, {args.duration}s x {args.rounds} rounds (best round shown)"
    )
    print(f"{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for label, r in (
        ("mlflow models serve", ml),
        ("modelworks serve", mw),
        ("modelworks + capture", mwc),
    ):
        print(f"{label:22}{r['rps']:>10.1f}{r['p50']:>10.2f}{r['p99']:>10.2f}{r['errors']:>8.0f}")
    print(
        f"{'ratio (mw / mlflow)':22}{mw['rps'] / ml['rps']:>10.2f}{mw['p50'] / ml['p50']:>10.2f}{mw['p99'] / ml['p99']:>10.2f}"
    )
    print(
        f"{'ratio (capture / off)':22}{mwc['rps'] / mw['rps']:>10.2f}{mwc['p50'] / mw['p50']:>10.2f}{mwc['p99'] / mw['p99']:>10.2f}"
    )
    print(
        "all rounds (req/s): "
        + ", ".join(f"{n} {[round(r['rps']) for r in results[n]]}" for n in SERVERS)
    )
    print(
        f"capture at 100 %: throughput cost {(1 - mwc['rps'] / mw['rps']) * 100:.1f} % (target <= 5 %); "
        f"{mwc.get('captured', 0):.0f} rows captured, {mwc.get('written', 0):.0f} written by the "
        f"end of the round, {mwc.get('dropped', 0):.0f} dropped"
    )
    print(
        f"modelworks /metrics counted {mw.get('counted', 0):.0f} successful requests and "
        f"{mw.get('rows_counted', 0):.0f} rows into the feature histograms "
        f"(wrk sent {mw['requests']:.0f} + warm-up)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
