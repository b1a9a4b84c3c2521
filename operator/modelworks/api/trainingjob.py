"""TrainingJob: run a trainer on Kubernetes, track it in MLflow, register what passes the gate."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from modelworks.api.common import (
    AGE_COLUMN,
    ALIAS_RULE_CEL,
    CONDITIONS_FIELD,
    Alias,
    ApiModel,
    Condition,
    EnvVar,
    MetricName,
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
from modelworks.names import RENDEZVOUS_PORT, S3_ENV

KIND = "TrainingJob"
PLURAL = "trainingjobs"
SHORT_NAMES = ("tj",)
# A Job named <name>-<run key> has pods whose host names are <job>-<index>: keep the
# TrainingJob name short enough for that to stay a 63-character DNS label.
MAX_NAME_LENGTH = 48  # + "-" + 8-hex run key + "-" + index <= 63

# Variables the operator sets in every training pod; a user's env may not override them.
RESERVED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "MODELWORKS_HYPERPARAMETERS",
    "MODELWORKS_DATASET_URI",
    "MODELWORKS_DATASET_VERSION",
    "MODELWORKS_MODEL_NAME",
    "MODELWORKS_MODEL_ARTIFACT_PATH",
)
_RESERVED_CEL = "[" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "]"

HyperValue = str | int | float | bool
HYPER_KEY = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class Dataset(ApiModel):
    """The data the trainer reads; recorded as lineage on the run and the model version."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the data is (s3://, file://, https://, a path).",
    )
    version: str | None = Field(
        default=None, max_length=253, description="A version, digest or snapshot id."
    )


class ModelTarget(ApiModel):
    """What to register when the run succeeds and passes the quality gate."""

    __rules__ = (
        Rule(
            cel=f"!has(self.alias) || ({ALIAS_RULE_CEL.replace('self', 'self.alias')})",
            message="alias may not be 'latest' or look like a version (v1, V2)",
            check=lambda m: alias_ok(m.alias),
            field=".alias",
        ),
    )

    name: ModelName
    artifact_path: str = Field(
        default="model",
        min_length=1,
        max_length=1024,
        pattern=r"^[^/].*$",
        description="Path of the logged model inside the run's artifacts (runs:/<run>/<artifactPath>).",
    )
    alias: Alias | None = Field(
        default=None, description="Alias to point at the new version, e.g. champion."
    )
    tags: dict[str, str] | None = Field(
        default=None, max_length=32, description="Extra tags for the model version."
    )


GateOp = Literal[">", ">=", "<", "<="]


class Baseline(ApiModel):
    """Compare with the same metric of the version that holds an alias now."""

    alias: Alias
    min_relative_change: float = Field(
        default=0.0,
        ge=0.0,
        le=10.0,
        description="Required improvement as a fraction of the baseline, e.g. 0.01 for 1%.",
    )


class GateRule(ApiModel):
    """One rule of the quality gate: metric <op> value, and/or better than a baseline version."""

    __rules__ = (
        Rule(
            cel="has(self.value) || has(self.baseline)",
            message="a quality gate rule needs a value, a baseline, or both",
            check=lambda g: g.value is not None or g.baseline is not None,
        ),
    )

    metric: MetricName
    op: GateOp = Field(
        default=">=", description="How the run's metric must compare with value (and the baseline)."
    )
    value: float | None = None
    baseline: Baseline | None = None


class Distributed(ApiModel):
    """Settings of the rendezvous for replicas > 1 (torch.distributed style)."""

    master_port: int = Field(default=RENDEZVOUS_PORT, ge=1024, le=65535)


ColumnType = Literal["numeric", "integer", "string", "boolean", "categorical"]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
BUILTIN_PREFIX = "builtin://"


class ColumnSpec(ApiModel):
    """One column the dataset must have, and its type."""

    name: ColumnName
    type: ColumnType = Field(
        description="numeric (integers or floats), integer, string, boolean, or categorical "
        "(any type: the column must only exist).",
    )


class TableSchema(ApiModel):
    """The columns the dataset must have: listed, or those of a version's reference profile."""

    __rules__ = (
        Rule(
            cel="has(self.columns) != has(self.fromAlias)",
            message="schema takes either columns or fromAlias, not both and not neither",
            check=lambda s: (s.columns is None) != (s.from_alias is None),
        ),
        Rule(
            cel=f"!has(self.fromAlias) || ({ALIAS_RULE_CEL.replace('self', 'self.fromAlias')})",
            message="fromAlias may not be 'latest' or look like a version (v1, V2)",
            check=lambda s: s.from_alias is None or alias_ok(s.from_alias),
            field=".fromAlias",
        ),
    )

    columns: list[ColumnSpec] | None = Field(
        default=None, min_length=1, max_length=1000, json_schema_extra=list_map("name")
    )
    from_alias: Alias | None = Field(
        default=None,
        description="Take the columns and their types (numeric or categorical) from the "
        "reference profile of the version of spec.model.name that holds this alias.",
    )
    allow_extra_columns: bool = Field(
        default=True, description="false: a column the schema does not name fails the check."
    )


class ColumnMissing(ApiModel):
    """The missing share allowed in one column, over the default."""

    column: ColumnName
    max_missing_share: Share


class LabelCheck(ApiModel):
    """The label column: which classes must be present, and how balanced they must be."""

    __rules__ = (
        Rule(
            cel="!has(self.minClassShare) || !has(self.maxClassShare) "
            "|| self.minClassShare <= self.maxClassShare",
            message="minClassShare may not be over maxClassShare",
            check=lambda c: (
                c.min_class_share is None
                or c.max_class_share is None
                or c.min_class_share <= c.max_class_share
            ),
            field=".minClassShare",
        ),
    )

    column: ColumnName
    classes: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None,
        max_length=1000,
        description="Classes that must each be present (compared as text: 1, yes).",
    )
    min_class_share: Share | None = Field(
        default=None, description="Every class present must be at least this share of the rows."
    )
    max_class_share: Share | None = Field(
        default=None, description="No class may be more than this share of the rows."
    )


class DataValidation(ApiModel):
    """Checks of spec.dataset run by a Job before anything trains; a failure trains nothing."""

    __rules__ = (
        Rule(
            cel="has(self.schema) || has(self.minRows) || has(self.maxMissingShare) "
            "|| has(self.missingByColumn) || has(self.label)",
            message="dataValidation needs at least one check: schema, minRows, "
            "maxMissingShare, missingByColumn or label",
            check=lambda v: any(
                x is not None
                for x in (
                    v.table_schema,
                    v.min_rows,
                    v.max_missing_share,
                    v.missing_by_column,
                    v.label,
                )
            ),
        ),
    )

    table_schema: TableSchema | None = Field(default=None, alias="schema")
    min_rows: int | None = Field(default=None, ge=1, description="The fewest rows allowed.")
    max_missing_share: Share | None = Field(
        default=None, description="Missing (null or NaN) share allowed in any column."
    )
    missing_by_column: list[ColumnMissing] | None = Field(
        default=None,
        max_length=1000,
        description="Per-column missing shares, over maxMissingShare.",
        json_schema_extra=list_map("column"),
    )
    label: LabelCheck | None = None


CleanPodPolicy = Literal["All", "Running", "None"]


class TrainingJobSpec(ApiModel):
    """The desired training run. A change of anything but suspend starts a new run."""

    __rules__: ClassVar[tuple[Rule, ...]] = (
        storage_env_rule(S3_ENV),
        Rule(
            cel=f"!has(self.env) || self.env.all(e, !(e.name in {_RESERVED_CEL}))",
            message="env may not set a variable the operator sets: " + ", ".join(RESERVED_ENV),
            check=lambda s: not any(e.name in RESERVED_ENV for e in s.env or []),
            field=".env",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.dataValidation) || has(self.dataset)",
            message="dataValidation needs spec.dataset: it checks the dataset before training",
            check=lambda s: s.data_validation is None or s.dataset is not None,
            field=".dataValidation",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=f"!has(self.dataValidation) || !has(self.dataset) "
            f"|| !self.dataset.uri.startsWith('{BUILTIN_PREFIX}')",
            message=f"dataValidation cannot read a {BUILTIN_PREFIX} dataset: only the example "
            "trainer knows what it holds",
            check=lambda s: (
                s.data_validation is None
                or s.dataset is None
                or not s.dataset.uri.startswith(BUILTIN_PREFIX)
            ),
            field=".dataValidation",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.dataValidation) || !has(self.dataValidation.schema) "
            "|| !has(self.dataValidation.schema.fromAlias) || has(self.model)",
            message="dataValidation.schema.fromAlias names an alias of spec.model: set spec.model",
            check=lambda s: (
                s.data_validation is None
                or s.data_validation.table_schema is None
                or s.data_validation.table_schema.from_alias is None
                or s.model is not None
            ),
            field=".dataValidation.schema.fromAlias",
            reason="FieldValueRequired",
        ),
        Rule(
            # CEL cannot type the values of a free-form map: the operator enforces this one.
            cel=None,
            message="hyperparameter values must be strings, numbers or booleans",
            check=lambda s: all(
                isinstance(v, str | int | float | bool) for v in (s.hyperparameters or {}).values()
            ),
            field=".hyperparameters",
        ),
    )

    image: str = Field(min_length=1, max_length=1024, description="Container image of the trainer.")
    image_pull_policy: PullPolicy | None = None
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, max_length=64
    )
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(default=None, max_length=256)
    env: list[EnvVar] | None = Field(
        default=None, max_length=128, json_schema_extra=list_map("name")
    )
    resources: Resources | None = None
    replicas: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Number of training processes. More than one runs an Indexed Job with "
        "MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK set.",
    )
    distributed: Distributed | None = None
    hyperparameters: dict[Annotated[str, Field(pattern=HYPER_KEY, max_length=250)], Any] | None = (
        Field(
            default=None,
            max_length=100,
            description="Logged as MLflow params and passed to the pods as MODELWORKS_HYPERPARAMETERS "
            "(JSON) and as HP_<NAME> variables.",
            json_schema_extra={
                "additionalProperties": {"x-kubernetes-preserve-unknown-fields": True}
            },
        )
    )
    dataset: Dataset | None = None
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="MLflow experiment; default <namespace>-<name>.",
    )
    model: ModelTarget | None = Field(
        default=None, description="Register the trained model; omit to only track the run."
    )
    quality_gate: list[GateRule] | None = Field(
        default=None,
        max_length=16,
        description="Every rule must hold for the model to be registered.",
    )
    backoff_limit: int = Field(
        default=0, ge=0, le=100, description="Retries of a failed training pod."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the run after this long."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete the finished Job and its pods after this long (the status stays).",
    )
    clean_pod_policy: CleanPodPolicy = Field(
        default="None",
        description="Pods to delete when the run ends: All, Running (left-over ones), None (keep for debugging).",
    )
    suspend: bool = Field(
        default=False, description="true stops the pods; false starts them again."
    )
    pod_template: PodOverrides | None = None
    storage: ObjectStore | None = Field(
        default=None, description="Object storage the training pods read data from."
    )
    data_validation: DataValidation | None = Field(
        default=None,
        description="Check spec.dataset with a Job before the MLflow run and any training "
        "pod; a failed check trains nothing (condition DataValidated).",
    )


TrainingPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class MlflowRef(StatusModel):
    experiment_id: str | None = None
    run_id: str | None = None
    run_url: str | None = None


class RegisteredModel(StatusModel):
    name: str
    version: str
    alias: str | None = None
    source: str | None = None


class GateResult(StatusModel):
    metric: str
    op: str
    value: float | None = None
    threshold: float | None = None
    passed: bool


class GateBaseline(StatusModel):
    """The model version a baseline rule was judged against."""

    version: str
    run_id: str | None = None


class QualityGateStatus(StatusModel):
    passed: bool | None = None
    summary: str | None = Field(default=None, description="One line, e.g. 'val_auc=0.93 >= 0.9'.")
    results: list[GateResult] | None = None
    run_id: str | None = Field(
        default=None,
        description="The MLflow run this verdict judged: a run is judged once, and later "
        "passes of the same run keep the verdict.",
    )
    baselines: dict[str, GateBaseline] | None = Field(
        default=None,
        description="alias -> the version that held it when the run was judged (an alias no "
        "version held is left out).",
    )


class Progress(StatusModel):
    step: int | None = None
    epoch: int | None = None
    percent: float | None = None


class ValidationFailure(StatusModel):
    """One failed check: the rule, the column, what was found and what was allowed."""

    rule: str
    column: str | None = None
    message: str
    value: float | None = None
    limit: float | None = None


class DataValidationStatus(StatusModel):
    job_name: str | None = None
    passed: bool | None = None
    summary: str | None = None
    rows: int | None = None
    failures: list[ValidationFailure] | None = None


class TrainingJobStatus(StatusModel):
    observed_generation: int | None = None
    phase: TrainingPhase | None = None
    conditions: list[Condition] | None = Field(default=None, json_schema_extra=CONDITIONS_FIELD)
    job_name: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    attempts: int | None = None
    mlflow: MlflowRef | None = None
    metrics: dict[str, float] | None = None
    progress: Progress | None = None
    quality_gate: QualityGateStatus | None = None
    registered_model: RegisteredModel | None = None
    data_validation: DataValidationStatus | None = None


class TrainingJob(ApiModel):
    spec: TrainingJobSpec


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    condition_column("Succeeded", "Succeeded", "status"),
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Version", "type": "string", "jsonPath": ".status.registeredModel.version"},
    {"name": "Gate", "type": "string", "jsonPath": ".status.qualityGate.summary"},
    condition_column("Reason", "Succeeded", "reason", priority=1),
    {"name": "Run", "type": "string", "priority": 1, "jsonPath": ".status.mlflow.runId"},
    AGE_COLUMN,
]
