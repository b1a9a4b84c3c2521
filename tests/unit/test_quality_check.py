"""The performance Job's code: join, score, report (termination message), errors as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm  # type: ignore[import-untyped]

from modelworks.quality.check import main
from tests.quality_data import at, write_capture, write_feedback


def config(root: str, **extra: object) -> str:
    base = {
        "destination": root,
        "model": "churn",
        "version": "1",
        "start": "2026-11-30T10:00:00Z",
        "end": "2026-11-30T12:00:00Z",
        "labelDelaySeconds": 600,
        "metrics": ["roc_auc", "accuracy", "f1", "precision", "recall", "log_loss"],
    }
    return json.dumps({**base, **extra})


def test_result_equals_sklearn(tmp_path: Path) -> None:
    from pyarrow import fs

    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(float)
    rows: list[dict[str, Any]] = [
        {
            "inference_id": f"i{i}",
            "time": at(f"2026-11-30T{10 + i // 100}:{(i % 100) % 50:02d}:00"),
            "prediction": float(p[i] > 0.5),
            "scores": [1 - p[i], p[i]],
        }
        for i in range(200)
    ]
    root = str(tmp_path / "d")
    write_capture(fs.LocalFileSystem(), root, rows)
    write_feedback(
        fs.LocalFileSystem(),
        root,
        [(f"i{i}", y[i], at("2026-11-30T12:30:00")) for i in range(200)]
        + [("ghost", 1.0, at("2026-11-30T12:30:00"))],
    )
    log = tmp_path / "termination"
    assert main(config(root), termination_log=log) == 0
    result = json.loads(log.read_text())
    keep = [i for i in range(200) if rows[i]["time"] < at("2026-11-30T11:50:00")]
    yk, pk = y[keep], p[keep]
    expected = {
        "roc_auc": skm.roc_auc_score(yk, pk),
        "accuracy": skm.accuracy_score(yk, pk > 0.5),
        "f1": skm.f1_score(yk, pk > 0.5),
        "precision": skm.precision_score(yk, pk > 0.5),
        "recall": skm.recall_score(yk, pk > 0.5),
        "log_loss": skm.log_loss(yk, pk),
    }
    assert result["labelledRows"] == len(keep)
    assert result["unmatchedLabels"] >= 1
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-12), name


def test_regression(tmp_path: Path) -> None:
    from pyarrow import fs

    root = str(tmp_path / "d")
    rows = [
        {"inference_id": f"r{i}", "time": at("2026-11-30T10:10:00"), "prediction": float(i)}
        for i in range(10)
    ]
    write_capture(fs.LocalFileSystem(), root, rows)
    labels = [float(i) + (0.5 if i % 2 else -0.25) for i in range(10)]
    write_feedback(
        fs.LocalFileSystem(),
        root,
        [(f"r{i}", labels[i], at("2026-11-30T10:20:00")) for i in range(10)],
    )
    log = tmp_path / "termination"
    cfg = config(root, task="regression", metrics=["rmse", "mae", "r2"])
    assert main(cfg, termination_log=log) == 0
    got = json.loads(log.read_text())["metrics"]
    pred = np.arange(10.0)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(labels, pred)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(labels, pred))
    assert got["r2"] == pytest.approx(skm.r2_score(labels, pred))


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ("not json", "JSONDecodeError"),
        (json.dumps({"metrics": ["accuracy"]}), "KeyError"),
    ],
)
def test_errors_are_text_and_exit_1(tmp_path: Path, cfg: str, needle: str) -> None:
    log = tmp_path / "termination"
    assert main(cfg, termination_log=log) == 1
    assert needle in log.read_text()


def test_empty_window_reports_no_metrics(tmp_path: Path) -> None:
    log = tmp_path / "termination"
    assert main(config(str(tmp_path / "none")), termination_log=log) == 0
    result = json.loads(log.read_text())
    assert result["labelledRows"] == 0 and result["metrics"] == {}


def test_command_leaves_pandas_out(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pyarrow import fs

    root = str(tmp_path / "d")
    write_capture(
        fs.LocalFileSystem(),
        root,
        [{"inference_id": "a", "time": at("2026-11-30T10:00:00"), "prediction": 1.0}],
    )
    write_feedback(fs.LocalFileSystem(), root, [("a", 1.0, at("2026-11-30T10:30:00"))])
    probe = (
        "import json, sys\n"
        "from modelworks.cli import main\n"
        f"code = main(['performance', '--config', {config(root, metrics=['accuracy'])!r}])\n"
        "print(json.dumps({'code': code, 'pandas': 'pandas' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert json.loads(out[0])["metrics"] == {"accuracy": 1.0}
    assert json.loads(out[-1]) == {"code": 0, "pandas": False}
