"""Reference profiles: bucket semantics, types, JSON round trip, edge cases."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from modelworks.drift.profile import (
    OTHER,
    FeatureProfile,
    Profile,
    bucket_categorical,
    bucket_numeric,
    build_profile,
    infer_type,
    quantile_edges,
    typical_row,
)


@pytest.mark.parametrize(
    ("values", "edges", "counts", "missing"),
    [
        ([0.5, 1.0, 1.5, 2.0, 9.0], [1.0, 2.0], (2, 2, 1), 0),  # le: 1.0 is in the first bucket
        ([float("nan"), 3.0], [1.0], (0, 1), 1),
        ([], [1.0, 2.0], (0, 0, 0), 0),
        ([5.0, 6.0], [], (2,), 0),  # no edges: one bucket
        ([-math.inf, math.inf], [0.0], (1, 1), 0),
    ],
)
def test_bucket_numeric(
    values: list[float], edges: list[float], counts: tuple[int, ...], missing: int
) -> None:
    assert bucket_numeric(np.array(values, dtype=float), edges) == (counts, missing)


def test_bucket_numeric_matches_a_direct_count() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=2000)
    edges = [-1.0, 0.0, 0.5, 2.0]
    counts, _ = bucket_numeric(x, edges)
    bounds = [-math.inf, *edges, math.inf]
    direct = tuple(int(((x > lo) & (x <= hi)).sum()) for lo, hi in itertools.pairwise(bounds))
    assert counts == direct


@pytest.mark.parametrize(
    ("values", "categories", "counts", "missing"),
    [
        (["a", "b", "a", "z"], ["a", "b"], (2, 1, 1), 0),  # unseen -> OTHER (last)
        (["a", None, float("nan")], ["a"], (1, 0), 2),
        ([], ["a"], (0, 0), 0),
        ([1, 2, 2], ["2", "1"], (2, 1, 0), 0),  # compared as text
    ],
)
def test_bucket_categorical(
    values: list[object], categories: list[str], counts: tuple[int, ...], missing: int
) -> None:
    assert bucket_categorical(values, categories) == (counts, missing)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.arange(100, dtype=float), "numeric"),
        (np.array([0, 1, 0, 1]), "categorical"),  # binary
        (np.array(["a", "b"]), "categorical"),
        (np.array([1.0, 2.0, 3.0, float("nan")]), "categorical"),  # few distinct values
    ],
)
def test_infer_type(values: np.ndarray, kind: str) -> None:
    assert infer_type(values) == kind


def test_quantile_edges_are_distinct_and_increasing() -> None:
    x = np.concatenate([np.zeros(900), np.arange(100, dtype=float)])  # heavy tie at 0
    edges = quantile_edges(x, 10)
    assert list(edges) == sorted(set(edges))
    assert quantile_edges(np.array([np.nan]), 10) == ()


def test_profile_round_trips_through_json_and_counts_every_row() -> None:
    rng = np.random.default_rng(3)
    cols = {"x": rng.normal(size=500), "c": rng.choice(["a", "b", "c"], 500)}
    profile = build_profile(cols, bins=8, meta={"run": "r1"})
    again = Profile.from_json(json.loads(json.dumps(profile.to_json())))
    assert again == profile
    x, c = again.feature("x"), again.feature("c")
    assert x is not None and c is not None
    assert x.type == "numeric" and len(x.counts) == len(x.edges) + 1 and x.total == 500
    assert c.type == "categorical" and set(c.categories) == {"a", "b", "c"} and c.total == 500
    assert c.counts[-1] == 0  # nothing in OTHER for the reference itself
    assert OTHER == "__other__"


def test_max_categories_folds_the_rest_into_other() -> None:
    values = ["a"] * 5 + ["b"] * 3 + ["c", "d"]
    profile = build_profile({"v": values}, max_categories=2)
    f = profile.feature("v")
    assert f is not None and f.categories == ("a", "b") and f.counts == (5, 3, 2)


def test_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="bins"):
        build_profile({"x": [1.0, 2.0]}, bins=1)
    with pytest.raises(ValueError, match="version"):
        Profile.from_json({"version": 99, "rows": 0, "features": []})


@pytest.mark.parametrize(
    ("features", "integers", "expected"),
    [
        # the median edge of a numeric feature; rounded when the model wants integers
        ([FeatureProfile("x", "numeric", (1, 1, 1, 1), edges=(1.0, 2.5, 4.0))], (), {"x": 2.5}),
        (
            [FeatureProfile("n", "numeric", (1, 1, 1, 1), edges=(1.0, 2.6, 4.0))],
            ("n",),
            {"n": 3},
        ),
        ([FeatureProfile("x", "numeric", (5,))], (), {"x": 0.0}),  # no edges: 0
        # the most frequent category, never __other__
        (
            [FeatureProfile("c", "categorical", (2, 7, 99), categories=("a", "b"))],
            (),
            {"c": "b"},
        ),
        ([FeatureProfile("c", "categorical", (3,))], (), {"c": ""}),
    ],
)
def test_typical_row(
    features: list[FeatureProfile], integers: tuple[str, ...], expected: dict[str, object]
) -> None:
    row = typical_row(Profile(tuple(features), rows=10), frozenset(integers))
    assert row == expected
    assert [type(v) for v in row.values()] == [type(v) for v in expected.values()]
