"""The snapshot of captured, labelled rows: holdout split, digest, manifest, reuse."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from modelworks import snapshot
from modelworks.snapshot import Config, TooFewRows, build, in_holdout, result, write

CONFIG = Config(
    destination="s3://capture/churn",
    namespace="ns1",
    monitor="watch",
    start="2026-11-30T10:00:00Z",
    end="2026-11-30T11:00:00Z",
    target="churned",
    min_rows=10,
    holdout_fraction=0.25,
    model="churn",
)


def labelled(n: int, unlabelled: int = 0) -> pa.Table:
    ids = [f"id-{i:04d}" for i in range(n + unlabelled)]
    return pa.table(
        {
            "inference_id": ids,
            "request_id": ids,
            "model": ["churn"] * len(ids),
            "version": ["1"] * len(ids),
            "tenure_months": [float(i) for i in range(len(ids))],
            "contract": ["one-year"] * len(ids),
            "prediction": [1.0] * len(ids),
            "scores": [[0.2, 0.8]] * len(ids),
            "label": [float(i % 2) for i in range(n)] + [None] * unlabelled,
        }
    )


def read(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


@pytest.mark.parametrize(
    ("ident", "fraction", "expected"),
    [("a", 0.0, False), ("a", 1.0, True), ("abc", 0.2, None), ("xyz", 0.2, None)],
)
def test_in_holdout_is_the_hash_of_the_id(
    ident: str, fraction: float, expected: bool | None
) -> None:
    h = int.from_bytes(hashlib.sha256(ident.encode()).digest()[:8], "big") / 2**64
    assert in_holdout(ident, fraction) == (h < fraction if expected is None else expected)


def test_build_keeps_labelled_rows_features_and_the_renamed_label() -> None:
    snap = build(labelled(200, unlabelled=30), CONFIG)
    train, holdout = read(snap.train), read(snap.holdout)
    assert train.column_names == ["tenure_months", "contract", "churned"]
    assert holdout.column_names == train.column_names
    assert snap.rows + snap.holdout_rows == 200
    assert (snap.rows, snap.holdout_rows) == (train.num_rows, holdout.num_rows)
    expected_holdout = sum(in_holdout(f"id-{i:04d}", 0.25) for i in range(200))
    assert snap.holdout_rows == expected_holdout
    assert 30 <= snap.holdout_rows <= 70
    assert snap.ids_digest == snapshot.ids_digest(f"id-{i:04d}" for i in range(200))


def test_digest_is_over_the_bytes_and_ignores_row_order() -> None:
    table = labelled(100)
    snap = build(table, CONFIG)
    expected = "sha256-" + hashlib.sha256(snap.train + snap.holdout).hexdigest()[:16]
    assert snap.digest == expected
    shuffled = table.take(pa.array(list(range(99, -1, -1))))
    assert build(shuffled, CONFIG).digest == snap.digest
    noted = table.replace_schema_metadata({"modelworks.unmatched_labels": "7"})
    assert build(noted, CONFIG).digest == snap.digest
    fewer = table.slice(0, 99)
    assert build(fewer, CONFIG).digest != snap.digest


def test_listed_columns_are_kept_and_must_exist() -> None:
    snap = build(labelled(50), Config(**{**CONFIG.__dict__, "columns": ("contract",)}))
    assert read(snap.train).column_names == ["contract", "churned"]
    with pytest.raises(KeyError, match="age"):
        build(labelled(50), Config(**{**CONFIG.__dict__, "columns": ("age",)}))


def test_too_few_labelled_rows_names_the_field() -> None:
    with pytest.raises(TooFewRows, match=r"9 labelled rows .*spec.retrain.dataset.minRows 10"):
        build(labelled(9, unlabelled=50), CONFIG)


def test_write_then_reuse_never_overwrites(tmp_path: Path) -> None:
    local = fs.SubTreeFileSystem(str(tmp_path), fs.LocalFileSystem())
    snap = build(labelled(100), CONFIG)
    base = tmp_path / "capture" / "churn" / "datasets" / "ns1" / "watch" / snap.digest
    base.mkdir(parents=True)
    assert write(local, CONFIG, snap, "2026-11-30T11:00:05Z") is True
    assert (base / "train.parquet").read_bytes() == snap.train
    assert (base / "holdout.parquet").read_bytes() == snap.holdout
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["digest"] == snap.digest
    assert manifest["window"] == {"start": CONFIG.start, "end": CONFIG.end}
    assert (manifest["rows"], manifest["holdoutRows"]) == (snap.rows, snap.holdout_rows)
    assert manifest["monitor"] == "ns1/watch"
    assert write(local, CONFIG, snap, "2026-11-30T12:00:00Z") is False
    assert json.loads((base / "manifest.json").read_text())["created"] == "2026-11-30T11:00:05Z"


def test_result_points_at_the_snapshot_files() -> None:
    snap = build(labelled(100), CONFIG)
    out = result(CONFIG, snap, reused=True)
    base = f"s3://capture/churn/datasets/ns1/watch/{snap.digest}"
    assert out["uri"] == f"{base}/train.parquet"
    assert out["holdoutUri"] == f"{base}/holdout.parquet"
    assert (out["digest"], out["rows"], out["reused"]) == (snap.digest, snap.rows, True)


def test_main_reports_an_error_as_text(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    assert snapshot.main("{}", termination_log=log) == 1
    assert log.read_text().startswith("KeyError: 'destination'")
