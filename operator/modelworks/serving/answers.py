"""What a pyfunc model answered, one entry per scored row. Pure (numpy).

Models answer in many shapes: a numpy array (1-D, or 2-D with one column per class),
a pandas Series or DataFrame, a list (of numbers, strings or rows), a scalar. The
prediction counters and the data capture both need the same thing from any of them:
per row, the prediction (a number or a string) and, for a classifier that answers class
probabilities, the scores.

The rule (docs/driftmonitor.md, "Prediction drift"):

- 1-D (or a 2-D answer of one column, or a one-column DataFrame): each value is the
  row's prediction (float when it is a number, else its text); no scores.
- 2-D numeric of ``k >= 2`` columns: the columns are class scores (e.g. what
  ``predict_proba`` answers); the row's prediction is the argmax column index (a float),
  its scores the row.
- A DataFrame of several columns: a ``prediction`` (or ``predictions``) column is the
  prediction; otherwise its numeric columns are scores as above.
- A scalar is one row. Missing values (None, NaN) stay NaN; strings are never scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Prediction = float | str
PREDICTION_COLUMNS = ("prediction", "predictions")


@dataclass(frozen=True)
class Answers:
    prediction: list[Prediction]
    scores: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.prediction)

    def positive_scores(self) -> list[float] | None:
        """The last column's score per row when there are exactly two (a binary
        classifier's positive class), else None."""
        if self.scores is None or not self.scores or len(self.scores[0]) != 2:
            return None
        return [row[1] for row in self.scores]


def _value(v: Any) -> Prediction:
    if v is None:
        return math.nan
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _column(values: np.ndarray) -> Answers:
    return Answers([_value(v) for v in values.ravel().tolist()])


def _table(values: np.ndarray) -> Answers:
    """A 2-D answer: one column is a prediction, several numeric ones are scores."""
    if values.shape[1] == 1:
        return _column(values[:, 0])
    try:
        scores = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return Answers([_value(row[0]) for row in values.tolist()])
    if values.shape[0] == 0:
        return Answers([], [])
    filled = np.where(np.isnan(scores), -np.inf, scores)
    best = np.argmax(filled, axis=1).astype(np.float64)
    best[np.isnan(scores).all(axis=1)] = math.nan
    return Answers([float(b) for b in best.tolist()], scores.tolist())


def _frame(result: Any) -> Answers:
    columns = [str(c) for c in result.columns]
    for name in PREDICTION_COLUMNS:
        if name in columns:
            return _column(result[name].to_numpy())
    if len(columns) == 1:
        return _column(result.iloc[:, 0].to_numpy())
    return _table(result.to_numpy())


def rows(result: Any) -> Answers:
    """The per-row predictions (and scores) of what a pyfunc model's ``predict`` answered."""
    if hasattr(result, "columns") and hasattr(result, "iloc"):
        return _frame(result)
    if hasattr(result, "to_numpy"):  # a Series
        return _column(np.asarray(result.to_numpy(), dtype=object))
    if isinstance(result, dict):
        for name in PREDICTION_COLUMNS:
            if name in result:
                return rows(result[name])
        raise ValueError(f"a dict answer without a prediction key: {sorted(result)[:5]}")
    values = np.asarray(result) if not isinstance(result, np.ndarray) else result
    if values.ndim == 0:
        return Answers([_value(values.item())])
    if values.ndim == 1:
        return _column(values)
    if values.ndim == 2:
        return _table(values)
    raise ValueError(f"cannot read a {values.ndim}-D answer as one prediction per row")
