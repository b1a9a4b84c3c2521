"""The install variants are accepted by a real API server (server-side dry run).

The operator's namespace and the watched namespace are moved into the test's own
namespace and cluster-wide names get its suffix, so nothing in the shared cluster is
touched and nothing is stored.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support import Cluster

pytestmark = pytest.mark.integration
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.mark.parametrize("variant", ["default", "namespaced"])
def test_install_is_accepted_by_the_api_server(crds: Cluster, namespace: str, variant: str) -> None:
    built = crds.kubectl("kustomize", str(MANIFESTS / variant)).stdout
    docs = [d for d in yaml.safe_load_all(built) if d and d["kind"] != "Namespace"]
    suffix = namespace.rsplit("-", 1)[-1]
    for doc in docs:
        meta = doc["metadata"]
        if meta.get("namespace"):
            meta["namespace"] = namespace
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{suffix}"
        for subject in doc.get("subjects") or []:
            subject["namespace"] = namespace
        if doc.get("roleRef", {}).get("kind") == "ClusterRole":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{suffix}"
    out = crds.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs), check=False
    )
    assert out.returncode == 0, out.stderr
    kinds = {line.split()[0].split("/")[0] for line in out.stdout.splitlines()}
    assert {"role.rbac.authorization.k8s.io", "networkpolicy.networking.k8s.io"} <= kinds
