"""The model server's prediction counters: answers counted into the profile's output buckets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from prometheus_client import REGISTRY

from modelworks import names
from modelworks.drift.profile import PREDICTION, SCORE, bucket_labels, profile_outputs
from modelworks.serving.answers import rows
from modelworks.serving.metrics import PredictionObserver

REFERENCE = rows(np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8]] * 25))
OUTPUTS = profile_outputs(REFERENCE.prediction, REFERENCE.scores, bins=4)


def _counted(model: str, output: str) -> tuple[list[float], float]:
    feature = next(o for o in OUTPUTS if o.name == output)
    labels = {"model": model, "version": "1", "output": output}
    buckets = [
        REGISTRY.get_sample_value(names.PREDICTION_BUCKET_METRIC, {**labels, "bucket": b}) or 0.0
        for b in bucket_labels(feature)
    ]
    missing = REGISTRY.get_sample_value(names.PREDICTION_MISSING_METRIC, labels) or 0.0
    return buckets, missing


@pytest.mark.parametrize(
    ("model", "answer", "classes", "scores", "score_missing"),
    [
        ("probabilities", np.array([[0.95, 0.05], [0.1, 0.9], [0.3, 0.7]]), [1, 2, 0], 3, 0),
        ("labels only", np.array([1, 1, 0]), [1, 2, 0], 0, 3),
        ("a frame", pd.DataFrame({"a": [0.6], "b": [0.4]}), [1, 0, 0], 1, 0),
        ("nothing", np.zeros((0, 2)), [0, 0, 0], 0, 0),
    ],
)
def test_answers_are_counted_per_output(
    model: str, answer: Any, classes: list[int], scores: int, score_missing: int
) -> None:
    observer = PredictionObserver(OUTPUTS, model, "1")
    assert observer.output_names == [PREDICTION, SCORE]
    observer.answered(None, answer)
    counted, missing = _counted(model, PREDICTION)
    assert counted == classes and missing == 0  # "0.0", "1.0", __other__
    counted, missing = _counted(model, SCORE)
    assert sum(counted) == scores and missing == score_missing


def test_a_score_lands_in_its_reference_bucket() -> None:
    observer = PredictionObserver(OUTPUTS, "bucketed", "1")
    observer.answered(None, np.array([[0.05, 0.95], [0.95, 0.05]]))
    counted, _ = _counted("bucketed", SCORE)
    assert counted[0] == 1 and counted[-1] == 1
