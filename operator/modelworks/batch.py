"""The batch drift check a DriftMonitor runs as a Job: load, score, report.

``modelworks drift --reference URI --reference-kind dataset|profile --current URI
--config JSON`` loads the datasets (CSV or Parquet, local or MLflow artifacts), scores
them with the drift engine (exact KS and Wasserstein on raw values), prints the result as
JSON and writes it, compacted to fit, to the container's termination message, where the
operator reads it. An error is written there as plain text, with exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.clients.datasets import load_columns, load_json
from modelworks.drift.engine import score_arrays
from modelworks.drift.profile import Profile
from modelworks.status.driftmonitor import compact, config_of, result_fields

TERMINATION_LOG = Path("/dev/termination-log")


def check(reference: str, kind: str, current: str, config: dict[str, Any]) -> dict[str, Any]:
    """Score ``current`` against ``reference``: the status fields of one check."""
    ref_key = "datasetUri" if kind == "dataset" else "profileUri"
    spec = DriftMonitorSpec.model_validate(
        {**config, "batch": {"currentUri": current}, "reference": {ref_key: reference}}
    )
    ref: Profile | dict[str, Any] = (
        Profile.from_json(load_json(reference)) if kind == "profile" else load_columns(reference)
    )
    # The exact tests sort every numeric column: one thread per CPU the Job may use.
    workers = max(1, min(4, len(os.sched_getaffinity(0))))
    result = score_arrays(ref, load_columns(current), config_of(spec), workers=workers)
    return result_fields(result)


def _report(text: str, path: Path) -> None:
    with contextlib.suppress(OSError):  # not in a pod: stdout is the report
        path.write_text(text)


def main(
    reference: str,
    kind: str,
    current: str,
    config_json: str,
    termination_log: Path = TERMINATION_LOG,
) -> int:
    try:
        fields = check(reference, kind, current, json.loads(config_json or "{}"))
    except Exception as exc:  # every failure is reported, whatever its type
        message = f"{type(exc).__name__}: {exc}"
        print(message, file=sys.stderr)
        _report(message[:3500], termination_log)
        return 1
    print(json.dumps(fields, indent=2))
    _report(json.dumps(compact(fields), separators=(",", ":")), termination_log)
    return 0
