"""Send churn scoring requests to a model server, as production traffic would.

    python hack/traffic.py URL [--seconds 60] [--rows 50] [--shift | --world changed]
                           [--feedback URL --label-delay 5] [--ids FILE]

Rows are drawn like the example trainer's data. ``--shift`` moves two features
(tenure_months, monthly_charges) the way a changed customer base would, leaving the
other four alone. ``--world changed`` sends the changed world of the example trainer
(``changed_world``: those inputs shifted *and* a different reason to churn) and, with
``--feedback``, posts each answered row's true label to the server's ``/feedback``
``--label-delay`` seconds after the answer, as a labelling pipeline would (the bearer
token is read from the environment variable MODELWORKS_FEEDBACK_TOKEN). ``--ids`` appends
every answered inference id to a file. Prints one summary line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.trainers.churn import TARGET, changed_world, synthetic_churn

TOKEN_ENV = "MODELWORKS_FEEDBACK_TOKEN"
LABEL_BATCH_SECONDS = 2.0


def frame(seed: int, rows: int, shift: bool, world: str) -> Any:
    if world == "changed":
        return changed_world(rows, seed)
    df = synthetic_churn(rows, seed)
    if shift:
        df["tenure_months"] = df["tenure_months"] * 3 + 40
        df["monthly_charges"] = (df["monthly_charges"] + 60).clip(upper=200)
    return df


def payload(df: Any) -> bytes:
    inputs = df.drop(columns=[TARGET])
    split = json.loads(inputs.to_json(orient="split", index=False))
    return json.dumps({"dataframe_split": split}).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status, resp.headers.get("X-Request-Id", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def row_ids(request_id: str, rows: int) -> list[str]:
    """The inference id of each row: the request's id for one row, ``<id>/<i>`` else."""
    return [request_id] if rows == 1 else [f"{request_id}/{i}" for i in range(rows)]


def send_labels(url: str, labels: list[dict[str, Any]]) -> bool:
    headers = {"Content-Type": "application/json"}
    headers["Authorization"] = f"Bearer {os.environ.get(TOKEN_ENV, '')}"
    status, _ = post(url, json.dumps({"labels": labels}).encode(), headers)
    return status == 200


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the server's /invocations URL")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("--shift", action="store_true")
    p.add_argument("--world", choices=["training", "changed"], default="training")
    p.add_argument("--feedback", help="the server's /feedback URL: post the true labels")
    p.add_argument("--label-delay", type=float, default=5.0)
    p.add_argument("--ids", type=Path, help="append each answered inference id here")
    args = p.parse_args()
    deadline = time.monotonic() + args.seconds
    sent = errors = labelled = 0
    seed = int(time.time())
    pending: deque[tuple[float, list[dict[str, Any]]]] = deque()
    posted = time.monotonic()
    while time.monotonic() < deadline or pending:
        now = time.monotonic()
        due: list[dict[str, Any]] = []
        if now - posted >= LABEL_BATCH_SECONDS or now >= deadline:
            while pending and (pending[0][0] <= now or now >= deadline + args.label_delay):
                due += pending.popleft()[1]
            posted = now
        if due:  # what is due in one request: a labelling pipeline batches its labels
            labelled += len(due) if send_labels(args.feedback, due) else 0
        if now >= deadline:
            time.sleep(0.2)
            continue
        seed += 1
        df = frame(seed, args.rows, args.shift, args.world)
        status, rid = post(args.url, payload(df), {"Content-Type": "application/json"})
        sent += 1
        if status != 200:
            errors += 1
            continue
        ids = row_ids(rid, len(df))
        if args.ids:
            with args.ids.open("a") as f:
                f.writelines(i + "\n" for i in ids)
        if args.feedback and rid:
            truth = df[TARGET].tolist()
            labels = [{"inference_id": i, "label": int(t)} for i, t in zip(ids, truth, strict=True)]
            pending.append((now + args.label_delay, labels))
        time.sleep(0.05)
    rows = sent * args.rows
    print(f"traffic: {sent} requests, {errors} errors, {rows} rows, {labelled} labels", flush=True)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
