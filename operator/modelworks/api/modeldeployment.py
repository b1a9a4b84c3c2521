"""ModelDeployment: serve a registered model version or alias, autoscaled, with canary and rollback."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from modelworks.api.common import (
    AGE_COLUMN,
    ALIAS_RULE_CEL,
    CONDITIONS_FIELD,
    Alias,
    ApiModel,
    Condition,
    Credentials,
    Duration,
    EnvVar,
    ModelName,
    ObjectStore,
    PodOverrides,
    PullPolicy,
    Resources,
    Rule,
    StatusModel,
    alias_ok,
    condition_column,
    list_map,
    storage_env_rule,
)
from modelworks.names import FEEDBACK_ENV, FEEDBACK_TOKEN_ENV, S3_ENV, SERVICE_PORT

KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SHORT_NAMES = ("mdep",)
# The Service is named after the object (a DNS-1035 label) and the canary Deployment
# adds "-canary": keep room for it.
MAX_NAME_LENGTH = 56
MAX_STEPS = 10
_FEEDBACK_ENV_CEL = "[" + ", ".join(f"'{n}'" for n in FEEDBACK_ENV) + "]"


MODELS_SCHEME = "models:/"


def version_ref(model: str | None, version: str, current: str) -> str:
    """One served version's identity relative to the spec's model ``current``: the bare
    number for a version of ``current`` (or of no named model: status written before models
    were named), ``models:/<model>/<version>`` for another model's."""
    if not model or model == current:
        return version
    return f"{MODELS_SCHEME}{model}/{version}"


def split_ref(ref: str, current: str) -> tuple[str, str]:
    """``(model, version)`` of a :func:`version_ref`."""
    if ref.startswith(MODELS_SCHEME):
        model, _, version = ref[len(MODELS_SCHEME) :].rpartition("/")
        return model, version
    return current, ref


class ModelRef(ApiModel):
    """A registered model and exactly one of a version or an alias to follow."""

    __rules__ = (
        Rule(
            cel="has(self.version) != has(self.alias)",
            message="exactly one of version or alias must be set",
            check=lambda m: (m.version is None) != (m.alias is None),
        ),
        Rule(
            cel=f"!has(self.alias) || ({ALIAS_RULE_CEL.replace('self', 'self.alias')})",
            message="alias may not be 'latest' or look like a version (v1, V2)",
            check=lambda m: alias_ok(m.alias),
            field=".alias",
        ),
    )

    name: ModelName
    version: str | None = Field(
        default=None, pattern=r"^[1-9][0-9]{0,9}$", description="A model version number."
    )
    alias: Alias | None = Field(
        default=None,
        description="Follow this alias: moving it in the registry rolls out the new version.",
    )


class ScalingPolicy(ApiModel):
    """At most ``value`` pods (or percent of the current pods) added or removed per period."""

    type: Literal["Pods", "Percent"]
    value: int = Field(ge=1, le=10000, description="Pods, or percent of the current pods.")
    period_seconds: int = Field(
        ge=1, le=1800, description="The window the policy's change is counted over."
    )


class ScalingRules(ApiModel):
    """How fast one direction of scaling acts (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="Recommendations this far back are considered and the least drastic one "
        "is taken. Unset: the HPA's default (0 for scaleUp, 300 for scaleDown).",
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(
        default=None,
        description="Which policy wins when several apply; Disabled turns this direction "
        "off. Unset: Max.",
    )
    policies: list[ScalingPolicy] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="Unset: the HPA's defaults for this direction.",
    )


class ScalingBehavior(ApiModel):
    """Scale-up and scale-down speed, as autoscaling/v2 HPA behavior."""

    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


class Autoscaling(ApiModel):
    """An autoscaling/v2 HorizontalPodAutoscaler for the serving Deployment."""

    __rules__ = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
            field=".minReplicas",
        ),
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization: int | None = Field(
        default=80,
        ge=1,
        le=100,
        alias="targetCPUUtilization",
        description="Average CPU, percent of requests.",
    )
    target_memory_utilization: int | None = Field(
        default=None, ge=1, le=100, description="Average memory, percent of requests."
    )
    behavior: ScalingBehavior | None = Field(
        default=None,
        description="Scaling speed and stabilization windows. Unset: the HPA's defaults.",
    )


class CanaryStep(ApiModel):
    """Send this share of the pods (so of the traffic) to the new version, then hold."""

    weight: int = Field(
        ge=1,
        le=100,
        description="Percent of the serving pods for the new version; 100 promotes it. "
        "The canary never has more pods than the stable version, so the share is at most "
        "half until promotion.",
    )
    pause_seconds: int = Field(
        default=60, ge=0, le=86400, description="How long to hold and analyse."
    )


class Analysis(ApiModel):
    """What the canary must show during each step to go on."""

    max_error_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Share of requests answered 5xx."
    )
    max_latency_ratio: float = Field(
        default=2.0, ge=1.0, le=100.0, description="Canary p99 latency over stable p99 latency."
    )
    min_requests: int = Field(
        default=20, ge=0, description="Below this the step is inconclusive and waits."
    )


class Rollout(ApiModel):
    """How a new version replaces the serving one."""

    __rules__ = (
        Rule(
            cel="self.strategy != 'Canary' || (has(self.steps) && self.steps.size() > 0)",
            message="a Canary rollout needs at least one step",
            check=lambda r: r.strategy != "Canary" or bool(r.steps),
            field=".steps",
            reason="FieldValueRequired",
        ),
        Rule(
            # steps has at most MAX_STEPS items; CEL has no index loop, so walk 1..MAX_STEPS-1
            # (an out-of-range index on the right of || is never evaluated to an error).
            cel="!has(self.steps) || "
            + str(list(range(1, MAX_STEPS)))
            + ".all(i, i >= self.steps.size() || self.steps[i - 1].weight < self.steps[i].weight)",
            message="canary step weights must increase from step to step",
            check=lambda r: all(
                a.weight < b.weight
                for a, b in zip(r.steps or [], (r.steps or [])[1:], strict=False)
            ),
            field=".steps",
        ),
    )

    strategy: Literal["RollingUpdate", "Canary"] = "RollingUpdate"
    steps: list[CanaryStep] | None = Field(default=None, max_length=MAX_STEPS)
    analysis: Analysis | None = None
    auto_rollback: bool = Field(
        default=True, description="Roll back a version that fails analysis or never gets ready."
    )
    progress_deadline_seconds: int = Field(default=600, ge=30, le=86400)
    max_canary_replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="At most this many canary pods (never more than the stable pods).",
    )


class ServiceSpec(ApiModel):
    """The Service in front of the serving pods."""

    port: int = Field(default=SERVICE_PORT, ge=1, le=65535)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"


S3_DESTINATION = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s?#]*)?$"
FIELD_NAME = r"^[^\s]{1,250}$"


class Feedback(ApiModel):
    """Ground truth for captured answers, posted to the model server's ``/feedback``.

    Labels feed retraining, so the endpoint takes a bearer token; the token stays in its
    Secret and reaches the server pods as ``secretKeyRef`` env."""

    __rules__ = (
        Rule(
            cel=f"!has(self.token.keys) || self.token.keys.all(k, k == '{FEEDBACK_TOKEN_ENV}')",
            message=f"token.keys may only name {FEEDBACK_TOKEN_ENV}",
            check=lambda f: set(f.token.keys or {}) <= {FEEDBACK_TOKEN_ENV},
            field=".token.keys",
            reason="FieldValueForbidden",
        ),
    )

    token: Credentials = Field(
        description="The bearer token: by default the Secret's key ``token`` "
        "(keys: {MODELWORKS_FEEDBACK_TOKEN: <key>} to name another)."
    )


class DataCapture(ApiModel):
    """Write a sample of the requests and answers to object storage as Parquet."""

    sampling_percent: float = Field(
        default=100.0, ge=0.0, le=100.0, description="Share of requests captured, in percent."
    )
    destination: str = Field(
        max_length=1024,
        pattern=S3_DESTINATION,
        description="s3://bucket/prefix; rows go under <prefix>/capture/, labels under "
        "<prefix>/feedback/ (docs/data-capture.md).",
    )
    redact: list[Annotated[str, Field(pattern=FIELD_NAME)]] | None = Field(
        default=None,
        max_length=256,
        description="Input fields written as null (never leave the pod).",
    )
    flush_interval: Duration = Field(
        default="30s", description="Longest time a captured row waits in the pod's buffer."
    )
    buffer_rows: int = Field(
        default=10000,
        ge=100,
        le=1_000_000,
        description="Rows a pod holds before it drops new ones (drops are counted).",
    )
    retention: Duration | None = Field(
        default=None, description="Partitions older than this are removed. Unset: kept."
    )
    feedback: Feedback | None = Field(
        default=None, description="Accept ground truth on /feedback. Unset: /feedback is off."
    )


class ModelDeploymentSpec(ApiModel):
    """The desired serving of a registered model."""

    __rules__ = (
        storage_env_rule(S3_ENV),
        Rule(
            cel=f"!has(self.env) || self.env.all(e, !(e.name in {_FEEDBACK_ENV_CEL}))",
            message="env may not set the /feedback variables (spec.dataCapture.feedback): "
            + ", ".join(FEEDBACK_ENV),
            check=lambda s: not any(e.name in FEEDBACK_ENV for e in s.env or []),
            field=".env",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!(has(self.replicas) && has(self.autoscaling))",
            message="set replicas or autoscaling, not both",
            check=lambda s: not (s.replicas is not None and s.autoscaling is not None),
            field=".replicas",
            reason="FieldValueForbidden",
        ),
    )

    model: ModelRef
    image: str | None = Field(
        default=None, max_length=1024, description="Server image; default: the Modelworks image."
    )
    image_pull_policy: PullPolicy | None = None
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Fixed replica count (no autoscaling)."
    )
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    env: list[EnvVar] | None = Field(
        default=None, max_length=128, json_schema_extra=list_map("name")
    )
    rollout: Rollout | None = None
    service: ServiceSpec | None = None
    workers: int = Field(default=1, ge=1, le=64, description="Server worker processes per pod.")
    pod_template: PodOverrides | None = None
    storage: ObjectStore | None = Field(
        default=None, description="Object storage the server pods write captured data to."
    )
    data_capture: DataCapture | None = None


DeploymentPhase = Literal["Pending", "Progressing", "Available", "Degraded", "Failed"]


class Resolved(StatusModel):
    version: str | None = None
    run_id: str | None = None
    source: str | None = None
    alias: str | None = None


class HistoryEntry(StatusModel):
    version: str
    model: str | None = Field(default=None, description="The registered model of ``version``.")
    since: str
    until: str | None = None
    reason: str | None = None


class CanaryStatus(StatusModel):
    """The canary in flight: its version, step (1-based), weight and what analysis saw."""

    version: str | None = None
    model: str | None = None
    step: int | None = None
    weight: int | None = None
    step_started: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    requests: int | None = None
    error_rate: float | None = None
    latency_ratio: float | None = None
    message: str | None = None


class RollbackInfo(StatusModel):
    """The last automatic rollback. While the target still resolves to ``fromVersion`` and
    the spec is unchanged (``observedGeneration``), the last good version stays pinned."""

    reason: str
    message: str | None = None
    from_version: str
    from_model: str | None = None
    to_version: str | None = None
    to_model: str | None = None
    at: str
    observed_generation: int | None = None


class DataCaptureStatus(StatusModel):
    rows_dropped: int | None = Field(
        default=None,
        ge=0,
        description="Captured rows the serving pods dropped (buffer full or writes failed), "
        "summed at the last check; counts restart with the pods.",
    )


class ModelDeploymentStatus(StatusModel):
    observed_generation: int | None = None
    phase: DeploymentPhase | None = None
    conditions: list[Condition] | None = Field(default=None, json_schema_extra=CONDITIONS_FIELD)
    resolved: Resolved | None = None
    stable_version: str | None = None
    stable_model: str | None = Field(
        default=None, description="The registered model of ``stableVersion``."
    )
    replicas: int | None = None
    ready_replicas: int | None = None
    canary: CanaryStatus | None = None
    url: str | None = None
    history: list[HistoryEntry] | None = None
    rollback: RollbackInfo | None = None
    data_capture: DataCaptureStatus | None = None


class ModelDeployment(ApiModel):
    spec: ModelDeploymentSpec


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Alias", "type": "string", "jsonPath": ".spec.model.alias"},
    {"name": "Version", "type": "string", "jsonPath": ".status.resolved.version"},
    condition_column("Ready", "Ready", "status"),
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    condition_column("Reason", "Ready", "reason", priority=1),
    {"name": "URL", "type": "string", "priority": 1, "jsonPath": ".status.url"},
    AGE_COLUMN,
]
