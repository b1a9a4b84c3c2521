"""The Modelworks API (modelworks.dev/v1alpha1): one module per kind plus common types."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from modelworks.api import driftmonitor, modeldeployment, trainingjob
from modelworks.api.common import API_VERSION, CATEGORY, VERSION, ApiModel, StatusModel
from modelworks.names import GROUP


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

    @classmethod
    def of(
        cls, module: ModuleType, spec: type[ApiModel], status: type[StatusModel], summary: str
    ) -> Kind:
        """The Kind a module of this package declares (KIND, PLURAL, SHORT_NAMES, ...)."""
        return cls(
            kind=module.KIND,
            plural=module.PLURAL,
            short_names=module.SHORT_NAMES,
            spec=spec,
            status=status,
            printer_columns=module.PRINTER_COLUMNS,
            max_name_length=module.MAX_NAME_LENGTH,
            summary=summary,
        )

    @property
    def singular(self) -> str:
        return self.kind.lower()


TRAINING_JOB = Kind.of(
    trainingjob, trainingjob.TrainingJobSpec, trainingjob.TrainingJobStatus, "Succeeded"
)
MODEL_DEPLOYMENT = Kind.of(
    modeldeployment,
    modeldeployment.ModelDeploymentSpec,
    modeldeployment.ModelDeploymentStatus,
    "Ready",
)
DRIFT_MONITOR = Kind.of(
    driftmonitor, driftmonitor.DriftMonitorSpec, driftmonitor.DriftMonitorStatus, "Ready"
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
