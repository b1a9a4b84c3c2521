"""Objects the API must refuse, each with the field its error has to name.

One table serves two tiers: the unit tests check the operator's own validation (the
pydantic models and their rules), the integration tests send the same objects to a
real kube-apiserver with the generated CRDs installed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from modelworks.api import API_VERSION

DELETE = object()

MINIMAL: dict[str, dict[str, Any]] = {
    "TrainingJob": {"image": "trainer:1", "model": {"name": "churn"}},
    "ModelDeployment": {"model": {"name": "churn", "alias": "champion"}},
    "DriftMonitor": {"target": {"modelDeployment": {"name": "churn"}}},
}
NAMES = {"TrainingJob": "train", "ModelDeployment": "serve", "DriftMonitor": "watch"}


def merge(base: Any, change: Any) -> Any:
    """Deep merge for dicts; DELETE removes a key; anything else replaces."""
    if isinstance(base, dict) and isinstance(change, dict):
        out = dict(base)
        for key, value in change.items():
            if value is DELETE:
                out.pop(key, None)
            else:
                out[key] = merge(base.get(key), value)
        return out
    return copy.deepcopy(change)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    spec: dict[str, Any]
    field: str  # the path the error must name
    name: str | None = None
    server: bool = True  # False: CEL cannot express it; the operator alone refuses it

    def obj(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": {"name": self.name or NAMES[self.kind]},
            "spec": merge(MINIMAL[self.kind], self.spec),
        }


def minimal(kind: str, name: str | None = None) -> dict[str, Any]:
    return Case("minimal", kind, {}, "", name=name).obj()


TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"
LONG = "a" * 60

INVALID: list[Case] = [
    # TrainingJob
    Case("tj-no-image", TJ, {"image": DELETE}, "spec.image"),
    Case("tj-replicas-zero", TJ, {"replicas": 0}, "spec.replicas"),
    Case("tj-replicas-huge", TJ, {"replicas": 5000}, "spec.replicas"),
    Case("tj-model-name", TJ, {"model": {"name": "churn model!"}}, "spec.model.name"),
    Case("tj-alias-latest", TJ, {"model": {"alias": "latest"}}, "spec.model.alias"),
    Case("tj-alias-version-like", TJ, {"model": {"alias": "v2"}}, "spec.model.alias"),
    Case(
        "tj-gate-op",
        TJ,
        {"qualityGate": [{"metric": "auc", "op": "=>", "value": 1}]},
        "spec.qualityGate[0].op",
    ),
    Case("tj-gate-empty", TJ, {"qualityGate": [{"metric": "auc"}]}, "spec.qualityGate[0]"),
    Case("tj-env-reserved", TJ, {"env": [{"name": "MLFLOW_RUN_ID", "value": "x"}]}, "spec.env"),
    Case(
        "tj-env-both",
        TJ,
        {
            "env": [
                {
                    "name": "A",
                    "value": "1",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                }
            ]
        },
        "spec.env[0]",
    ),
    Case(
        "tj-request-over-limit",
        TJ,
        {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        "spec.resources",
    ),
    Case(
        "tj-bad-quantity", TJ, {"resources": {"limits": {"cpu": "lots"}}}, "spec.resources.limits"
    ),
    Case("tj-backoff-negative", TJ, {"backoffLimit": -1}, "spec.backoffLimit"),
    Case("tj-deadline-zero", TJ, {"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
    Case(
        "tj-hyper-list",
        TJ,
        {"hyperparameters": {"layers": [1, 2]}},
        "spec.hyperparameters",
        server=False,
    ),
    Case(
        "tj-hyper-key",
        TJ,
        {"hyperparameters": {"bad key": 1}},
        "spec.hyperparameters",
        server=False,
    ),
    Case("tj-clean-policy", TJ, {"cleanPodPolicy": "Some"}, "spec.cleanPodPolicy"),
    Case("tj-master-port", TJ, {"distributed": {"masterPort": 80}}, "spec.distributed.masterPort"),
    # Data validation before training
    Case(
        "tj-dv-min-rows-zero",
        TJ,
        {"dataset": {"uri": "s3://d/t.parquet"}, "dataValidation": {"minRows": 0}},
        "spec.dataValidation.minRows",
    ),
    Case(
        "tj-dv-missing-share-over-one",
        TJ,
        {"dataset": {"uri": "s3://d/t.parquet"}, "dataValidation": {"maxMissingShare": 1.5}},
        "spec.dataValidation.maxMissingShare",
    ),
    Case(
        "tj-dv-column-share-negative",
        TJ,
        {
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {"missingByColumn": [{"column": "a", "maxMissingShare": -0.1}]},
        },
        "spec.dataValidation.missingByColumn[0].maxMissingShare",
    ),
    Case(
        "tj-dv-class-share-over-one",
        TJ,
        {
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {"label": {"column": "churned", "maxClassShare": 2}},
        },
        "spec.dataValidation.label.maxClassShare",
    ),
    Case(
        "tj-dv-class-shares-crossed",
        TJ,
        {
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {
                "label": {"column": "churned", "minClassShare": 0.6, "maxClassShare": 0.4}
            },
        },
        "spec.dataValidation.label.minClassShare",
    ),
    Case(
        "tj-dv-no-check",
        TJ,
        {"dataset": {"uri": "s3://d/t.parquet"}, "dataValidation": {}},
        "spec.dataValidation",
    ),
    Case(
        "tj-dv-schema-both",
        TJ,
        {
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {
                "schema": {"fromAlias": "champion", "columns": [{"name": "a", "type": "numeric"}]}
            },
        },
        "spec.dataValidation.schema",
    ),
    Case(
        "tj-dv-column-type",
        TJ,
        {
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {"schema": {"columns": [{"name": "a", "type": "float64"}]}},
        },
        "spec.dataValidation.schema.columns[0].type",
    ),
    Case(
        "tj-dv-from-alias-latest",
        TJ,
        {
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {"schema": {"fromAlias": "latest"}},
        },
        "spec.dataValidation.schema.fromAlias",
    ),
    Case(
        "tj-dv-from-alias-no-model",
        TJ,
        {
            "model": DELETE,
            "dataset": {"uri": "s3://d/t.parquet"},
            "dataValidation": {"schema": {"fromAlias": "champion"}},
        },
        "spec.dataValidation.schema.fromAlias",
    ),
    Case("tj-dv-no-dataset", TJ, {"dataValidation": {"minRows": 1}}, "spec.dataValidation"),
    Case(
        "tj-dv-builtin-dataset",
        TJ,
        {"dataset": {"uri": "builtin://iris"}, "dataValidation": {"minRows": 1}},
        "spec.dataValidation",
    ),
    Case(
        "tj-toleration-op",
        TJ,
        {"podTemplate": {"tolerations": [{"key": "k", "operator": "Maybe"}]}},
        "spec.podTemplate.tolerations[0].operator",
    ),
    Case("tj-unknown-field", TJ, {"imag": "typo"}, "spec.imag"),
    Case("tj-name-too-long", TJ, {}, "metadata.name", name=LONG),
    # ModelDeployment
    Case("md-version-and-alias", MD, {"model": {"version": "3"}}, "spec.model"),
    Case("md-neither", MD, {"model": {"alias": DELETE}}, "spec.model"),
    Case(
        "md-version-text", MD, {"model": {"alias": DELETE, "version": "abc"}}, "spec.model.version"
    ),
    Case(
        "md-min-over-max",
        MD,
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "spec.autoscaling.minReplicas",
    ),
    Case(
        "md-replicas-and-hpa",
        MD,
        {"replicas": 2, "autoscaling": {"maxReplicas": 3}},
        "spec.replicas",
    ),
    Case("md-canary-no-steps", MD, {"rollout": {"strategy": "Canary"}}, "spec.rollout.steps"),
    Case(
        "md-canary-decreasing",
        MD,
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 50}, {"weight": 25}]}},
        "spec.rollout.steps",
    ),
    Case(
        "md-weight-zero",
        MD,
        {"rollout": {"steps": [{"weight": 0}]}},
        "spec.rollout.steps[0].weight",
    ),
    Case(
        "md-weight-over",
        MD,
        {"rollout": {"steps": [{"weight": 101}]}},
        "spec.rollout.steps[0].weight",
    ),
    Case("md-service-type", MD, {"service": {"type": "Ingress"}}, "spec.service.type"),
    Case(
        "md-cpu-target",
        MD,
        {"autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 150}},
        "spec.autoscaling.targetCPUUtilization",
    ),
    Case(
        "md-window-negative",
        MD,
        {
            "autoscaling": {
                "maxReplicas": 3,
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": -1}},
            }
        },
        "spec.autoscaling.behavior.scaleUp.stabilizationWindowSeconds",
    ),
    Case(
        "md-window-over",
        MD,
        {
            "autoscaling": {
                "maxReplicas": 3,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 3601}},
            }
        },
        "spec.autoscaling.behavior.scaleDown.stabilizationWindowSeconds",
    ),
    Case(
        "md-select-policy",
        MD,
        {"autoscaling": {"maxReplicas": 3, "behavior": {"scaleDown": {"selectPolicy": "Fastest"}}}},
        "spec.autoscaling.behavior.scaleDown.selectPolicy",
    ),
    Case(
        "md-policies-empty",
        MD,
        {"autoscaling": {"maxReplicas": 3, "behavior": {"scaleUp": {"policies": []}}}},
        "spec.autoscaling.behavior.scaleUp.policies",
    ),
    Case(
        "md-policy-type",
        MD,
        {
            "autoscaling": {
                "maxReplicas": 3,
                "behavior": {
                    "scaleUp": {"policies": [{"type": "Nodes", "value": 1, "periodSeconds": 15}]}
                },
            }
        },
        "spec.autoscaling.behavior.scaleUp.policies[0].type",
    ),
    Case(
        "md-policy-period",
        MD,
        {
            "autoscaling": {
                "maxReplicas": 3,
                "behavior": {
                    "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]}
                },
            }
        },
        "spec.autoscaling.behavior.scaleUp.policies[0].periodSeconds",
    ),
    Case(
        "md-behavior-unknown",
        MD,
        {"autoscaling": {"maxReplicas": 3, "behavior": {"scaleSideways": {}}}},
        "spec.autoscaling.behavior.scaleSideways",
    ),
    Case("md-name-digit", MD, {}, "metadata.name", name="1churn"),
    # DriftMonitor
    Case(
        "dm-target-and-batch",
        DM,
        {"batch": {"currentUri": "file:///x.csv"}, "reference": {"datasetUri": "file:///r.csv"}},
        "spec",
    ),
    Case("dm-neither", DM, {"target": DELETE}, "spec"),
    Case("dm-method", DM, {"method": "kl"}, "spec.method"),
    Case("dm-ks-threshold", DM, {"method": "ks", "threshold": 3}, "spec.threshold"),
    Case(
        "dm-predictions-chi2-threshold",
        DM,
        {"predictions": {"method": "chi2", "threshold": 2}},
        "spec.predictions.threshold",
    ),
    Case(
        "dm-predictions-inherited-ks-threshold",
        DM,
        {"method": "ks", "predictions": {"threshold": 5}},
        "spec.predictions.threshold",
    ),
    Case("dm-predictions-method", DM, {"predictions": {"method": "kl"}}, "spec.predictions.method"),
    Case("dm-share-zero", DM, {"driftShare": 0}, "spec.driftShare"),
    Case("dm-interval", DM, {"interval": "5 minutes"}, "spec.interval"),
    Case(
        "dm-retrain-both",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "t"}, "template": {"image": "trainer:1"}}},
        "spec.retrain",
    ),
    Case(
        "dm-batch-no-reference",
        DM,
        {"target": DELETE, "batch": {"currentUri": "file:///x.csv"}},
        "spec.reference",
    ),
    Case(
        "dm-schedule",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "t"}, "schedule": "every day"}},
        "spec.retrain.schedule",
    ),
    Case(
        "dm-template-invalid",
        DM,
        {"retrain": {"template": {"image": "trainer:1", "replicas": 0}}},
        "spec.retrain.template.replicas",
    ),
    Case(
        "dm-captured-no-target",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "t"}, "dataset": {"source": "Captured"}}},
        "spec.retrain.dataset.target",
    ),
    Case(
        "dm-captured-batch",
        DM,
        {
            "target": DELETE,
            "batch": {"currentUri": "file:///x.csv"},
            "reference": {"datasetUri": "file:///r.csv"},
            "retrain": {
                "fromTrainingJob": {"name": "t"},
                "dataset": {"source": "Captured", "target": "churned"},
            },
        },
        "spec.retrain.dataset.source",
    ),
    Case(
        "dm-captured-source",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "t"}, "dataset": {"source": "Fresh"}}},
        "spec.retrain.dataset.source",
    ),
    Case(
        "dm-captured-holdout",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "t"}, "dataset": {"holdoutFraction": 0.9}}},
        "spec.retrain.dataset.holdoutFraction",
    ),
    Case(
        "dm-captured-window-short",
        DM,
        {
            "window": "2h",
            "retrain": {"fromTrainingJob": {"name": "t"}, "dataset": {"window": "30m"}},
        },
        "spec.retrain.dataset.window",
    ),
    Case(
        "dm-captured-min-rows",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "t"}, "dataset": {"minRows": 0}}},
        "spec.retrain.dataset.minRows",
    ),
    Case("dm-quantile", DM, {"calibration": {"quantile": 1.5}}, "spec.calibration.quantile"),
    Case(
        "dm-live-dataset-reference",
        DM,
        {"reference": {"datasetUri": "runs:/abc/ref.csv"}},
        "spec.reference.datasetUri",
    ),
    # Model quality (spec.performance)
    Case(
        "dm-perf-metric", DM, {"performance": {"metrics": ["auc"]}}, "spec.performance.metrics[0]"
    ),
    Case("dm-perf-no-metric", DM, {"performance": {"metrics": []}}, "spec.performance.metrics"),
    Case(
        "dm-perf-max-drop",
        DM,
        {
            "performance": {
                "metrics": ["roc_auc"],
                "thresholds": [{"metric": "roc_auc", "maxDrop": 1.5, "baselineMetric": "val_auc"}],
            }
        },
        "spec.performance.thresholds[0].maxDrop",
    ),
    Case(
        "dm-perf-drop-no-baseline",
        DM,
        {
            "performance": {
                "metrics": ["roc_auc"],
                "thresholds": [{"metric": "roc_auc", "maxDrop": 0.1}],
            }
        },
        "spec.performance.thresholds[0].baselineMetric",
    ),
    Case(
        "dm-perf-threshold-unmeasured",
        DM,
        {"performance": {"metrics": ["roc_auc"], "thresholds": [{"metric": "f1", "min": 0.5}]}},
        "spec.performance.thresholds",
    ),
    Case(
        "dm-perf-regression-metric",
        DM,
        {"performance": {"task": "regression", "metrics": ["roc_auc"]}},
        "spec.performance.metrics",
    ),
    Case(
        "dm-perf-label-delay",
        DM,
        {"performance": {"metrics": ["f1"], "labelDelay": "1 day"}},
        "spec.performance.labelDelay",
    ),
    Case(
        "dm-perf-batch",
        DM,
        {
            "target": DELETE,
            "batch": {"currentUri": "file:///x.csv"},
            "reference": {"datasetUri": "file:///r.csv"},
            "performance": {"metrics": ["f1"]},
        },
        "spec.performance",
    ),
    # Object storage and data capture (every kind takes spec.storage)
    Case(
        "tj-storage-endpoint-with-credentials",
        TJ,
        {"storage": {"endpoint": "http://key:secret@s3.local:8333"}},
        "spec.storage.endpoint",
    ),
    Case(
        "md-storage-endpoint-scheme",
        MD,
        {"storage": {"endpoint": "ftp://s3"}},
        "spec.storage.endpoint",
    ),
    Case(
        "dm-storage-secret-name",
        DM,
        {"storage": {"credentials": {"secretName": "Bad_Name"}}},
        "spec.storage.credentials.secretName",
    ),
    Case(
        "tj-storage-env-clash",
        TJ,
        {
            "storage": {"credentials": {"secretName": "s3"}},
            "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}],
        },
        "spec.env",
    ),
    Case(
        "md-feedback-token-keys",
        MD,
        {
            "dataCapture": {
                "destination": "s3://capture/churn",
                "feedback": {"token": {"secretName": "fb", "keys": {"PATH": "token"}}},
            }
        },
        "spec.dataCapture.feedback.token.keys",
    ),
    Case(
        "md-feedback-token-plain-env",
        MD,
        {"env": [{"name": "MODELWORKS_FEEDBACK_TOKEN", "value": "in-the-open"}]},
        "spec.env",
    ),
    Case(
        "md-capture-sampling",
        MD,
        {"dataCapture": {"destination": "s3://capture/churn", "samplingPercent": 101}},
        "spec.dataCapture.samplingPercent",
    ),
    Case(
        "md-capture-destination",
        MD,
        {"dataCapture": {"destination": "file:///tmp/capture"}},
        "spec.dataCapture.destination",
    ),
    Case(
        "md-capture-buffer",
        MD,
        {"dataCapture": {"destination": "s3://capture/churn", "bufferRows": 10}},
        "spec.dataCapture.bufferRows",
    ),
    Case(
        "md-capture-flush-interval",
        MD,
        {"dataCapture": {"destination": "s3://capture/churn", "flushInterval": "soon"}},
        "spec.dataCapture.flushInterval",
    ),
    Case(
        "md-capture-redact",
        MD,
        {"dataCapture": {"destination": "s3://capture/churn", "redact": ["two words"]}},
        "spec.dataCapture.redact",
    ),
    Case(
        "md-capture-feedback-token",
        MD,
        {"dataCapture": {"destination": "s3://capture/churn", "feedback": {}}},
        "spec.dataCapture.feedback.token",
    ),
]

# Minimal objects and the defaults the API server must fill in.
DEFAULTS: dict[str, dict[str, Any]] = {
    TJ: {
        "replicas": 1,
        "backoffLimit": 0,
        "cleanPodPolicy": "None",
        "suspend": False,
        "model": {"name": "churn", "artifactPath": "model"},
    },
    MD: {"workers": 1},
    DM: {
        "method": "psi",
        "driftShare": 0.5,
        "consecutiveWindows": 1,
        "interval": "5m",
        "window": "1h",
        "minSamples": 100,
        "correction": "none",
        "suspend": False,
    },
}
