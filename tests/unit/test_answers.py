"""serving.answers.rows: every answer shape a pyfunc model gives, one entry per row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from modelworks.serving.answers import Answers, rows

NAN = math.nan


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        or x == y
        for x, y in zip(a, b, strict=True)
    )


CASES: list[tuple[str, Any, list[Any], list[list[float]] | None]] = [
    ("numpy 1-D ints", np.array([0, 1, 1]), [0.0, 1.0, 1.0], None),
    ("numpy 1-D floats with NaN", np.array([0.5, np.nan]), [0.5, NAN], None),
    ("numpy 1-D strings", np.array(["yes", "no"]), ["yes", "no"], None),
    ("numpy 2-D one column", np.array([[3.0], [4.0]]), [3.0, 4.0], None),
    (
        "numpy 2-D probabilities",
        np.array([[0.8, 0.2], [0.3, 0.7]]),
        [0.0, 1.0],
        [[0.8, 0.2], [0.3, 0.7]],
    ),
    (
        "three classes",
        np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]),
        [2.0, 0.0],
        [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]],
    ),
    ("a row of NaN scores", np.array([[np.nan, np.nan]]), [NAN], [[NAN, NAN]]),
    ("empty 2-D", np.zeros((0, 2)), [], []),
    ("pandas Series", pd.Series([1, 0]), [1.0, 0.0], None),
    ("pandas Series of labels", pd.Series(["a", None]), ["a", NAN], None),
    ("DataFrame one column", pd.DataFrame({"y": [2.5, 3.5]}), [2.5, 3.5], None),
    (
        "DataFrame with a prediction column",
        pd.DataFrame({"prediction": ["a", "b"], "p": [0.1, 0.2]}),
        ["a", "b"],
        None,
    ),
    (
        "DataFrame of class scores",
        pd.DataFrame({"0": [0.9, 0.4], "1": [0.1, 0.6]}),
        [0.0, 1.0],
        [[0.9, 0.1], [0.4, 0.6]],
    ),
    ("list of numbers", [1, 2.5], [1.0, 2.5], None),
    ("list of strings", ["x", "y"], ["x", "y"], None),
    ("list of rows", [[0.25, 0.75]], [1.0], [[0.25, 0.75]]),
    ("list with None", [1, None], [1.0, NAN], None),
    ("scalar", np.float64(4.0), [4.0], None),
    ("dict with predictions", {"predictions": [1, 0]}, [1.0, 0.0], None),
    ("2-D strings", np.array([["a", "b"]]), ["a"], None),
]


@pytest.mark.parametrize(
    ("result", "prediction", "scores"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rows(result: Any, prediction: list[Any], scores: list[list[float]] | None) -> None:
    got = rows(result)
    assert _same(got.prediction, prediction)
    if scores is None:
        assert got.scores is None
    else:
        assert got.scores is not None and len(got.scores) == len(scores)
        for row, want in zip(got.scores, scores, strict=True):
            assert _same(row, want)


@pytest.mark.parametrize(
    ("answers", "positive"),
    [
        (Answers([0.0, 1.0], [[0.8, 0.2], [0.3, 0.7]]), [0.2, 0.7]),
        (Answers([2.0], [[0.1, 0.2, 0.7]]), None),
        (Answers([1.0]), None),
        (Answers([], []), None),
    ],
)
def test_positive_scores(answers: Answers, positive: list[float] | None) -> None:
    assert answers.positive_scores() == positive


@pytest.mark.parametrize(
    "result", [np.zeros((1, 2, 2)), {"other": [1]}], ids=["3-D", "dict without prediction"]
)
def test_unreadable_answers_raise(result: Any) -> None:
    with pytest.raises(ValueError):
        rows(result)
