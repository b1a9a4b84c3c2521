"""The Modelworks API (modelworks.dev/v1alpha1): one module per kind plus common types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelworks.api import driftmonitor, modeldeployment, trainingjob
from modelworks.api.common import API_VERSION, CATEGORY, GROUP, VERSION, ApiModel, StatusModel


@dataclass(frozen=True)
class Kind:
    """Everything the rest of the operator needs to know about one custom resource."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[ApiModel]
    status: type[StatusModel]
    printer_columns: list[dict[str, Any]]
    max_name_length: int
    summary: str  # the summary condition: Ready, or Succeeded for a TrainingJob
    name_pattern: str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

    @property
    def singular(self) -> str:
        return self.kind.lower()


TRAINING_JOB = Kind(
    kind=trainingjob.KIND,
    plural=trainingjob.PLURAL,
    short_names=trainingjob.SHORT_NAMES,
    spec=trainingjob.TrainingJobSpec,
    status=trainingjob.TrainingJobStatus,
    printer_columns=trainingjob.PRINTER_COLUMNS,
    max_name_length=trainingjob.MAX_NAME_LENGTH,
    summary="Succeeded",
)
MODEL_DEPLOYMENT = Kind(
    kind=modeldeployment.KIND,
    plural=modeldeployment.PLURAL,
    short_names=modeldeployment.SHORT_NAMES,
    spec=modeldeployment.ModelDeploymentSpec,
    status=modeldeployment.ModelDeploymentStatus,
    printer_columns=modeldeployment.PRINTER_COLUMNS,
    max_name_length=modeldeployment.MAX_NAME_LENGTH,
    summary="Ready",
)
DRIFT_MONITOR = Kind(
    kind=driftmonitor.KIND,
    plural=driftmonitor.PLURAL,
    short_names=driftmonitor.SHORT_NAMES,
    spec=driftmonitor.DriftMonitorSpec,
    status=driftmonitor.DriftMonitorStatus,
    printer_columns=driftmonitor.PRINTER_COLUMNS,
    max_name_length=driftmonitor.MAX_NAME_LENGTH,
    summary="Ready",
)
KINDS: tuple[Kind, ...] = (TRAINING_JOB, MODEL_DEPLOYMENT, DRIFT_MONITOR)
BY_KIND = {k.kind: k for k in KINDS}

__all__ = [
    "API_VERSION",
    "BY_KIND",
    "CATEGORY",
    "DRIFT_MONITOR",
    "GROUP",
    "KINDS",
    "MODEL_DEPLOYMENT",
    "TRAINING_JOB",
    "VERSION",
    "Kind",
]
