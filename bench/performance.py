"""Benchmark: the performance check against what a user would write, same data, same run.

One run generates (fixed seed) ``--rows`` captured rows in the documented layout under a
local directory: 24 hour partitions of Parquet (inference id, time, model, version, 8
numeric features, ``prediction``, ``scores``), and their labels as feedback Parquet with
5 % corrected labels (a later label for the same id wins) and 1 % unknown ids. Then, each
in its own fresh process:

- ``modelworks``: :func:`modelworks.quality.check.main`, what the performance Job runs —
  the window's partitions, the columns it needs (the positive class's score taken out of
  the ``scores`` lists while scanning, capture and labels read at once), one Arrow hash
  pass over both id columns for the join (two halves on two threads), numpy metrics,
  Arrow buffers from the system allocator, pandas kept out of the process as the command
  keeps it;
- ``pandas``: ``pd.read_parquet`` of capture and feedback (the same columns: a fair user),
  the window filter, ``sort_values`` + ``drop_duplicates`` for the latest label,
  ``merge``, and scikit-learn's metrics.

Both compute roc_auc, accuracy, f1, precision, recall and log_loss over the window with a
1-hour label delay; the bench checks they agree. Wall time of the work (after imports)
and peak RSS of the whole process (``ru_maxrss``). Targets: at least 5x faster, at most
half the memory.

    python bench/performance.py                  # 1M rows
    python bench/performance.py --rows 100000    # a quick run
    python bench/performance.py --dir /tmp/perf  # keep (and reuse) the generated data
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

METRICS = ["roc_auc", "accuracy", "f1", "precision", "recall", "log_loss"]
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
HOURS = 24
DELAY_SECONDS = 3600
FEATURES = 8


def generate(root: Path, rows: int, seed: int = 14) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    per_hour = rows // HOURS
    all_ids: list[Any] = []
    for h in range(HOURS):
        n = per_hour if h < HOURS - 1 else rows - per_hour * (HOURS - 1)
        hour = START + timedelta(hours=h)
        ids = np.char.add(f"h{h:02d}-", np.arange(n).astype(str))
        ms = int(hour.timestamp() * 1000) + np.sort(rng.integers(0, 3_600_000, n))
        x = rng.normal(size=(n, FEATURES))
        p1 = 1 / (1 + np.exp(-(x[:, 0] + 0.5 * x[:, 1])))
        cols: dict[str, Any] = {
            "inference_id": pa.array(ids, pa.string()),
            "request_id": pa.array(ids, pa.string()),
            "time": pa.array(ms, pa.timestamp("ms", tz="UTC")),
            "model": pa.array(["churn"] * n),
            "version": pa.array(["1"] * n),
        }
        cols.update({f"f{i}": x[:, i] for i in range(FEATURES)})
        cols["prediction"] = (p1 > 0.5).astype(np.float64)
        cols["scores"] = pa.FixedSizeListArray.from_arrays(
            np.column_stack([1 - p1, p1]).ravel(), 2
        ).cast(pa.list_(pa.float64()))
        part = root / "capture/model=churn/version=1" / f"date={hour:%Y-%m-%d}/hour={hour:%H}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), part / "pod-1-0.parquet")
        label = (rng.random(n) < p1 * 0.9 + 0.05).astype(np.float64)
        all_ids.append((ids, label, hour))
    for ids, label, hour in all_ids:
        n = len(ids)
        fix = rng.random(n) < 0.05
        unknown = np.char.add("unknown-", np.arange(n // 100).astype(str))
        got = hour + timedelta(minutes=90)
        first = np.where(fix, 1 - label, label)  # a corrected id's first label is wrong
        table = pa.table(
            {
                "inference_id": pa.array(np.concatenate([ids, ids[fix], unknown]), pa.string()),
                "label": np.concatenate([first, label[fix], np.zeros(n // 100)]),
                "time": pa.array(
                    [got] * n + [got + timedelta(minutes=5)] * int(fix.sum()) + [got] * (n // 100),
                    pa.timestamp("ms", tz="UTC"),
                ),
            }
        )
        part = root / f"feedback/date={got:%Y-%m-%d}/hour={got:%H}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / f"labels-{hour:%H}.parquet")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_modelworks(root: Path) -> dict[str, Any]:
    from modelworks.quality.lean import refuse_unused

    refuse_unused()  # as `modelworks performance` does: pyarrow would import pandas
    from modelworks.quality.check import main

    config = {
        "destination": str(root),
        "model": "churn",
        "start": START.isoformat(),
        "end": (START + timedelta(hours=HOURS)).isoformat(),
        "labelDelaySeconds": DELAY_SECONDS,
        "metrics": METRICS,
        "positiveClass": 1,
    }
    with tempfile.TemporaryDirectory(prefix="mw-perf-log-") as tmp:
        report = Path(tmp) / "termination-log"
        t0, c0 = time.perf_counter(), cpu_seconds()
        code = main(json.dumps(config), termination_log=report)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        assert code == 0, report.read_text()
        out = json.loads(report.read_text())
    return {"seconds": seconds, "cpu": cpu, "rows": out["labelledRows"], **out["metrics"]}


def run_pandas(root: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    from sklearn import metrics as skm

    t0, c0 = time.perf_counter(), cpu_seconds()
    cap = pd.read_parquet(
        root / "capture",
        columns=["inference_id", "time", "model", "prediction", "scores"],
        partitioning=None,  # the files carry model and version; hive typing would clash
    )
    end = pd.Timestamp(START + timedelta(hours=HOURS) - timedelta(seconds=DELAY_SECONDS))
    cap = cap[
        (cap["model"] == "churn") & (cap["time"] >= pd.Timestamp(START)) & (cap["time"] < end)
    ]
    fb = pd.read_parquet(
        root / "feedback", columns=["inference_id", "label", "time"], partitioning=None
    )
    fb = fb.sort_values("time", kind="stable").drop_duplicates("inference_id", keep="last")
    df = cap.merge(fb[["inference_id", "label"]], on="inference_id", how="inner")
    score = np.array(df["scores"].tolist())[:, 1]
    y, pred = df["label"].to_numpy(), df["prediction"].to_numpy()
    out = {
        "roc_auc": skm.roc_auc_score(y, score),
        "accuracy": skm.accuracy_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "log_loss": skm.log_loss(y, score),
    }
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"seconds": seconds, "cpu": cpu, "rows": len(df), **out}


def child(which: str, root: Path) -> None:
    result = run_modelworks(root) if which == "modelworks" else run_pandas(root)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(which: str, root: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", which, "--dir", str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def ensure_baseline() -> None:
    """pandas and scikit-learn for the user's version (the dev venv has them; else pip)."""
    import importlib.util

    wanted = {"pandas": "pandas", "sklearn": "scikit-learn"}
    missing = [name for module, name in wanted.items() if importlib.util.find_spec(module) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", *missing], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", choices=["modelworks", "pandas"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir)
        return
    ensure_baseline()
    with tempfile.TemporaryDirectory(prefix="mw-perf-") as tmp:
        root = args.dir or Path(tmp)
        if (root / "capture").exists():
            print(f"reusing the data under {root}")
        else:
            t0 = time.perf_counter()
            generate(root, args.rows)
            took = time.perf_counter() - t0
            print(f"generated {args.rows} captured rows + labels in {took:.1f}s")
        mw, pdx = measure("modelworks", root), measure("pandas", root)
    print(f"{'':12}{'seconds':>10}{'cpu s':>10}{'peak MiB':>10}{'rows':>10}")
    for name, r in (("modelworks", mw), ("pandas", pdx)):
        print(
            f"{name:12}{r['seconds']:>10.2f}{r['cpu']:>10.2f}{r['peak_mib']:>10.0f}{r['rows']:>10}"
        )
    for m in METRICS:
        print(f"  {m:10} modelworks {mw[m]:.10f}  pandas+sklearn {pdx[m]:.10f}")
        assert abs(mw[m] - pdx[m]) < 1e-9, m
    assert mw["rows"] == pdx["rows"]
    speed, memory = pdx["seconds"] / mw["seconds"], mw["peak_mib"] / pdx["peak_mib"]
    cpu = pdx["cpu"] / mw["cpu"]
    print(f"speed-up {speed:.1f}x wall (target >= 5x): {'ok' if speed >= 5 else 'MISSED'}")
    print(f"speed-up {cpu:.1f}x cpu time (target >= 5x): {'ok' if cpu >= 5 else 'MISSED'}")
    print(f"memory {memory:.2f} of pandas (target <= 0.5): {'ok' if memory <= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
