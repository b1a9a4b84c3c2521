"""Score model versions on a fresh sample of the example's changed world.

    python hack/score.py MODEL VERSION [VERSION ...] [--rows 3000] [--seed 424242]

Loads each ``models:/MODEL/VERSION`` from MLflow (MLFLOW_TRACKING_URI, else
MODELWORKS_MLFLOW_TRACKING_URI) and prints its ROC AUC on rows none of them saw.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.trainers.churn import TARGET, changed_world


def auc(model_uri: str, rows: int, seed: int) -> float:
    import mlflow
    import numpy as np
    from sklearn.metrics import roc_auc_score

    frame = changed_world(rows, seed)
    answer = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(frame.drop(columns=[TARGET])))
    scores = answer[:, -1] if answer.ndim == 2 else answer
    return float(roc_auc_score(frame[TARGET], scores))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("versions", nargs="+")
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--seed", type=int, default=424242)
    args = p.parse_args()
    os.environ.setdefault(
        "MLFLOW_TRACKING_URI", os.environ.get("MODELWORKS_MLFLOW_TRACKING_URI", "")
    )
    for version in args.versions:
        value = auc(f"models:/{args.model}/{version}", args.rows, args.seed)
        print(f"    version {version}: ROC AUC {value:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
