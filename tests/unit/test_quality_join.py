"""The labelled window on a local directory in the documented layout (the same code reads S3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs

from modelworks.quality.join import (
    UNMATCHED_METADATA,
    encode_ids,
    labelled_window,
    latest_rows,
    read_labelled,
)
from tests.quality_data import at, write_capture, write_feedback


def row(i: str, time: str, prediction: float = 1.0) -> dict[str, object]:
    return {"inference_id": i, "time": at(time), "prediction": prediction, "scores": [0.3, 0.7]}


@pytest.fixture
def store(tmp_path: Path) -> tuple[fs.LocalFileSystem, str]:
    local = fs.LocalFileSystem()
    root = str(tmp_path / "d")
    write_capture(
        local,
        root,
        [
            row("before", "2026-11-30T09:59:59"),
            row("a", "2026-11-30T10:00:00"),
            row("b", "2026-11-30T10:30:00"),
            row("c", "2026-11-30T11:10:00"),
            row("late", "2026-11-30T11:50:00"),
            row("after", "2026-11-30T12:00:00"),
        ],
    )
    write_capture(local, root, [row("v2", "2026-11-30T10:15:00")], version="2")
    write_capture(local, root, [row("other", "2026-11-30T10:15:00")], model="other")
    write_feedback(
        local,
        root,
        [
            ("a", 0.0, at("2026-11-30T10:05:00")),
            ("b", 1.0, at("2026-11-30T10:40:00")),
            ("b", 0.0, at("2026-11-30T11:40:00")),
            ("late", 1.0, at("2026-11-30T11:55:00")),
            ("ghost", 1.0, at("2026-11-30T11:00:00")),
            ("v2", 1.0, at("2026-11-30T11:00:00")),
        ],
    )
    write_feedback(local, root, [("c", 1, at("2026-11-30T11:20:00"))], csv=True)
    return local, root


START, END = at("2026-11-30T10:00:00"), at("2026-11-30T12:00:00")


def labels(table: object) -> dict[str, object]:
    d = table.to_pydict()  # type: ignore[attr-defined]
    return dict(zip(d["inference_id"], d["label"], strict=True))


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (0, {"a": 0.0, "b": 0.0, "c": 1.0, "late": 1.0}),
        (15 * 60, {"a": 0.0, "b": 0.0, "c": 1.0}),
        (75 * 60, {"a": 0.0, "b": 0.0}),
        (3 * 3600, {}),
    ],
)
def test_window_label_delay_latest_label(
    store: tuple[fs.LocalFileSystem, str], delay: int, expected: dict[str, float]
) -> None:
    local, root = store
    got = read_labelled(
        local, root, START, END, label_delay_seconds=delay, model="churn", version="1"
    )
    assert labels(got.table) == expected
    assert got.captured == 4
    assert got.unmatched == 2  # "ghost" and "v2" (another version) match no captured row


def test_all_versions_and_projection(store: tuple[fs.LocalFileSystem, str]) -> None:
    local, root = store
    table = labelled_window(
        local, root, START, END, model="churn", columns=["inference_id", "scores", "prediction"]
    )
    assert table.column_names == ["inference_id", "scores", "prediction", "label"]
    assert labels(table) == {"a": 0.0, "b": 0.0, "c": 1.0, "late": 1.0, "v2": 1.0}
    assert table.schema.metadata[UNMATCHED_METADATA] == b"1"


def test_nothing_there(tmp_path: Path) -> None:
    got = read_labelled(fs.LocalFileSystem(), str(tmp_path / "none"), START, END)
    assert got.table.num_rows == 0
    assert (got.captured, got.labels, got.unmatched) == (0, 0, 0)


@pytest.mark.parametrize(
    ("captured", "labelled", "codes"),
    [
        ([], [], ([], [])),
        (["a", "b"], [], ([0, 1], [])),
        ([], ["x", "x"], ([], [0, 0])),
        (["a", "b"], ["b", "c", "a"], ([0, 1], [1, 2, 0])),
    ],
)
def test_encode_ids_one_dictionary(
    captured: list[str], labelled: list[str], codes: tuple[list[int], list[int]]
) -> None:
    import pyarrow as pa

    first = pa.chunked_array(
        [pa.array(captured[:1], pa.string()), pa.array(captured[1:], pa.string())]
    )
    got = encode_ids(first, pa.chunked_array([pa.array(labelled, pa.string())]))
    assert (got[0].tolist(), got[1].tolist()) == codes
    assert got[2] == len(set(captured) | set(labelled))


@pytest.mark.parametrize(
    ("captured", "labelled"),
    [
        (["a"], []),
        ([], ["b", "b"]),
        (["a", "b", "", "ab"], ["b", "c", "a", "", "zz", "b"]),
        (["x1", "x2", "x3", "x4"], ["x4", "x4", "x9", "x2", "x1"]),
        (["é", "e", "ü"], ["ü", "e"]),
    ],
)
def test_encode_ids_split_in_halves(captured: list[str], labelled: list[str]) -> None:
    import pyarrow as pa

    sliced = pa.array(["pad", *captured[:2], "pad"], pa.string()).slice(1, len(captured[:2]))
    first = pa.chunked_array([sliced, pa.array(captured[2:], pa.string())])
    second = pa.chunked_array([pa.array(labelled, pa.string())])
    got = encode_ids(first, second, split_from=0)
    ids = captured + labelled
    codes = got[0].tolist() + got[1].tolist()
    assert got[2] == len(set(ids))
    assert sorted(set(codes)) == list(range(got[2]))
    assert len({(i, c) for i, c in zip(ids, codes, strict=True)}) == got[2]


@pytest.mark.parametrize(
    ("codes", "times", "distinct", "latest"),
    [
        ([], [], 2, [-1, -1]),
        ([0, 1, 0], [1, 2, 3], 3, [2, 1, -1]),
        ([0, 1, 0], [5, 2, 3], 2, [0, 1]),
        ([1, 1, 0, 1], [4, 4, 1, 2], 2, [2, 1]),
        ([2, 0, 2, 0], [9, 9, 9, 9], 3, [3, -1, 2]),
    ],
)
def test_latest_rows_latest_time_then_later_row(
    codes: list[int], times: list[int], distinct: int, latest: list[int]
) -> None:
    import numpy as np
    import pyarrow as pa

    stamps = pa.chunked_array([pa.array(times, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))])
    got = latest_rows(np.array(codes, np.int64), stamps, distinct)
    assert got.tolist() == latest


def test_same_time_later_file_wins_and_score_of(tmp_path: Path) -> None:
    local, root = fs.LocalFileSystem(), str(tmp_path / "d")
    write_capture(local, root, [row("a", "2026-11-30T10:00:00"), row("b", "2026-11-30T10:01:00")])
    same = at("2026-11-30T10:30:00")
    write_feedback(local, root, [("a", 0.0, same), ("a", 1.0, same), ("b", 1.0, same)])
    got = read_labelled(local, root, START, END, columns=["prediction"], score_of=1)
    assert got.table.column_names == ["prediction", "score", "label"]
    assert got.table.column("score").to_pylist() == [0.7, 0.7]
    assert got.table.column("label").to_pylist() == [1.0, 1.0]
    assert (got.captured, got.labels, got.unmatched) == (2, 2, 0)


def test_latest_by_receive_time_not_file_order(tmp_path: Path) -> None:
    local, root = fs.LocalFileSystem(), str(tmp_path / "d")
    write_capture(local, root, [row("a", "2026-11-30T10:00:00")])
    write_feedback(
        local,
        root,
        [("a", 1.0, at("2026-11-30T10:50:00")), ("a", 0.0, at("2026-11-30T10:10:00"))],
    )
    got = read_labelled(local, root, START, END)
    assert labels(got.table) == {"a": 1.0}
