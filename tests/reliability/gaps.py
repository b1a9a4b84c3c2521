"""Making a real watch gap: the API server forgets the resourceVersion a paused watch holds.

A watch resumed from a resourceVersion the API server's watch cache still holds replays
every event it missed, DELETED included. Only when that version is gone (the cache moved
on, etcd compacted) does the server answer ``410 Gone``, and the client must list again:
a list has no DELETED events, so an object deleted and recreated under the same name in
between is seen only as "the object with this name has a new uid". :func:`expire` makes
the server forget ``resource_version`` for real: the watch cache only drops events older
than its freshness window (75 s) once it is full, so it waits past that window, fills the
cache with writes to a scratch object, and compacts etcd to its current revision.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config

from modelworks.api import API_VERSION, GROUP, VERSION
from tests.support import Cluster

ETCD = f"https://127.0.0.1:{os.environ.get('MODELWORKS_ETCD_CLIENT_PORT', '12379')}"


def custom_api(cluster: Cluster) -> client.CustomObjectsApi:
    cfg = client.Configuration()
    config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(client.ApiClient(cfg))


def list_version(api: client.CustomObjectsApi, namespace: str, plural: str) -> str:
    listed: Any = api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, limit=1)
    return str(listed["metadata"]["resourceVersion"])


def expired(api: client.CustomObjectsApi, namespace: str, plural: str, version: str) -> bool:
    """Whether a watch from ``version`` is answered with 410 Gone (the gap is real)."""
    response: Any = api.list_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        plural,
        watch=True,
        resource_version=version,
        timeout_seconds=1,
        _preload_content=False,
    )
    first = response.read().decode().partition("\n")[0]
    return bool(first) and json.loads(first).get("object", {}).get("code") == 410


def _pki(cluster: Cluster) -> Path:
    pki = Path(cluster.kubeconfig).parent / "pki"
    if not (pki / "ca.crt").exists():
        raise AssertionError(f"no {pki}: only the local cluster's etcd can be compacted here")
    return pki


def etcd_call(cluster: Cluster, path: str, body: dict[str, Any]) -> dict[str, Any]:
    pki = _pki(cluster)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(
        str(pki / "apiserver-etcd-client.crt"), str(pki / "apiserver-etcd-client.key")
    )
    request = urllib.request.Request(
        ETCD + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30, context=ctx) as r:
        answer: dict[str, Any] = json.loads(r.read())
    return answer


def compact_etcd(cluster: Cluster) -> int:
    """Compact etcd to its current revision (the API server does this every 5 minutes)."""
    revision = int(etcd_call(cluster, "/v3/maintenance/status", {})["header"]["revision"])
    etcd_call(cluster, "/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def expire(cluster: Cluster, namespace: str, version: str, deadline: float = 420) -> int:
    """Make the API server forget ``version`` of TrainingJobs; how many scratch writes it took."""
    plural = "trainingjobs"
    api = custom_api(cluster)
    scratch = {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": "scratch-gap"},
        "spec": {"image": "scratch:0", "suspend": True},
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, scratch)
    start = time.monotonic()
    time.sleep(80)  # past the watch cache's freshness window: its old events may now go
    writes = 0
    while not expired(api, namespace, plural, version):
        if time.monotonic() - start > deadline:
            raise AssertionError(f"the API server still serves a watch from {version}")
        for _ in range(100):
            patch = {"metadata": {"annotations": {"test.modelworks.dev/n": str(writes)}}}
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, "scratch-gap", patch
            )
            writes += 1
        compact_etcd(cluster)
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, "scratch-gap")
    return writes
