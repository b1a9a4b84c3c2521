"""Operator configuration, read from environment variables in this one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelworks.names import HEALTH_PORT, METRICS_PORT

PREFIX = "MODELWORKS_"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Every knob of the operator. :meth:`from_env` documents the variable of each."""

    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    resync_seconds: float = 300.0
    health_port: int = HEALTH_PORT
    metrics_port: int = METRICS_PORT
    mlflow_tracking_uri: str = ""
    mlflow_ui_url: str = ""
    image: str = "modelworks:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    workers: int = 4
    min_requeue_seconds: float = 1.0
    drain_seconds: float = 20.0
    leader_election: str = ""  # a Lease name; empty: this replica always runs passes
    lease_namespace: str = ""
    identity: str = ""
    log_format: str = "plain"
    log_level: str = "INFO"
    metrics_max_bytes: int = 4 * MIB
    metrics_deadline_seconds: float = 5.0
    prometheus_max_bytes: int = 8 * MIB
    prometheus_deadline_seconds: float = 10.0
    profile_max_bytes: int = 64 * MIB
    profile_deadline_seconds: float = 60.0
    calibration_max_cells: int = 4_000_000
    mlflow_request_timeout_seconds: int = 4
    mlflow_request_retries: int = 1
    mlflow_concurrency: int = 2
    mlflow_slot_wait_seconds: float = 1.0
    mlflow_breaker_failures: int = 3
    mlflow_breaker_cool_down_seconds: float = 15.0
    shared_models: Mapping[str, frozenset[str]] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse settings; ``ValueError`` names the variable that is wrong.

        MODELWORKS_NAMESPACES          comma-separated namespaces to watch (default: all)
        MODELWORKS_RESYNC_SECONDS      level-based resync period of every object (300)
        MODELWORKS_HEALTH_PORT         liveness endpoint /healthz (8080; 0 disables)
        MODELWORKS_METRICS_PORT        Prometheus /metrics (8081; 0 disables)
        MODELWORKS_MLFLOW_TRACKING_URI MLflow server (falls back to MLFLOW_TRACKING_URI)
        MODELWORKS_MLFLOW_UI_URL       base URL for run links in status (default: tracking URI)
        MODELWORKS_IMAGE               image for model servers and batch jobs
        MODELWORKS_IMAGE_PULL_POLICY   pull policy of that image (IfNotPresent)
        MODELWORKS_WORKERS             passes that may run at once, one per object (4)
        MODELWORKS_DRAIN_SECONDS       on SIGTERM, how long running passes may finish (20)
        MODELWORKS_LEADER_ELECTION     Lease name for active/standby replicas (default: none,
                                       this replica runs passes)
        POD_NAMESPACE                  the Lease's namespace (the operator's own)
        POD_NAME                       this replica's identity in the Lease (default: host:pid)
        MODELWORKS_LOG_FORMAT          plain or json
        MODELWORKS_LOG_LEVEL           DEBUG, INFO, WARNING, ERROR
        MODELWORKS_METRICS_MAX_BYTES   largest serving pod /metrics body read (4 MiB)
        MODELWORKS_METRICS_DEADLINE_SECONDS  one /metrics scrape, connect to last byte (5)
        MODELWORKS_PROMETHEUS_MAX_BYTES      largest Prometheus query answer read (8 MiB)
        MODELWORKS_PROMETHEUS_DEADLINE_SECONDS  one Prometheus query in all (10)
        MODELWORKS_PROFILE_MAX_BYTES   largest reference profile the operator downloads (64 MiB)
        MODELWORKS_PROFILE_DEADLINE_SECONDS  one profile download in all (60)
        MODELWORKS_CALIBRATION_MAX_CELLS  bootstrap resamples x buckets one live check may
                                       draw, all features together (4000000)
        MODELWORKS_MLFLOW_REQUEST_TIMEOUT_SECONDS  each MLflow HTTP attempt's connect and
                                       read timeout (4)
        MODELWORKS_MLFLOW_REQUEST_RETRIES  retries of a failed MLflow request (1): one call
                                       takes at most timeout x (retries + 1) seconds
        MODELWORKS_MLFLOW_CONCURRENCY  MLflow calls that may be in flight at once (2); the
                                       other passes do not wait on MLflow
        MODELWORKS_MLFLOW_SLOT_WAIT_SECONDS  how long a call waits for one of those (1)
        MODELWORKS_MLFLOW_BREAKER_FAILURES  failed MLflow calls in a row that open the
                                       circuit breaker (3): calls then fail fast
        MODELWORKS_MLFLOW_BREAKER_COOL_DOWN_SECONDS  how long it stays open before one call
                                       probes MLflow again (15)
        MODELWORKS_SHARED_MODELS       models a cluster admin shares beyond their owner's
                                       namespace: model=ns1,ns2;other=* (docs/tenancy.md)
        """
        env = os.environ if env is None else env
        read = _Reader(env)
        log_format, log_level, pull = read.choices()
        tracking = read.get("MLFLOW_TRACKING_URI") or env.get("MLFLOW_TRACKING_URI", "").strip()
        d = cls()
        return cls(
            namespaces=tuple(n.strip() for n in read.get("NAMESPACES").split(",") if n.strip()),
            resync_seconds=read.number("RESYNC_SECONDS", 300.0, minimum=1),
            health_port=read.port("HEALTH_PORT", HEALTH_PORT),
            metrics_port=read.port("METRICS_PORT", METRICS_PORT),
            mlflow_tracking_uri=tracking,
            mlflow_ui_url=read.get("MLFLOW_UI_URL") or tracking,
            image=read.get("IMAGE", "modelworks:0.1.0"),
            image_pull_policy=pull,
            workers=int(read.number("WORKERS", 4, minimum=1)),
            drain_seconds=read.number("DRAIN_SECONDS", 20.0),
            leader_election=read.get("LEADER_ELECTION"),
            lease_namespace=env.get("POD_NAMESPACE", "").strip(),
            identity=env.get("POD_NAME", "").strip(),
            log_format=log_format,
            log_level=log_level,
            metrics_max_bytes=read.count("METRICS_MAX_BYTES", d.metrics_max_bytes),
            metrics_deadline_seconds=read.number(
                "METRICS_DEADLINE_SECONDS", d.metrics_deadline_seconds, minimum=0.1
            ),
            prometheus_max_bytes=read.count("PROMETHEUS_MAX_BYTES", d.prometheus_max_bytes),
            prometheus_deadline_seconds=read.number(
                "PROMETHEUS_DEADLINE_SECONDS", d.prometheus_deadline_seconds, minimum=0.1
            ),
            profile_max_bytes=read.count("PROFILE_MAX_BYTES", d.profile_max_bytes),
            profile_deadline_seconds=read.number(
                "PROFILE_DEADLINE_SECONDS", d.profile_deadline_seconds, minimum=0.1
            ),
            calibration_max_cells=read.count("CALIBRATION_MAX_CELLS", d.calibration_max_cells),
            mlflow_request_timeout_seconds=int(
                read.number("MLFLOW_REQUEST_TIMEOUT_SECONDS", 4, minimum=1)
            ),
            mlflow_request_retries=int(read.number("MLFLOW_REQUEST_RETRIES", 1)),
            mlflow_concurrency=int(read.number("MLFLOW_CONCURRENCY", 2, minimum=1)),
            mlflow_slot_wait_seconds=read.number("MLFLOW_SLOT_WAIT_SECONDS", 1.0),
            mlflow_breaker_failures=int(read.number("MLFLOW_BREAKER_FAILURES", 3, minimum=1)),
            mlflow_breaker_cool_down_seconds=read.number("MLFLOW_BREAKER_COOL_DOWN_SECONDS", 15.0),
            shared_models=_sharing(read.get("SHARED_MODELS")),
        )

    def mlflow_client_env(self) -> dict[str, str]:
        """The MLflow client's own variables that bound one call to
        ``timeout x (retries + 1)`` seconds (urllib3 sleeps no backoff before a first retry)."""
        return {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.mlflow_request_timeout_seconds),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.mlflow_request_retries),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        }


@dataclass(frozen=True)
class _Reader:
    """Reads ``MODELWORKS_<name>`` variables; each ``ValueError`` names the variable."""

    env: Mapping[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.env.get(PREFIX + name, default).strip()

    def number(self, name: str, default: float, *, minimum: float = 0) -> float:
        text = self.get(name, str(default))
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{PREFIX}{name} must be a number, not {text!r}") from None
        if value < minimum:
            raise ValueError(f"{PREFIX}{name} must be at least {minimum}, not {text!r}")
        return value

    def count(self, name: str, default: int) -> int:
        value = self.number(name, default, minimum=1)
        if value != int(value):
            raise ValueError(f"{PREFIX}{name} must be a whole number")
        return int(value)

    def port(self, name: str, default: int) -> int:
        value = self.number(name, default)
        if value != int(value) or value > 65535:
            raise ValueError(f"{PREFIX}{name} must be a port number (0 disables)")
        return int(value)

    def choices(self) -> tuple[str, str, str]:
        """The log format, the log level and the image pull policy, each from its list."""
        log_format = self.get("LOG_FORMAT", "plain")
        if log_format not in ("plain", "json"):
            raise ValueError(f"{PREFIX}LOG_FORMAT must be plain or json, not {log_format!r}")
        log_level = self.get("LOG_LEVEL", "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        pull = self.get("IMAGE_PULL_POLICY", "IfNotPresent")
        if pull not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"{PREFIX}IMAGE_PULL_POLICY must be Always, IfNotPresent or Never")
        return log_format, log_level, pull


def _sharing(text: str) -> dict[str, frozenset[str]]:
    """``MODELWORKS_SHARED_MODELS``: ``model=ns1,ns2;other=*`` -> {model: namespaces}.

    Raises ValueError naming the entry that is wrong.
    """
    out: dict[str, frozenset[str]] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        model, eq, names = entry.partition("=")
        namespaces = frozenset(n.strip() for n in names.split(",") if n.strip())
        if not eq or not model.strip() or not namespaces:
            raise ValueError(
                f"{PREFIX}SHARED_MODELS: {entry!r} is not <model>=<namespace>[,<namespace>...] or <model>=*"
            )
        out[model.strip()] = out.get(model.strip(), frozenset()) | namespaces
    return out
