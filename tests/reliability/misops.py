"""The misoperation table (Acto-style): bad changes an operator of the platform might make
to a healthy object, what must happen, and the baseline each one starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DROP = None  # in a change: remove the key (a JSON merge patch's null)


@dataclass(frozen=True)
class Misop:
    id: str
    kind: str  # TrainingJob, ModelDeployment or DriftMonitor
    change: dict[str, Any]  # a JSON merge patch of spec
    refused: str | None = None  # admission must refuse, naming this field
    reason: str | None = None  # the reason ``condition`` gives within one pass (status False)
    condition: str | None = None  # which condition says it (default: the summary)
    defect: str | None = None  # a known defect fixed on another branch: strict xfail
    chaos: bool = True  # only under make chaos (the make-test slice says False)


TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"
HUGE = {f"p{i:03d}": "x" * 250 for i in range(98)}
TOO_MANY = {f"p{i:03d}": 1 for i in range(101)}
BAD_VOLUME = [{"name": "Bad_Volume", "emptyDir": {}}]

MISOPS: list[Misop] = [
    # --- TrainingJob: accepted, the operator has to cope ---------------------------------
    Misop("tj-model-renamed-mid-run", TJ, {"model": {"name": "renamed-model"}}, chaos=False),
    Misop("tj-alias-to-a-missing-one", TJ, {"model": {"alias": "ghost"}}),
    Misop(
        "tj-podtemplate-the-api-rejects",
        TJ,
        {"podTemplate": {"volumes": BAD_VOLUME}},
        reason="ChildRejected",
        chaos=False,
    ),
    Misop("tj-huge-hyperparameters", TJ, {"hyperparameters": HUGE}, chaos=False),
    Misop("tj-image-that-does-not-exist", TJ, {"image": "registry.invalid/nope:0"}),
    Misop("tj-zero-resources", TJ, {"resources": {"requests": {"cpu": "0", "memory": "0"}}}),
    Misop("tj-dataset-missing-artifact", TJ, {"dataset": {"uri": "s3://missing/none.parquet"}}),
    Misop(
        "tj-gate-impossible", TJ, {"qualityGate": [{"metric": "val_auc", "op": ">=", "value": 2}]}
    ),
    Misop("tj-experiment-renamed", TJ, {"experiment": "elsewhere"}),
    # --- ModelDeployment: accepted; what serves must keep serving ------------------------
    Misop(
        "md-version-that-does-not-exist",
        MD,
        {"model": {"alias": DROP, "version": "999"}},
        reason="ModelNotFound",
        condition="ModelResolved",
        chaos=False,
    ),
    Misop(
        "md-alias-that-does-not-exist",
        MD,
        {"model": {"alias": "ghost"}},
        reason="AliasNotFound",
        condition="ModelResolved",
        chaos=False,
    ),
    Misop(
        "md-model-renamed",
        MD,
        {"model": {"name": "no-such-model"}},
        reason="AliasNotFound",
        condition="ModelResolved",
    ),
    Misop(
        "md-canary-straight-to-100",
        MD,
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 100, "pauseSeconds": 0}]}},
    ),
    Misop(
        "md-replicas-to-autoscaling",
        MD,
        {"replicas": DROP, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
        chaos=False,
    ),
    Misop("md-image-that-does-not-exist", MD, {"image": "registry.invalid/nope:0"}),
    Misop("md-port-change", MD, {"service": {"port": 9999}}),
    Misop("md-service-type-change", MD, {"service": {"type": "NodePort"}}),
    Misop("md-zero-resources", MD, {"resources": {"requests": {"cpu": "0", "memory": "0"}}}),
    Misop(
        "md-podtemplate-the-api-rejects",
        MD,
        {"podTemplate": {"volumes": BAD_VOLUME}},
        reason="ChildRejected",
        condition="Ready",
    ),
    # --- DriftMonitor: accepted; a clear reason, nothing started -------------------------
    Misop(
        "dm-profile-missing",
        DM,
        {"reference": {"profileUri": "runs:/0123456789abcdef0123456789abcdef/profile.json"}},
        reason="NoReferenceProfile",
    ),
    Misop(
        "dm-prometheus-unreachable",
        DM,
        {"target": {"prometheus": {"url": "http://127.0.0.1:9"}}},
        reason="PrometheusUnavailable",
        chaos=False,
    ),
    Misop(
        "dm-target-that-does-not-exist",
        DM,
        {"target": {"modelDeployment": {"name": "ghost"}}},
        reason="TargetNotFound",
        chaos=False,
    ),
    Misop("dm-threshold-nonsense", DM, {"threshold": 1000, "driftShare": 1}),
    Misop("dm-features-not-in-the-profile", DM, {"features": [{"name": "not-a-feature"}]}),
    Misop(
        "dm-retrain-from-a-missing-trainingjob",
        DM,
        {"retrain": {"fromTrainingJob": {"name": "ghost"}, "schedule": "* * * * *"}},
    ),
    Misop(
        "dm-retrain-template-that-cannot-run",
        DM,
        {"retrain": {"template": {"image": "registry.invalid/nope:0", "model": {"name": "x"}}}},
    ),
    # --- refused at the door: the message names the field --------------------------------
    Misop("tj-replicas-zero", TJ, {"replicas": 0}, refused="spec.replicas", chaos=False),
    Misop("tj-alias-latest", TJ, {"model": {"alias": "latest"}}, refused="spec.model.alias"),
    Misop("tj-backoff-negative", TJ, {"backoffLimit": -1}, refused="spec.backoffLimit"),
    Misop(
        "tj-hyperparameters-too-many",
        TJ,
        {"hyperparameters": TOO_MANY},
        refused="spec.hyperparameters",
    ),
    Misop(
        "md-canary-weights-explode",
        MD,
        {"rollout": {"strategy": "Canary", "steps": [{"weight": 100}, {"weight": 100}]}},
        refused="spec.rollout.steps",
    ),
    Misop(
        "md-version-and-alias", MD, {"model": {"version": "1"}}, refused="spec.model", chaos=False
    ),
    Misop(
        "md-autoscaling-min-over-max",
        MD,
        {"replicas": DROP, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        refused="spec.autoscaling",
    ),
    Misop("md-port-zero", MD, {"service": {"port": 0}}, refused="spec.service.port"),
    Misop("md-negative-replicas", MD, {"replicas": -1}, refused="spec.replicas"),
    Misop("dm-bad-method", DM, {"method": "vibes"}, refused="spec.method", chaos=False),
    Misop(
        "dm-prometheus-url-not-a-url",
        DM,
        {"target": {"prometheus": {"url": "prometheus:9090"}}},
        refused="spec.target.prometheus.url",
    ),
    Misop("dm-negative-threshold", DM, {"threshold": -1}, refused="spec.threshold"),
]


def merge(base: Any, change: Any) -> Any:
    """RFC 7386 JSON merge patch: None removes a key."""
    if not isinstance(change, dict):
        return change
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


@dataclass
class Baseline:
    """A healthy object of one kind and what must survive a misoperation of it."""

    obj: dict[str, Any]
    serving: str | None = None  # the version the stable Deployment serves
    versions: list[tuple[str, str | None]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
