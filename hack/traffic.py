"""Send churn scoring requests to a model server, as production traffic would.

    python hack/traffic.py URL [--seconds 60] [--shift] [--rows 50]

Rows are drawn like the example trainer's data; ``--shift`` moves two features
(tenure_months, monthly_charges) the way a changed customer base would, leaving the
other four alone. Prints one summary line at the end: requests, errors, rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.trainers.churn import TARGET, synthetic_churn


def payload(seed: int, rows: int, shift: bool) -> bytes:
    df = synthetic_churn(rows, seed).drop(columns=[TARGET])
    if shift:
        df["tenure_months"] = df["tenure_months"] * 3 + 40
        df["monthly_charges"] = (df["monthly_charges"] + 60).clip(upper=200)
    return json.dumps(
        {"dataframe_split": json.loads(df.to_json(orient="split", index=False))}
    ).encode()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="the server's /invocations URL")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("--shift", action="store_true")
    args = p.parse_args()
    deadline = time.monotonic() + args.seconds
    sent = errors = 0
    seed = int(time.time())
    while time.monotonic() < deadline:
        seed += 1
        req = urllib.request.Request(
            args.url,
            data=payload(seed, args.rows, args.shift),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        except (urllib.error.URLError, OSError):
            errors += 1
        sent += 1
        time.sleep(0.05)
    print(f"traffic: {sent} requests, {errors} errors, {sent * args.rows} rows", flush=True)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
