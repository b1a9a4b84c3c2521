"""Every model-quality metric equals scikit-learn's on the same input (table-driven)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from modelworks.quality import metrics as mq

rng = np.random.default_rng(7)
N = 500
LABEL = rng.integers(0, 2, N)
SCORE = np.clip(LABEL * 0.3 + rng.random(N) * 0.7, 0, 1)
TIED = np.round(SCORE, 1)
PRED = (SCORE > 0.5).astype(int)
Y = rng.normal(size=N)
YHAT = Y + rng.normal(scale=0.5, size=N)

CLASS_CASES: list[tuple[str, Any, Any, Callable[..., float]]] = [
    ("roc_auc", LABEL, SCORE, skm.roc_auc_score),
    ("roc_auc", LABEL, TIED, skm.roc_auc_score),
    ("roc_auc", LABEL, np.zeros(N), skm.roc_auc_score),
    ("log_loss", LABEL, SCORE, skm.log_loss),
    ("log_loss", LABEL, (SCORE > 0.5).astype(float), skm.log_loss),
]
LABEL_CASES: list[tuple[str, Any, Any, Callable[..., float]]] = [
    ("accuracy", LABEL, PRED, skm.accuracy_score),
    ("f1", LABEL, PRED, skm.f1_score),
    ("precision", LABEL, PRED, skm.precision_score),
    ("recall", LABEL, PRED, skm.recall_score),
    ("precision", LABEL, np.zeros(N, int), lambda y, p: skm.precision_score(y, p, zero_division=0)),
    ("f1", np.zeros(N, int), np.zeros(N, int), lambda y, p: skm.f1_score(y, p, zero_division=0)),
]
REG_CASES: list[tuple[str, Any, Any, Callable[..., float]]] = [
    ("rmse", Y, YHAT, skm.root_mean_squared_error),
    ("mae", Y, YHAT, skm.mean_absolute_error),
    ("r2", Y, YHAT, skm.r2_score),
    ("r2", np.ones(N), np.ones(N), skm.r2_score),
    ("r2", np.ones(N), YHAT, skm.r2_score),
]


@pytest.mark.parametrize(("name", "label", "score", "sk"), CLASS_CASES)
def test_score_metrics(name: str, label: Any, score: Any, sk: Callable[..., float]) -> None:
    got = mq.classification([name], label.astype(float), (score > 0.5).astype(float), score, 1.0)
    assert got[name] == pytest.approx(sk(label, score), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("name", "label", "pred", "sk"), LABEL_CASES)
def test_label_metrics(name: str, label: Any, pred: Any, sk: Callable[..., float]) -> None:
    got = mq.classification([name], label.astype(float), pred.astype(float), None, 1.0)
    assert got[name] == pytest.approx(sk(label, pred), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("name", "label", "pred", "sk"), REG_CASES)
def test_regression_metrics(name: str, label: Any, pred: Any, sk: Callable[..., float]) -> None:
    assert mq.regression([name], label, pred)[name] == pytest.approx(sk(label, pred), abs=1e-12)


def test_one_class_auc_is_nan_and_scores_are_required() -> None:
    assert np.isnan(mq.roc_auc(np.ones(3, bool), np.array([0.1, 0.2, 0.3])))
    with pytest.raises(ValueError, match="roc_auc needs class scores"):
        mq.classification(["roc_auc"], LABEL, PRED, None, 1)


def test_string_labels() -> None:
    label = np.array(["yes", "no", "yes", "no"])
    pred = np.array(["yes", "yes", "yes", "no"])
    got = mq.classification(["accuracy", "precision", "recall"], label, pred, None, "yes")
    assert got == {"accuracy": 0.75, "precision": pytest.approx(2 / 3), "recall": 1.0}
