"""The Kubernetes API, as the reconcilers need it: get, list, server-side apply, delete.

A thin layer over ``kubernetes.client.ApiClient`` that speaks REST paths directly, so
it needs no discovery round-trips and counts every request it makes (the benchmark
reports API requests per object).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelworks.api import API_VERSION, KINDS

FIELD_MANAGER = "modelworks"
# Takes spec.replicas over from FIELD_MANAGER before an HPA owns it, so that dropping the
# field from the modelworks apply does not reset it to the default of 1.
HANDOVER_MANAGER = "modelworks-handover"
# (connect, read) seconds for one request: a half-open connection to the API server never
# holds a worker, the leader election or a shutdown for longer.
TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None = None, name: str | None = None, sub: str | None = None
    ) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [base]
        if self.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


_KNOWN = [
    Resource("v1", "Namespace", "namespaces", namespaced=False),
    Resource("v1", "Pod", "pods"),
    Resource("v1", "Service", "services"),
    Resource("v1", "ConfigMap", "configmaps"),
    Resource("v1", "Secret", "secrets"),
    Resource("v1", "Event", "events"),
    Resource("v1", "ServiceAccount", "serviceaccounts"),
    Resource("v1", "Node", "nodes", namespaced=False),
    Resource("apps/v1", "Deployment", "deployments"),
    Resource("batch/v1", "Job", "jobs"),
    Resource("coordination.k8s.io/v1", "Lease", "leases"),
    Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    *(Resource(API_VERSION, k.kind, k.plural) for k in KINDS),
]
RESOURCES: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _KNOWN}


def resource_of(api_version: str, kind: str) -> Resource:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unknown resource {api_version} {kind}") from None


# The API server refused the request itself: sent again unchanged, it gets the same answer.
# 409 (a conflict), 429 (throttled), 5xx and 0 (no answer) pass with time.
PERMANENT = (400, 403, 404, 422)


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def permanent(self) -> bool:
        """Invalid, forbidden or not found: retrying the same write will not help."""
        return self.status in PERMANENT


class Kube:
    """A client for one cluster. Thread-safe: kopf runs sync handlers in a thread pool."""

    def __init__(self, api: client.ApiClient, timeout: tuple[float, float] = TIMEOUT) -> None:
        self._api = api
        self._timeout = timeout
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()

    def bounded(self, seconds: float) -> Kube:
        """The same client, each request limited to ``seconds`` (connect and read)."""
        other = Kube(self._api, (seconds, seconds))
        other.requests = self.requests
        other._lock = self._lock
        return other

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient())

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        with self._lock:
            self.requests[method] += 1
        method_, url, headers, payload, _ = self._api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method_, url, header_params=headers, body=payload, _request_timeout=self._timeout
            )
        except ApiException as exc:
            raise _error(exc) from None
        except urllib3.exceptions.HTTPError as exc:  # no answer: refused, reset, timed out
            raise KubeError(0, type(exc).__name__, str(exc)) from None
        raw = response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            raise _error(ApiException(status=response.status, reason=response.reason, body=text))
        return json.loads(raw) if raw else {}

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", resource_of(api_version, kind).path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
        result = self._call("GET", resource_of(api_version, kind).path(namespace), query=query)
        return list(result.get("items") or [])

    def apply(
        self, obj: Mapping[str, Any], *, force: bool = True, manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply of the desired object under field manager ``manager`` (by default
        ``modelworks``)."""
        res = resource_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return self._call(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"]),
            body=dict(obj),
            query=[("fieldManager", manager), ("force", "true" if force else "false")],
            content_type="application/apply-patch+yaml",
        )

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj`` (409 when it exists; ``generateName`` gives it a fresh name)."""
        res = resource_of(obj["apiVersion"], obj["kind"])
        return self._call("POST", res.path(obj["metadata"].get("namespace")), body=dict(obj))

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Replace ``obj`` whole; its ``metadata.resourceVersion`` guards against lost updates
        (409 when the stored object has changed since it was read)."""
        res = resource_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return self._call("PUT", res.path(meta.get("namespace"), meta["name"]), body=dict(obj))

    def patch_status(
        self,
        obj: Mapping[str, Any],
        patch: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Merge-patch the status of ``obj``, guarded by the resourceVersion it was read at.

        The patch carries ``metadata.resourceVersion``, so the API server refuses it with 409
        when the object changed since (a status computed from stale facts is not stored).
        """
        res = resource_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": dict(patch),
        }
        return self._call(
            "PATCH",
            res.path(meta.get("namespace"), meta["name"], "status"),
            body=body,
            content_type="application/merge-patch+json",
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False when it was already gone."""
        try:
            self._call(
                "DELETE",
                resource_of(api_version, kind).path(namespace, name),
                body={"propagationPolicy": propagation},
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _error(exc: ApiException) -> KubeError:
    reason, message = str(exc.reason or ""), ""
    try:
        body = json.loads(exc.body or "{}")
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
    except (ValueError, TypeError):
        message = str(exc.body or "")
    return KubeError(int(exc.status or 0), reason, message)
