"""MLflow, as the reconcilers need it: tracking runs and the Model Registry.

The only module that imports mlflow. The client is created on first use so that an
operator whose MLflow server is down still starts and reports the outage as a
condition instead of crash-looping.
"""

from __future__ import annotations

import threading
from typing import Any


class Registry:
    """One MLflow tracking server and its Model Registry."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.tracking_uri)

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` for this server (created once, lazily)."""
        if not self.configured:
            raise RuntimeError(
                "no MLflow tracking URI is configured (MODELWORKS_MLFLOW_TRACKING_URI)"
            )
        with self._lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
                )
            return self._client
