"""Types shared by the three kinds: the base model, rules, conditions, pod overrides.

Everything here is pure data. A model's cross-field rules are declared once, as
:class:`Rule`: the CEL expression goes into the CRD (so ``kubectl apply`` refuses bad
input with the field and the reason), and the same predicate, in Python, runs when
the operator parses an object (so a cluster with an older CRD cannot slip one past).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from modelworks.names import GROUP

VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "modelworks"


@dataclass(frozen=True)
class Rule:
    """A cross-field validation rule, enforced by the API server and by the operator.

    ``cel`` is evaluated with ``self`` bound to the object the rule is declared on;
    ``check`` is the same predicate over the parsed Python model. ``cel=None`` marks a
    rule CEL cannot express (values of a free-form map): the operator alone enforces it. ``field`` is the
    path, relative to that object, that the error names (``.model``), or ``""`` for
    the object itself.
    """

    cel: str | None
    message: str
    check: Callable[[Any], bool]
    field: str = ""
    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"] = (
        "FieldValueInvalid"
    )

    def to_schema(self) -> dict[str, Any]:
        assert self.cel is not None
        out: dict[str, Any] = {"rule": self.cel, "message": self.message, "reason": self.reason}
        if self.field:
            out["fieldPath"] = self.field
        return out


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )
    __rules__: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).__rules__:
            if not rule.check(self):
                raise PydanticCustomError(
                    "rule", "{message}", {"message": rule.message, "field": rule.field}
                )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core)
        target = handler.resolve_ref_schema(schema)
        if cls.__doc__ and cls.__doc__ is not ApiModel.__doc__:
            target["description"] = " ".join(cls.__doc__.split())
        cel_rules = [r.to_schema() for r in cls.__rules__ if r.cel]
        if cel_rules:
            target["x-kubernetes-validations"] = cel_rules
        return schema

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Base of status models. Status is written whole by the operator that computed it, so
    an unknown key is refused here as in a spec: it would be a defect, not a newer field."""


# ---------------------------------------------------------------------------
# Scalar types with their OpenAPI shape
# ---------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN, max_length=32, description="A duration such as 30s, 5m, 1h30m."
    ),
]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration string (``1h30m``, ``250ms``)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


def _check_quantity(value: int | str) -> int | str:
    from modelworks.api.quantity import parse_quantity

    parse_quantity(value)  # ValueError names the bad value
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 32,
        }
    ),
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
K8sName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=MODEL_NAME,
        description="Registered model name in the MLflow Model Registry.",
    ),
]
ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]*$"
_VERSION_LIKE_ALIAS = re.compile(r"^[vV][0-9]+$")
Alias = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=ALIAS,
        description="A registered-model alias, e.g. champion. Not 'latest' and not v<N>.",
    ),
]
METRIC_NAME = r"^[A-Za-z0-9_./ -]+$"
MetricName = Annotated[str, Field(min_length=1, max_length=250, pattern=METRIC_NAME)]

ALIAS_RULE_CEL = "self != 'latest' && !self.matches('^[vV][0-9]+$')"


def alias_ok(alias: str | None) -> bool:
    return alias is None or (alias != "latest" and not _VERSION_LIKE_ALIAS.match(alias))


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extension for a list merged by key (server-side apply, GitOps diffs)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def preserve_unknown(description: str) -> dict[str, Any]:
    """Schema for an embedded Kubernetes object we pass through (volumes, affinity)."""
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": description,
    }


# ---------------------------------------------------------------------------
# Conditions (metav1.Condition)
# ---------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(StatusModel):
    """One aspect of the object's state, shaped like metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")
    observed_generation: int | None = Field(default=None, ge=0)


CONDITIONS_FIELD: dict[str, Any] = {
    **list_map("type"),
    "description": "Conditions, one per type; the summary condition is Ready "
    "(Succeeded for a TrainingJob).",
}


def condition_column(
    name: str, type_: str, field: str = "status", *, priority: int = 0
) -> dict[str, Any]:
    """A printer column that selects a condition by type (never by position)."""
    column: dict[str, Any] = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].{field}',
    }
    if priority:
        column["priority"] = priority
    return column


AGE_COLUMN: dict[str, Any] = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
}


class ObjectRef(ApiModel):
    """A reference to an object in the same namespace."""

    name: K8sName


# ---------------------------------------------------------------------------
# Container and pod pieces
# ---------------------------------------------------------------------------


class KeySelector(ApiModel):
    name: K8sName
    key: str = Field(min_length=1, max_length=253)
    optional: bool | None = None


class FieldSelector(ApiModel):
    field_path: str = Field(min_length=1)
    api_version: str | None = None


class EnvVarSource(ApiModel):
    """Exactly one source for an environment variable's value."""

    __rules__ = (
        Rule(
            cel="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
            ".filter(x, x).size() == 1",
            message="exactly one of secretKeyRef, configMapKeyRef or fieldRef must be set",
            check=lambda s: [s.secret_key_ref, s.config_map_key_ref, s.field_ref].count(None) == 2,
        ),
    )

    secret_key_ref: KeySelector | None = None
    config_map_key_ref: KeySelector | None = None
    field_ref: FieldSelector | None = None


class EnvVar(ApiModel):
    """An environment variable for the containers: a value or a reference."""

    __rules__ = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="value and valueFrom are mutually exclusive",
            check=lambda e: not (e.value is not None and e.value_from is not None),
        ),
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    value: str | None = None
    value_from: EnvVarSource | None = None


ResourceName = Annotated[str, Field(max_length=63)]


class Resources(ApiModel):
    """Compute resources, as in a container's resources (nvidia.com/gpu included)."""

    __rules__ = (
        Rule(
            cel="!has(self.requests) || !has(self.limits) || "
            "self.requests.all(k, !(k in self.limits) || "
            "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
            message="every request must be less than or equal to its limit",
            check=lambda r: _requests_within_limits(r.requests, r.limits),
        ),
    )

    # At most 6 entries each keeps the requests-vs-limits rule within the CEL cost budget.
    requests: dict[ResourceName, Quantity] | None = Field(default=None, max_length=6)
    limits: dict[ResourceName, Quantity] | None = Field(default=None, max_length=6)


def _requests_within_limits(
    requests: dict[str, int | str] | None, limits: dict[str, int | str] | None
) -> bool:
    from modelworks.api.quantity import parse_quantity

    if not requests or not limits:
        return True
    return all(
        parse_quantity(v) <= parse_quantity(limits[k]) for k, v in requests.items() if k in limits
    )


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)]
EnvName = Annotated[str, Field(min_length=1, max_length=256, pattern=ENV_NAME)]


class Credentials(ApiModel):
    """Credentials kept in a Secret of the object's own namespace.

    The operator never reads the Secret: each pod that needs the credentials gets the
    Secret's keys as environment variables through ``secretKeyRef``, so no credential
    passes through the operator, its status, Events, logs, URIs or MLflow tags.
    """

    secret_name: K8sName = Field(description="The Secret, in the object's namespace.")
    keys: dict[EnvName, SecretKey] | None = Field(
        default=None,
        max_length=8,
        description="Environment variable -> key of the Secret. Unset: each variable the "
        "use needs (for object storage AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) is "
        "read from the key of the same name.",
    )


URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"


class ObjectStore(ApiModel):
    """How pods reach S3-compatible object storage (AWS S3, MinIO, Ceph, SeaweedFS,
    GCS interoperability): data they read, captured requests and labels, snapshots."""

    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=URL_PATTERN,
        description="http(s)://host[:port] of the S3 API, no credentials in it. Unset: AWS.",
    )
    region: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9-]+$")
    credentials: Credentials | None = Field(
        default=None,
        description="Unset: the pod's own identity (IRSA, workload identity, instance role).",
    )


def storage_env_rule(reserved: tuple[str, ...]) -> Rule:
    """env may not set what spec.storage sets (the credentials would be ambiguous)."""
    names = "[" + ", ".join(f"'{n}'" for n in reserved) + "]"
    return Rule(
        cel=f"!has(self.storage) || !has(self.env) || self.env.all(e, !(e.name in {names}))",
        message="env may not set a variable spec.storage sets: " + ", ".join(reserved),
        check=lambda s: s.storage is None or not any(e.name in reserved for e in s.env or []),
        field=".env",
        reason="FieldValueForbidden",
    )


class LocalObjectReference(ApiModel):
    name: K8sName


class PodOverrides(ApiModel):
    """Pod-level settings merged into every pod the operator creates for this object."""

    labels: dict[str, str] | None = Field(default=None, max_length=64)
    annotations: dict[str, str] | None = Field(default=None, max_length=64)
    node_selector: dict[str, str] | None = Field(default=None, max_length=32)
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    affinity: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra=preserve_unknown("A core/v1 Affinity, passed through."),
    )
    volumes: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "items": preserve_unknown("A core/v1 Volume, passed through."),
        },
    )
    volume_mounts: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={
            "items": preserve_unknown("A core/v1 VolumeMount for the main container."),
        },
    )
    service_account_name: K8sName | None = None
    image_pull_secrets: list[LocalObjectReference] | None = Field(default=None, max_length=16)
    priority_class_name: K8sName | None = None
    scheduler_name: str | None = Field(default=None, max_length=253)
    runtime_class_name: K8sName | None = None


PullPolicy = Literal["Always", "IfNotPresent", "Never"]
