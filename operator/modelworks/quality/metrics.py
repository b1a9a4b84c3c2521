"""Model-quality metrics on labelled rows, in numpy alone (no scikit-learn in the image).

Classification: ``roc_auc`` and ``log_loss`` from the positive class's score,
``accuracy``, ``f1``, ``precision`` and ``recall`` from the predicted class (binary, for
the positive class). Regression: ``rmse``, ``mae``, ``r2``. Each equals scikit-learn's
value for the same input (tests/unit/test_quality_metrics.py checks them against it).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)

CLASSIFICATION = ("roc_auc", "accuracy", "f1", "precision", "recall", "log_loss")
REGRESSION = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


def roc_auc(positive: Bools, score: Floats) -> float:
    """Area under the ROC curve: the Mann-Whitney U of the positives' score ranks (ties
    get their average rank: half-way between the first and last position of their value
    among all scores), NaN with one class only. The two sorts run on two threads."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    with ThreadPoolExecutor(max_workers=1) as pool:
        all_sorted = pool.submit(np.sort, score)
        mine = np.sort(score[positive])
        ordered = all_sorted.result()
    below = np.searchsorted(ordered, mine, "left").sum(dtype=np.float64)
    through = np.searchsorted(ordered, mine, "right").sum(dtype=np.float64)
    u = (below + through + n_pos) / 2.0 - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(positive: Bools, score: Floats) -> float:
    """Mean binary cross-entropy, scores clipped to [eps, 1 - eps] as scikit-learn does."""
    p = np.clip(score, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(np.where(positive, np.log(p), np.log1p(-p))))


def counts(positive: Bools, predicted: Bools) -> tuple[int, int, int]:
    """True positives, false positives, false negatives."""
    tp = int(np.count_nonzero(positive & predicted))
    return tp, int(np.count_nonzero(predicted)) - tp, int(np.count_nonzero(positive)) - tp


def precision(positive: Bools, predicted: Bools) -> float:
    tp, fp, _ = counts(positive, predicted)
    return tp / (tp + fp) if tp + fp else 0.0


def recall(positive: Bools, predicted: Bools) -> float:
    tp, _, fn = counts(positive, predicted)
    return tp / (tp + fn) if tp + fn else 0.0


def f1(positive: Bools, predicted: Bools) -> float:
    tp, fp, fn = counts(positive, predicted)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def accuracy(label: npt.NDArray[np.generic], predicted: npt.NDArray[np.generic]) -> float:
    return float(np.mean(label == predicted)) if label.size else float("nan")


def rmse(label: Floats, predicted: Floats) -> float:
    return float(np.sqrt(np.mean((label - predicted) ** 2)))


def mae(label: Floats, predicted: Floats) -> float:
    return float(np.mean(np.abs(label - predicted)))


def r2(label: Floats, predicted: Floats) -> float:
    """Coefficient of determination; with a constant label: 1 when exact, else 0 (sklearn)."""
    residual = float(np.sum((label - predicted) ** 2))
    total = float(np.sum((label - label.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


REGRESSORS: dict[str, Callable[[Floats, Floats], float]] = {"rmse": rmse, "mae": mae, "r2": r2}


def classification(
    names: list[str],
    label: npt.NDArray[np.generic],
    predicted: npt.NDArray[np.generic],
    score: Floats | None,
    positive_class: object,
) -> dict[str, float]:
    """The named classification metrics; ``score`` is the positive class's probability."""
    is_pos, pred_pos = label == positive_class, predicted == positive_class
    out: dict[str, float] = {}
    for name in names:
        if name in ("roc_auc", "log_loss"):
            if score is None:
                raise ValueError(f"{name} needs class scores: the model answered none")
            out[name] = (roc_auc if name == "roc_auc" else log_loss)(is_pos, score)
        elif name == "accuracy":
            out[name] = accuracy(label, predicted)
        else:
            out[name] = {"f1": f1, "precision": precision, "recall": recall}[name](is_pos, pred_pos)
    return out


def regression(names: list[str], label: Floats, predicted: Floats) -> dict[str, float]:
    return {name: REGRESSORS[name](label, predicted) for name in names}
