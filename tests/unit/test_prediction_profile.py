"""The outputs section of a reference profile: what the model answered on its training data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from modelworks.drift.profile import (
    PREDICTION,
    SCORE,
    Profile,
    bucket_counts,
    build_profile,
    output_columns,
    profile_outputs,
)
from modelworks.serving.answers import rows

RNG = np.random.default_rng(3)
PROBA = np.column_stack([1 - (p := RNG.random(1000)), p])


@pytest.mark.parametrize(
    ("answer", "kwargs", "expected"),
    [
        ("binary scores", {}, {PREDICTION: "categorical", SCORE: "numeric"}),
        ("regression", {}, {PREDICTION: "numeric"}),
        ("class labels", {}, {PREDICTION: "categorical"}),
        ("string labels", {}, {PREDICTION: "categorical"}),
        ("regression told classifier", {"classifier": True}, {PREDICTION: "categorical"}),
        ("three classes", {}, {PREDICTION: "categorical"}),
    ],
)
def test_output_types(answer: str, kwargs: dict[str, Any], expected: dict[str, str]) -> None:
    result = {
        "binary scores": PROBA,
        "regression": RNG.normal(size=500),
        "regression told classifier": RNG.normal(size=500),
        "class labels": RNG.integers(0, 2, 500),
        "string labels": np.array(["yes", "no"] * 50),
        "three classes": RNG.dirichlet([1, 1, 1], 300),
    }[answer]
    a = rows(result)
    outputs = profile_outputs(a.prediction, a.scores, **kwargs)
    assert {o.name: o.type for o in outputs} == expected


def test_binary_classifier_outputs_hold_class_shares_and_score_bins() -> None:
    a = rows(PROBA)
    prediction, score = profile_outputs(a.prediction, a.scores, bins=4)
    assert set(prediction.categories) == {"0.0", "1.0"} and prediction.total == 1000
    assert len(score.edges) == 3 and score.total == 1000
    assert score.edges == pytest.approx(np.quantile(PROBA[:, 1], [0.25, 0.5, 0.75]))
    # the server counts answers into the same buckets
    b = rows(PROBA[:10])
    live = output_columns(b.prediction, b.scores)
    assert sum(bucket_counts(score, live[SCORE])[0]) == 10
    assert sum(bucket_counts(prediction, live[PREDICTION])[0]) == 10


def test_profile_json_round_trip_with_and_without_outputs() -> None:
    base = build_profile({"x": RNG.normal(size=200)})
    assert "outputs" not in base.to_json()
    old = Profile.from_json(base.to_json())
    assert old.outputs == () and old.output(PREDICTION) is None
    a = rows(PROBA)
    with_outputs = Profile(base.features, base.rows, {}, profile_outputs(a.prediction, a.scores))
    again = Profile.from_json(with_outputs.to_json())
    assert again == with_outputs and again.output(SCORE) is not None


@pytest.mark.parametrize(
    ("prediction", "scores", "names"),
    [
        ([1.0, 0.0], [[0.1, 0.9], [0.8, 0.2]], [PREDICTION, SCORE]),
        ([2.0], [[0.1, 0.2, 0.7]], [PREDICTION]),
        ([3.5, math.nan], None, [PREDICTION]),
        ([], [], [PREDICTION]),
    ],
)
def test_output_columns(
    prediction: list[float], scores: list[list[float]] | None, names: list[str]
) -> None:
    columns = output_columns(prediction, scores)
    assert list(columns) == names
    assert all(len(v) == len(prediction) for v in columns.values())
