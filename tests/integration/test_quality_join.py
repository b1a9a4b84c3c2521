"""The labelled window read from the real S3 store (SeaweedFS) in the documented layout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from modelworks.clients.objectstore import parse_s3
from modelworks.quality.join import read_labelled
from tests.quality_data import at, write_capture, write_feedback
from tests.support import Cluster, ObjectStore, object_store

pytestmark = pytest.mark.integration


@pytest.fixture
def destination(cluster: Cluster) -> Iterator[tuple[ObjectStore, str]]:
    store = object_store(cluster)
    uri = f"s3://{store.bucket}/t-quality-{uuid.uuid4().hex[:10]}"
    yield store, uri
    store.filesystem().delete_dir(parse_s3(uri).path)


def test_join_on_s3(destination: tuple[ObjectStore, str]) -> None:
    store, uri = destination
    s3, root = store.filesystem(), parse_s3(uri).path
    rows = [
        {
            "inference_id": f"r{i}",
            "time": at(f"2026-11-30T1{i % 3}:0{i % 10}:00"),
            "prediction": float(i % 2),
            "scores": [0.5, 0.5],
        }
        for i in range(30)
    ]
    write_capture(s3, root, rows)
    write_feedback(
        s3, root, [(f"r{i}", float(i % 2), at("2026-11-30T13:00:00")) for i in range(0, 30, 2)]
    )
    write_feedback(
        s3,
        root,
        [("r1", 1, at("2026-11-30T13:00:00")), ("nope", 0, at("2026-11-30T13:00:00"))],
        csv=True,
    )

    got = read_labelled(
        s3,
        uri,
        at("2026-11-30T10:00:00"),
        at("2026-11-30T12:00:00"),
        model="churn",
        columns=["inference_id", "scores"],
    )

    expected = {f"r{i}" for i in range(30) if i % 3 != 2 and (i % 2 == 0 or i == 1)}
    assert set(got.table["inference_id"].to_pylist()) == expected
    assert got.table.column_names == ["inference_id", "scores", "label"]
    assert got.captured == 20
    assert got.unmatched == 1 + len([i for i in range(0, 30, 2) if i % 3 == 2])
