"""The names the layers share: label, annotation and tag keys, ports, metric names, times.

The bottom layer: every other layer may import it, and it imports nothing from
modelworks (only the standard library). Each name is defined here once; a label read by
a reconciler is the same constant the builder wrote, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# --- the API group ---------------------------------------------------------------------

GROUP = "modelworks.dev"
PREFIX = "modelworks.dev/"  # of our labels, annotations and MLflow tags

# --- Kubernetes' recommended labels (app.kubernetes.io) -----------------------------------

APP_PREFIX = "app.kubernetes.io/"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY = "modelworks"  # the value of MANAGED_BY_LABEL on everything the operator makes
REPORTING_CONTROLLER = "modelworks.dev/operator"  # reportingComponent of our Events
# Label prefixes the operator owns on its children: a user's labels under them are not copied.
RESERVED_PREFIXES = (APP_PREFIX, PREFIX)

# --- our labels --------------------------------------------------------------------------

TRAINING_JOB_LABEL = "modelworks.dev/trainingjob"  # owner: the TrainingJob's name
MODEL_DEPLOYMENT_LABEL = "modelworks.dev/modeldeployment"  # owner: the ModelDeployment's name
TRAINING_KEY_LABEL = "modelworks.dev/training-key"  # a TrainingJob's Job: which run it is
TRACK_LABEL = "modelworks.dev/track"  # serving pods: stable or canary
VERSION_LABEL = "modelworks.dev/model-version"  # serving pods: the model version they serve
MONITOR_LABEL = "modelworks.dev/drift-monitor"  # a retraining TrainingJob: who started it
MONITOR_UID_LABEL = "modelworks.dev/drift-monitor-uid"  # ... and that monitor's uid
RETRAIN_OF_LABEL = "modelworks.dev/retrain-of"  # a retraining TrainingJob: what it repeats
CHECK_KEY_LABEL = "modelworks.dev/check-key"  # a batch drift check Job: which check it is
RETRAIN_KEY_LABEL = "modelworks.dev/retrain-key"  # a snapshot Job: which retraining decision


def kind_label(kind: str) -> str:
    """The owner label of a kind's children: ``modelworks.dev/<kind, lower case>``."""
    return f"{PREFIX}{kind.lower()}"


# Labels of other projects the operator copies from an object to its children.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

# --- our annotations ---------------------------------------------------------------------

HASH_ANNOTATION = "modelworks.dev/desired-hash"  # digest of a child as last applied
EXPERIMENT_ANNOTATION = "modelworks.dev/mlflow-experiment-id"  # a TrainingJob's Job
RUN_ANNOTATION = "modelworks.dev/mlflow-run-id"  # a TrainingJob's Job
TRIGGER_ANNOTATION = (
    "modelworks.dev/retrain-trigger"  # a retraining TrainingJob: drift|schedule|performance
)
MONITOR_GENERATION_ANNOTATION = "modelworks.dev/drift-monitor-generation"  # ... of which spec
EVIDENCE_ANNOTATION = "modelworks.dev/drift-evidence"  # a retraining TrainingJob: the scores
SNAPSHOT_ANNOTATION = "modelworks.dev/snapshot"  # a retraining TrainingJob: its data (JSON)
HOLDOUT_ANNOTATION = "modelworks.dev/holdout-uri"  # ... and the holdout taken beside it
# A TrainingJob's annotations its MLflow run and model version carry as tags (lineage).
LINEAGE_ANNOTATIONS = (
    TRIGGER_ANNOTATION,
    EVIDENCE_ANNOTATION,
    SNAPSHOT_ANNOTATION,
    HOLDOUT_ANNOTATION,
)

# Prometheus' conventional scrape annotations (serving pods).
SCRAPE_ANNOTATION = "prometheus.io/scrape"
SCRAPE_PORT_ANNOTATION = "prometheus.io/port"
SCRAPE_PATH_ANNOTATION = "prometheus.io/path"

# --- MLflow tags on runs and model versions (lineage) ------------------------------------

SOURCE_TAG = "modelworks.dev/source"  # <uid>/<training key>: finds a run again
NAMESPACE_TAG = "modelworks.dev/namespace"
TRAINING_JOB_TAG = "modelworks.dev/trainingjob"
UID_TAG = "modelworks.dev/uid"
GENERATION_TAG = "modelworks.dev/generation"
TRAINING_KEY_TAG = "modelworks.dev/training-key"
IMAGE_TAG = "modelworks.dev/image"
DATASET_URI_TAG = "modelworks.dev/dataset-uri"
DATASET_VERSION_TAG = "modelworks.dev/dataset-version"
RUN_ID_TAG = "modelworks.dev/run-id"
HYPERPARAMETERS_TAG = "modelworks.dev/hyperparameters"
ANNOTATION_TAG_PREFIX = "modelworks.dev/annotation."  # + the annotation key, '/' as '.'

# --- MLflow tags on registered models (tenancy) ------------------------------------------

# The namespace that owns a registered model: set by the operator when it first creates
# the model (or claims one registered before ownership existed). The same key as
# NAMESPACE_TAG, which records the namespace a run or a version came from.
OWNER_TAG = NAMESPACE_TAG

# --- ports ------------------------------------------------------------------------------

SERVER_PORT = 8080  # the model server (scoring and /metrics)
SERVICE_PORT = 80  # a ModelDeployment's Service, by default
HEALTH_PORT = 8080  # the operator's /healthz, by default
METRICS_PORT = 8081  # the operator's /metrics, by default
RENDEZVOUS_PORT = 23456  # a distributed TrainingJob's MASTER_PORT, by default

# --- environment ----------------------------------------------------------------------

MODEL_URI_ENV = "MODELWORKS_MODEL_URI"  # what a model server serves
HOLDOUT_URI_ENV = "MODELWORKS_HOLDOUT_URI"  # a retraining on a snapshot: its holdout
# Object storage in pods (spec.storage): the variables boto3, pyarrow and MLflow all read.
S3_ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
S3_SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"
S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"
MLFLOW_S3_ENDPOINT_ENV = "MLFLOW_S3_ENDPOINT_URL"
S3_REGION_ENV = "AWS_REGION"
S3_ENV = (
    S3_ACCESS_KEY_ENV,
    S3_SECRET_KEY_ENV,
    S3_ENDPOINT_ENV,
    MLFLOW_S3_ENDPOINT_ENV,
    S3_REGION_ENV,
)
# Ground truth on the model server's POST /feedback (spec.dataCapture.feedback): the bearer
# token (only ever a secretKeyRef) and where the labels go (the capture destination).
FEEDBACK_TOKEN_ENV = "MODELWORKS_FEEDBACK_TOKEN"
FEEDBACK_TOKEN_KEY = "token"  # the Secret's key, unless spec.dataCapture.feedback.token.keys
FEEDBACK_DESTINATION_ENV = "MODELWORKS_FEEDBACK_DESTINATION"
FEEDBACK_ENV = (FEEDBACK_TOKEN_ENV, FEEDBACK_DESTINATION_ENV)
# spec.dataCapture for the model server, as JSON (no credential: those come from S3_ENV).
CAPTURE_CONFIG_ENV = "MODELWORKS_DATA_CAPTURE"
CAPTURE_STOP_SECONDS = 20  # a stopping server's last flush; its pod's grace period adds it

# --- metrics the model server exports and the operator reads ------------------------------

SERVING_REQUESTS_METRIC = "modelworks_serving_requests_total"
SERVING_LATENCY_METRIC = "modelworks_serving_request_duration_seconds"
SERVING_LATENCY_BUCKET = "modelworks_serving_request_duration_seconds_bucket"
FEATURE_METRIC_PREFIX = "modelworks_feature_"
FEATURE_BUCKET_METRIC = "modelworks_feature_bucket_total"
FEATURE_MISSING_METRIC = "modelworks_feature_missing_total"
PREDICTION_METRIC_PREFIX = "modelworks_prediction_"
PREDICTION_BUCKET_METRIC = "modelworks_prediction_bucket_total"
PREDICTION_MISSING_METRIC = "modelworks_prediction_missing_total"
FEEDBACK_LABELS_METRIC = "modelworks_feedback_labels_total"
FEEDBACK_REFUSED_METRIC = "modelworks_feedback_refused_requests_total"
REQUEST_ID_HEADER = "x-request-id"  # the inference id, kept from the client or made
CAPTURE_METRIC_PREFIX = "modelworks_capture_"
CAPTURE_ROWS_METRIC = "modelworks_capture_rows_total"
CAPTURE_WRITTEN_METRIC = "modelworks_capture_written_rows_total"
CAPTURE_DROPPED_METRIC = "modelworks_capture_dropped_rows_total"
CAPTURE_FLUSH_METRIC = "modelworks_capture_last_flush_timestamp_seconds"
CAPTURE_ERROR_METRIC = "modelworks_capture_last_error_timestamp_seconds"
CAPTURE_DROP_BUFFER_FULL = "buffer_full"
CAPTURE_DROP_WRITE_FAILED = "write_failed"

# --- times: RFC 3339 in UTC, whole seconds, "Z" (what Kubernetes writes) -----------------


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset) as an aware datetime; naive text counts as UTC.

    Raises ValueError when ``text`` is no time.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_time_or_none(value: Any) -> datetime | None:
    """Like :func:`parse_time`, but None for anything that is not a time (for display)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def format_time(t: datetime) -> str:
    """``2026-01-01T12:00:00Z``: in UTC, without fractions; a naive time counts as UTC."""
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def later(now: str, seconds: float) -> str:
    """The time ``seconds`` after ``now``, formatted."""
    return format_time(parse_time(now) + timedelta(seconds=seconds))


def seconds_between(start: str, end: str) -> float:
    """``end - start`` in seconds (negative when ``end`` is earlier)."""
    return (parse_time(end) - parse_time(start)).total_seconds()
