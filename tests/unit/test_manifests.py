"""The kustomize manifests: they build, and they say what the operator needs and no more.

Every kustomization under manifests/ is built with ``kubectl kustomize`` (the kubectl the
local cluster builds, ~/.cache/modelworks/bin/k8s-*/kubectl, or one on PATH; without one
the build tests skip locally and fail under CI or MODELWORKS_REQUIRE_NODE=1). The rest
reads the YAML sources: RBAC without wildcards and with a comment on every rule, the
operator and MLflow Deployments within Pod Security "restricted", environment variables
the operator knows, and labels, ports and names that line up across the files.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

import modelworks.names
from modelworks.api import API_VERSION, GROUP, KINDS
from modelworks.clients.kube import RESOURCES
from modelworks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
DEFAULT = MANIFESTS / "default"
MLFLOW = MANIFESTS / "mlflow"
MONITORING = MANIFESTS / "monitoring"
NAMESPACED = MANIFESTS / "namespaced"
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))
PLURALS = tuple(k.plural for k in KINDS)
NAMESPACE = "modelworks-system"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def kubectl() -> str:
    """The kubectl to build with; skips (or fails where one is required) without one."""
    cache = Path(os.environ.get("MODELWORKS_CACHE", Path.home() / ".cache" / "modelworks"))
    built = sorted((cache / "bin").glob("k8s-*/kubectl"))
    found = str(built[-1]) if built else shutil.which("kubectl")
    if found:
        return found
    message = "no kubectl: `make cluster-up` builds one into ~/.cache/modelworks/bin"
    if _truthy("CI") or _truthy("MODELWORKS_REQUIRE_NODE"):
        pytest.fail(message + " (CI or MODELWORKS_REQUIRE_NODE requires it)")
    pytest.skip(message)


@functools.cache
def _build(directory: Path, binary: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [binary, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory}: {proc.stderr.strip()}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def build(directory: Path) -> list[dict[str, Any]]:
    return list(_build(directory, kubectl()))


def sources(directory: Path) -> list[dict[str, Any]]:
    """The documents of the YAML files a kustomization lists, without kubectl."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization.get("resources", []):
        docs += [d for d in yaml.safe_load_all((directory / name).read_text()) if d]
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- every kustomization builds ----------------------------------------------------


def test_the_expected_kustomizations_exist() -> None:
    names = {str(p.relative_to(MANIFESTS)) for p in KUSTOMIZATIONS}
    assert {"default", "mlflow", "monitoring"} <= names


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_kustomization_builds(directory: Path) -> None:
    docs = build(directory)
    assert docs, f"{directory} builds to nothing"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc


def test_default_builds_the_operator_install() -> None:
    docs = build(DEFAULT)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "modelworks-operator"),
        ("ClusterRole", "modelworks-operator"),
        ("ClusterRoleBinding", "modelworks-operator"),
        ("ClusterRole", "modelworks-viewer"),
        ("ClusterRole", "modelworks-editor"),
        ("Deployment", "modelworks-operator"),
        ("Service", "modelworks-operator-metrics"),
        ("Role", "modelworks-operator-leader-election"),
        ("RoleBinding", "modelworks-operator-leader-election"),
        ("NetworkPolicy", "modelworks-operator-egress"),
    } <= kinds
    # CRDs are applied on their own (kubectl apply -f crds/), never from here.
    assert not [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    namespaced = [
        d
        for d in docs
        if d["kind"]
        in ("Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy")
    ]
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in namespaced)


def test_mlflow_and_monitoring_build_into_the_operator_namespace() -> None:
    for directory in (MLFLOW, MONITORING):
        for doc in build(directory):
            assert doc["metadata"].get("namespace") == NAMESPACE, (directory.name, doc["kind"])


# --- field names: no typo survives (kubectl kustomize does not check them) ----------


def unknown_fields(value: Any, type_name: str, path: str = "") -> list[str]:
    """Keys of ``value`` that the Kubernetes model ``type_name`` (client-python) lacks."""
    from kubernetes import client

    match = re.fullmatch(r"(List|Dict)\[(?:str, )?(.+)\]", type_name)
    if match:
        items = value if match.group(1) == "List" else list((value or {}).values())
        return [
            p
            for i, v in enumerate(items)
            for p in unknown_fields(v, match.group(2), f"{path}[{i}]")
        ]
    model = getattr(client, type_name, None)
    if model is None or not isinstance(value, dict):
        return []  # a scalar, or int-or-string, or free-form
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, sub in value.items():
        if key not in by_json:
            problems.append(f"{path}.{key}")
        else:
            problems += unknown_fields(sub, model.openapi_types[by_json[key]], f"{path}.{key}")
    return problems


CORE_MODELS = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "ClusterRole": "V1ClusterRole",
    "ClusterRoleBinding": "V1ClusterRoleBinding",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "ConfigMap": "V1ConfigMap",
    "CustomResourceDefinition": "V1CustomResourceDefinition",
    "NetworkPolicy": "V1NetworkPolicy",
}


def test_unknown_field_check_catches_typos() -> None:
    typo = {
        "spec": {"template": {"spec": {"containers": [{"name": "c", "imagePullPolicyy": "x"}]}}}
    }
    assert unknown_fields(typo, "V1Deployment") == [
        ".spec.template.spec.containers[0].imagePullPolicyy"
    ]


@pytest.mark.parametrize("directory", [DEFAULT, MLFLOW, MONITORING], ids=lambda p: p.name)
def test_built_objects_have_no_unknown_fields(directory: Path) -> None:
    for doc in sources(directory) if directory != MONITORING else build(directory):
        model = CORE_MODELS.get(doc["kind"])
        if model is not None:
            assert unknown_fields(doc, model) == [], f"{doc['kind']} {doc['metadata']['name']}"


# --- RBAC ---------------------------------------------------------------------------

RBAC_KINDS = ("ClusterRole", "Role")
# Verbs that let a subject grow its own rights or act as someone else: never.
DANGEROUS = {"escalate", "bind", "impersonate", "*"}

# What the operator's ClusterRole grants, resource by resource. A change here is a change
# of the operator's privileges: it should come with a reason in rbac.yaml.
OPERATOR_GRANTS: dict[tuple[str, str], set[str]] = {
    **{(GROUP, p): {"get", "list", "watch"} for p in PLURALS},
    (GROUP, "trainingjobs"): {"get", "list", "watch", "create"},
    **{(GROUP, f"{p}/status"): {"patch"} for p in PLURALS},
    **{(GROUP, f"{p}/finalizers"): {"update"} for p in PLURALS},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "create", "patch"},
    ("", "pods"): {"list", "delete"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"get", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"get", "create", "patch", "delete"},
    ("", "events"): {"create"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}
LEASE = "modelworks-operator"
LEASE_ROLE = "modelworks-operator-leader-election"


def rbac_documents() -> list[tuple[Path, str, dict[str, Any]]]:
    """(file, source text of the document, parsed document) for every Role and ClusterRole."""
    out = []
    for path in sorted(DEFAULT.glob("*.yaml")) + sorted(NAMESPACED.glob("*.yaml")):
        for text in re.split(r"^---\s*$", path.read_text(), flags=re.M):
            doc = yaml.safe_load(text)
            if isinstance(doc, dict) and doc.get("kind") in RBAC_KINDS:
                out.append((path, text, doc))
    return out


def test_rbac_sources_are_found() -> None:
    names = {doc["metadata"]["name"] for _, _, doc in rbac_documents()}
    assert {"modelworks-operator", "modelworks-viewer", "modelworks-editor"} <= names


@pytest.mark.parametrize("item", rbac_documents(), ids=lambda i: i[2]["metadata"]["name"])
def test_rbac_has_no_wildcards(item: tuple[Path, str, dict[str, Any]]) -> None:
    _, _, doc = item
    for rule in doc["rules"]:
        assert "nonResourceURLs" not in rule, rule
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            values = rule.get(key, [])
            assert all("*" not in str(v) for v in values), f"wildcard in {key}: {rule}"
        assert not set(rule["verbs"]) & DANGEROUS, rule
        assert "secrets" not in rule.get("resources", []), "no role here needs Secrets"


@pytest.mark.parametrize("item", rbac_documents(), ids=lambda i: i[2]["metadata"]["name"])
def test_every_rbac_rule_says_why(item: tuple[Path, str, dict[str, Any]]) -> None:
    path, text, doc = item
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^\s*- apiGroups:", line)]
    assert len(starts) == len(doc["rules"]), (
        f"{path.name} {doc['metadata']['name']}: write every rule as `- apiGroups: ...`"
    )
    for i in starts:
        before = [line.strip() for line in lines[:i] if line.strip()]
        assert before and before[-1].startswith("#"), (
            f"{path.name}: the rule at `{lines[i].strip()}` needs a comment saying why"
        )


def grants_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_operator_grants_exactly_what_it_needs() -> None:
    role = one(sources(DEFAULT), "ClusterRole", "modelworks-operator")
    assert grants_of(role) == OPERATOR_GRANTS
    assert all("resourceNames" not in rule for rule in role["rules"])


SOURCE = ROOT / "operator" / "modelworks"
# The operator's own code (the CLI runs with its user's rights, not the operator's).
OPERATOR_CODE = (
    *sorted((SOURCE / "reconcilers").glob("*.py")),
    SOURCE / "handlers" / "controller.py",
)
READ_VERBS = ("get", "list", "delete")


def _enclosing(tree: ast.AST) -> dict[ast.AST, ast.FunctionDef | None]:
    out: dict[ast.AST, ast.FunctionDef | None] = {}

    def visit(node: ast.AST, fn: ast.FunctionDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            out[child] = fn
            visit(child, child if isinstance(child, ast.FunctionDef) else fn)

    visit(tree, None)
    return out


Source = tuple[ast.AST, Any, dict[ast.AST, ast.FunctionDef | None]]
# What reconcilers/modeldeployment.py's _ensure reads back by the built object's own kind.
ENSURED = {
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
}


@functools.cache
def _sources() -> tuple[Source, ...]:
    """(tree, module, enclosing function of each node) of every file of the operator's code."""
    out = []
    for path in OPERATOR_CODE:
        module = importlib.import_module(f"modelworks.{path.parent.name}.{path.stem}")
        tree = ast.parse(path.read_text())
        out.append((tree, module, _enclosing(tree)))
    return tuple(out)


def _calls_of(name: str) -> list[tuple[ast.Call, Source]]:
    """Every call of the function ``name`` in the operator's code, whatever module it is in."""
    return [
        (call, source)
        for source in _sources()
        for call in ast.walk(source[0])
        if isinstance(call, ast.Call)
        and ast.unparse(call.func).rpartition(".")[2] == name
        and not ast.unparse(call.func).startswith(("self.", "kube.", "ctx."))
    ]


def _values(
    nodes: tuple[ast.expr, ...], fn: ast.FunctionDef | None, module: Any
) -> set[tuple[str, ...]]:
    """What ``nodes`` (evaluated together inside ``fn``) can be: constants, module-level
    names, ``kind.kind`` over KINDS, the pass's own object, or a parameter of ``fn``
    followed to every call of it (in any module)."""
    params = [a.arg for a in fn.args.args] if fn else []
    if any(isinstance(n, ast.Name) and n.id in params for n in nodes):
        assert fn is not None
        out: set[tuple[str, ...]] = set()
        for call, (_, caller, parents) in _calls_of(fn.name):
            given = dict(zip(params, call.args, strict=False))
            given.update({k.arg: k.value for k in call.keywords if k.arg})
            mapped = tuple(
                given[n.id] if isinstance(n, ast.Name) and n.id in params else n for n in nodes
            )
            out |= _values(mapped, parents[call], caller)
        return out
    shown = [ast.unparse(n) for n in nodes]
    if shown == ["obj['apiVersion']", "obj['kind']"]:
        return {(API_VERSION, k.kind) for k in KINDS}  # the pass's own object
    if shown == ["desired['apiVersion']", "desired['kind']"]:
        return ENSURED  # a ModelDeployment's built Service, HPA or PDB
    if any(ast.unparse(n) == "kind.kind" for n in nodes):
        return {
            tuple(k.kind if ast.unparse(n) == "kind.kind" else _constant(n, module) for n in nodes)
            for k in KINDS
        }
    return {tuple(_constant(n, module) for n in nodes)}


def _constant(node: ast.expr, module: Any) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.Name), f"cannot follow {ast.unparse(node)}"
    return str(getattr(module, node.id))


def kube_reads() -> dict[tuple[str, str], set[str]]:
    """(group, plural) -> the get/list/delete verbs the operator's code calls on it."""
    out: dict[tuple[str, str], set[str]] = {}
    for tree, module, parents in _sources():
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in READ_VERBS
                and ast.unparse(call.func.value).endswith("kube")
            ):
                continue
            for api_version, kind in _values(tuple(call.args[:2]), parents[call], module):
                group = api_version.rpartition("/")[0]
                plural = RESOURCES[(api_version, kind)].plural
                out.setdefault((group, plural), set()).add(call.func.attr)
    return out


def test_get_list_and_delete_are_granted_exactly_where_the_code_calls_them() -> None:
    """Derived from the code: every kube.get/list/delete the reconcilers and the controller
    make (kinds followed through helpers such as _ensure), plus list for kopf's watches."""
    needed = kube_reads()
    for group, plural in kopf_resources()["_watching"]:
        needed.setdefault((group, plural), set()).add("list")
    needed.setdefault(("apiextensions.k8s.io", "customresourcedefinitions"), set()).add("list")
    needed.setdefault(("", "namespaces"), set()).add("list")
    granted = {
        key: verbs & set(READ_VERBS)
        for key, verbs in OPERATOR_GRANTS.items()
        if verbs & set(READ_VERBS)
    }
    assert granted == needed
    assert ("", "services") in needed and "list" not in needed[("", "services")]


def test_retraining_is_created_never_applied() -> None:
    """Why trainingjobs keep create and not patch: a DriftMonitor creates its retraining
    TrainingJob (an apply would rewrite one that exists, a finished one included)."""
    monitor = (ROOT / "operator" / "modelworks" / "reconcilers" / "driftmonitor.py").read_text()
    act = monitor[monitor.index("def act(") : monitor.index("RECONCILER")]
    assert "kube.create(body)" in act and "apply(" not in act
    status = (ROOT / "operator" / "modelworks" / "status" / "driftmonitor.py").read_text()
    assert "StartRetrain(" in status


def test_lease_role_allows_what_leader_election_does() -> None:
    """handlers/leader.py gets the Lease, creates it when missing, and replaces it (PUT) to
    take it over, renew it and give it up: get and update on that one Lease, and create,
    which RBAC cannot narrow by name. Nothing else: no list, watch, patch or delete."""
    source = (ROOT / "operator" / "modelworks" / "handlers" / "leader.py").read_text()
    calls = set(re.findall(r"self\._api\.(\w+)\(", source))
    assert calls == {"get", "create", "replace"}
    docs = sources(DEFAULT)
    role = one(docs, "Role", LEASE_ROLE)
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = {
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", ()))): set(
            r["verbs"]
        )
        for r in role["rules"]
    }
    lease = (("coordination.k8s.io",), ("leases",))
    assert rules == {(*lease, ()): {"create"}, (*lease, (LEASE,)): {"get", "update"}}
    binding = one(docs, "RoleBinding", LEASE_ROLE)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEASE_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "modelworks-operator", "namespace": NAMESPACE}
    ]


def test_operator_elects_a_leader_on_the_lease_the_role_names() -> None:
    env = {e["name"]: e for e in operator_container()["env"]}
    assert env["MODELWORKS_LEADER_ELECTION"]["value"] == LEASE
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    settings = Settings.from_env(
        {**operator_env(), "POD_NAMESPACE": NAMESPACE, "POD_NAME": "modelworks-operator-0"}
    )
    assert settings.leader_election == LEASE
    assert settings.lease_namespace == NAMESPACE
    assert settings.identity == "modelworks-operator-0"
    deployment = one(sources(DEFAULT), "Deployment", "modelworks-operator")
    assert deployment["metadata"]["namespace"] == NAMESPACE


def kopf_resources() -> dict[str, set[tuple[str, str]]]:
    """(group, plural) of every resource the operator's kopf handlers follow, by handler kind."""
    import kopf

    from modelworks import handlers
    from modelworks.handlers.controller import Controller

    # register() only reads the settings and wires handlers: no client is called.
    controller = Controller(
        settings=Settings(), kube=cast(Any, None), registry=cast(Any, None), reconcilers={}
    )
    registry = kopf.OperatorRegistry()
    handlers.register(controller, registry)
    out: dict[str, set[tuple[str, str]]] = {}
    for attr in ("_watching", "_changing", "_spawning", "_indexing", "_webhooks"):
        for handler in getattr(registry, attr).get_all_handlers():
            selector = handler.selector
            plural = selector.plural or selector.any_name
            out.setdefault(attr, set()).add((selector.group or "", plural))
    return out


def test_operator_may_watch_what_its_handlers_follow() -> None:
    """kopf lists and watches every resource a handler is registered for, cluster-wide.
    Only event handlers: kopf keeps no state on the objects (no annotations, finalizers),
    so it needs no patch; the operator writes our kinds' status itself."""
    followed = kopf_resources()
    assert set(followed) == {"_watching"}, "only kopf.on.event handlers"
    for group, plural in followed["_watching"]:
        assert {"list", "watch"} <= OPERATOR_GRANTS.get((group, plural), set()), (
            f"the operator watches {plural}.{group} but may not list and watch it"
        )
    assert {(GROUP, p) for p in PLURALS} <= followed["_watching"]
    assert {("batch", "jobs"), ("apps", "deployments")} <= followed["_watching"]
    for plural in PLURALS:
        assert "patch" in OPERATOR_GRANTS[(GROUP, f"{plural}/status")], plural


def test_binding_ties_the_role_to_the_service_account() -> None:
    docs = sources(DEFAULT)
    binding = one(docs, "ClusterRoleBinding", "modelworks-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "modelworks-operator",
    }
    account = one(docs, "ServiceAccount", "modelworks-operator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "modelworks-operator", "namespace": NAMESPACE}
    ]
    assert account["metadata"]["namespace"] == NAMESPACE
    pod = one(docs, "Deployment", "modelworks-operator")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "modelworks-operator"


def _grants(role: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rule in role["rules"]:
        if GROUP in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault(resource, set()).update(rule["verbs"])
    return out


def test_viewer_and_editor_roles_cover_every_kind() -> None:
    docs = sources(DEFAULT)
    viewer = one(docs, "ClusterRole", "modelworks-viewer")
    editor = one(docs, "ClusterRole", "modelworks-editor")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    labels = editor["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    read = {"get", "list", "watch"}
    write = {"create", "update", "patch", "delete", "deletecollection"}
    seen, edits = _grants(viewer), _grants(editor)
    for plural in PLURALS:
        assert seen[plural] == read and seen[f"{plural}/status"] == read, plural
        assert edits[plural] == read | write, plural
        assert f"{plural}/status" not in edits, "status belongs to the operator"


# --- Pod Security Standard "restricted" ---------------------------------------------

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from the Pod Security Standard "restricted" (latest)."""
    problems = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']} is {kinds - ALLOWED_VOLUMES}")
    if psc.get("sysctls"):
        problems.append("pod sysctls")
    containers = (pod.get("initContainers") or []) + pod["containers"]
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            problems.append(f"{name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount")
    return problems


def test_restricted_checker_catches_violations() -> None:
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}],
            }
        ],
    }
    assert len(restricted_violations(bad)) >= 8


def deployments() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("operator", one(sources(DEFAULT), "Deployment", "modelworks-operator")),
        ("mlflow", one(sources(MLFLOW), "Deployment", "mlflow")),
    ]


@pytest.mark.parametrize("item", deployments(), ids=lambda i: i[0])
def test_deployments_meet_pod_security_restricted(item: tuple[str, dict[str, Any]]) -> None:
    _, deployment = item
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        assert "/tmp" in mounts, f"{c['name']}: HOME=/tmp needs a writable emptyDir"
        tmp = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
        assert "emptyDir" in tmp
        resources = c["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), c["name"]
        assert "memory" in resources["limits"], c["name"]
        assert c["image"] == "modelworks:0.1.0" and c["imagePullPolicy"] == "IfNotPresent"


def test_namespace_enforces_restricted() -> None:
    ns = one(sources(DEFAULT), "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the operator Deployment --------------------------------------------------------


def operator_container() -> dict[str, Any]:
    deployment = one(sources(DEFAULT), "Deployment", "modelworks-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def operator_env() -> dict[str, str]:
    """The operator's MODELWORKS_* variables (the POD_* ones come from fieldRefs: below)."""
    return {
        e["name"]: e["value"]
        for e in operator_container()["env"]
        if e["name"].startswith("MODELWORKS_")
    }


def test_operator_env_besides_settings() -> None:
    """kopf derives its own identity at start (standalone too) from POD_ID, else from
    getpass.getuser(): with no /etc/passwd entry for uid 65532 in the image that raises, and
    the operator exits at start. POD_NAME and POD_NAMESPACE are Settings' (the Lease's
    holder identity and namespace). MLFLOW_CONFIGURE_LOGGING=false keeps MLflow's
    plain-text handler out of the JSON log."""
    env = {e["name"]: e for e in operator_container()["env"]}
    assert set(env) - set(operator_env()) == {
        "POD_ID",
        "POD_NAME",
        "POD_NAMESPACE",
        "MLFLOW_CONFIGURE_LOGGING",
    }
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    doc = Settings.from_env.__doc__ or ""
    assert re.search(r"^\s*POD_NAME\s", doc, flags=re.M)
    assert re.search(r"^\s*POD_NAMESPACE\s", doc, flags=re.M)
    assert env["MLFLOW_CONFIGURE_LOGGING"]["value"] == "false"


def known_variables() -> set[str]:
    """The variables Settings.from_env documents (and reads: checked below)."""
    doc = Settings.from_env.__doc__ or ""
    names = set(re.findall(r"^\s*(MODELWORKS_[A-Z_]+)\s", doc, flags=re.M))
    assert len(names) >= 10, "Settings.from_env's docstring lists the variables"
    return names


def test_operator_sets_only_variables_settings_knows() -> None:
    env = operator_env()
    unknown = set(env) - known_variables()
    assert not unknown, f"Settings.from_env does not know {sorted(unknown)}"
    # ... and really reads: from_env looks each one up (get/number/port of its suffix).
    source = (ROOT / "operator" / "modelworks" / "settings.py").read_text()
    for name in env:
        suffix = name.removeprefix("MODELWORKS_")
        assert re.search(rf'\b(get|number|port)\("{suffix}"', source), f"{name} is never read"


def test_operator_settings_parse() -> None:
    settings = Settings.from_env(operator_env())
    container = operator_container()
    assert settings.leader_election == "modelworks-operator"
    assert settings.log_format == "json"
    assert settings.image == container["image"]
    assert settings.image_pull_policy == container["imagePullPolicy"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": settings.health_port, "metrics": settings.metrics_port}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and ports[probe["port"]] == 8080


def test_operator_points_at_the_mlflow_service() -> None:
    service = one(sources(MLFLOW), "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    namespace = yaml.safe_load((MLFLOW / "kustomization.yaml").read_text())["namespace"]
    host = f"{service['metadata']['name']}.{namespace}.svc"
    assert Settings.from_env(operator_env()).mlflow_tracking_uri == f"http://{host}:{port}"
    # MLflow's Host-header check lets that name through.
    (container,) = one(sources(MLFLOW), "Deployment", "mlflow")["spec"]["template"]["spec"][
        "containers"
    ]
    args = container["args"]
    allowed = args[args.index("--allowed-hosts") + 1].split(",")
    assert f"{host}:{port}" in allowed
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert args[args.index("--backend-store-uri") + 1].startswith("sqlite:////data/")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts


def test_operator_ships_one_replica() -> None:
    """One replica: a rolling update hands the Lease over (the surge pod stands by until
    the old one gives it up); a warm standby (replicas: 2) is an overlay's choice."""
    deployment = one(sources(DEFAULT), "Deployment", "modelworks-operator")
    assert deployment["spec"]["replicas"] == 1
    # The default RollingUpdate (maxSurge 1, maxUnavailable 0 of one replica) starts the
    # new pod before the old one stops.
    assert "strategy" not in deployment["spec"]


def test_metrics_service_selects_the_operator() -> None:
    docs = sources(DEFAULT)
    service = one(docs, "Service", "modelworks-operator-metrics")
    deployment = one(docs, "Deployment", "modelworks-operator")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 8081, "metrics")


# --- monitoring -----------------------------------------------------------------------

OPERATOR_METRICS = {
    "modelworks_reconcile_total",
    "modelworks_reconcile_duration_seconds",
    "modelworks_reconcile_errors_total",
    "modelworks_status_writes_total",
    "modelworks_events_total",
    "modelworks_build_info",
    "modelworks_kube_requests_total",
    "modelworks_queue_wait_seconds",
    "modelworks_queue_depth",
    "modelworks_queue_delayed",
    "modelworks_passes_in_flight",
    "modelworks_leader",
    "modelworks_condition",
    "modelworks_drift_score",
    "modelworks_drift_threshold",
    "modelworks_drift_feature_drifted",
    "modelworks_drift_share",
    "modelworks_drift_window_samples",
    "modelworks_drift_detected",
    "modelworks_drift_prediction_score",
    "modelworks_drift_prediction_threshold",
    "modelworks_drift_prediction_drifted",
    "modelworks_quality_metric",
    "modelworks_quality_degraded",
    "modelworks_retrains_total",
}
SERVING_METRICS = {
    "modelworks_serving_requests_total",
    "modelworks_serving_request_duration_seconds",
    "modelworks_serving_rows_total",
    "modelworks_feature_bucket_total",
    "modelworks_feature_missing_total",
    "modelworks_prediction_bucket_total",
    "modelworks_prediction_missing_total",
    "modelworks_serving_model_loaded",
    "modelworks_feedback_labels_total",
    "modelworks_feedback_refused_requests_total",
}
HISTOGRAMS = {
    "modelworks_reconcile_duration_seconds",
    "modelworks_queue_wait_seconds",
    "modelworks_serving_request_duration_seconds",
}


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(modelworks_[a-z_]+)", expr))
    out = set()
    for name in names:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        out.add(base if base in HISTOGRAMS else name)
    return out


def test_operator_metric_names_match_the_operator() -> None:
    from modelworks import metrics

    exposed = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in metrics.REGISTRY.collect()
    }
    # Registered at startup (handlers/__init__.py): the client's request counts.
    exposed.add("modelworks_kube_requests_total")
    assert exposed == OPERATOR_METRICS


def test_serving_metric_names_match_the_model_server() -> None:
    source = (ROOT / "operator" / "modelworks" / "serving" / "metrics.py").read_text()
    found = set(re.findall(r'"(modelworks_[a-z_]+)"', source))
    found |= {getattr(modelworks.names, n) for n in re.findall(r"\bnames\.([A-Z_]+)", source)}
    assert found == SERVING_METRICS


def test_service_monitor_scrapes_the_operator() -> None:
    monitor = one(sources(MONITORING), "ServiceMonitor")
    service = one(sources(DEFAULT), "Service", "modelworks-operator-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    # The object series carry the object's namespace: it must not become exported_namespace.
    assert endpoint["honorLabels"] is True


def test_pod_monitor_scrapes_the_model_servers() -> None:
    monitor = one(sources(MONITORING), "PodMonitor")
    serving_labels = {
        "app.kubernetes.io/name": "modeldeployment",
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": "modelworks",
    }
    assert monitor["spec"]["selector"]["matchLabels"].items() <= serving_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def alerts() -> dict[str, dict[str, Any]]:
    rule = one(sources(MONITORING), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_alerts_cover_the_failure_modes() -> None:
    rules = alerts()
    assert {
        "ModelworksOperatorDown",
        "ModelworksReconcileErrors",
        "ModelDeploymentDegraded",
        "ModelDeploymentRolloutStuck",
        "ModelDriftDetected",
        "TrainingJobFailed",
        "ModelServerHighErrorRate",
        "ModelServerHighLatency",
        "ModelFeedbackStoreUnavailable",
    } <= set(rules)
    degraded = rules["ModelDeploymentDegraded"]
    assert 'modelworks_condition{kind="ModelDeployment", type="Degraded"} == 1' in degraded["expr"]
    assert degraded["for"] == "5m"
    stuck = rules["ModelDeploymentRolloutStuck"]
    assert 'type="Progressing"} == 1' in stuck["expr"] and stuck["for"] == "30m"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert metric_names(rule["expr"]) <= OPERATOR_METRICS | SERVING_METRICS, name


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "dashboards" / "modelworks.json").read_text())


def test_dashboard_panels_use_known_metrics() -> None:
    board = dashboard()
    assert board["uid"] == "modelworks" and board["title"]
    used: set[str] = set()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["expr"] and target["refId"], panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            used |= metric_names(target["expr"])
    assert used <= OPERATOR_METRICS | SERVING_METRICS, used - OPERATOR_METRICS - SERVING_METRICS
    # Reconciles, errors, drift per feature, drifted share, serving RPS/latency/errors.
    assert {
        "modelworks_reconcile_total",
        "modelworks_reconcile_errors_total",
        "modelworks_drift_score",
        "modelworks_drift_share",
        "modelworks_serving_requests_total",
        "modelworks_serving_request_duration_seconds",
    } <= used


def test_dashboard_configmap_is_generated_from_the_json() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["dashboards/modelworks.json"]
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    built = one(build(MONITORING), "ConfigMap", generator["name"])
    assert built["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(built["data"]["modelworks.json"]) == dashboard()


# --- egress NetworkPolicy -----------------------------------------------------------


def _egress_to(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The policy's egress rules by what they select: dns, apiserver, mlflow, server, prometheus."""
    out: dict[str, dict[str, Any]] = {}
    for rule in policy["spec"]["egress"]:
        peers = rule.get("to") or [{}]
        (peer,) = peers
        labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
        key = (
            "dns"
            if labels.get("k8s-app") == "kube-dns"
            else "mlflow"
            if labels.get("app.kubernetes.io/name") == "mlflow"
            else "prometheus"
            if labels.get("app.kubernetes.io/name") == "prometheus"
            else "server"
            if labels.get("app.kubernetes.io/component") == "server"
            else "apiserver"
            if not labels
            else "unknown"
        )
        out[key] = {"peer": peer, "ports": {(p["protocol"], p["port"]) for p in rule["ports"]}}
    return out


def test_operator_egress_is_limited_to_its_dependencies() -> None:
    from modelworks.builders.common import standard_labels
    from modelworks.builders.modeldeployment import COMPONENT
    from modelworks.names import SERVER_PORT

    docs = sources(DEFAULT)
    policy = one(docs, "NetworkPolicy", "modelworks-operator-egress")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["policyTypes"] == ["Egress"]
    operator = one(docs, "Deployment", "modelworks-operator")
    pod_labels = operator["spec"]["template"]["metadata"]["labels"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= pod_labels.items()
    rules = _egress_to(policy)
    assert set(rules) == {"dns", "apiserver", "mlflow", "server", "prometheus"}
    assert rules["dns"]["ports"] == {("UDP", 53), ("TCP", 53)}
    assert rules["apiserver"]["ports"] == {("TCP", 443), ("TCP", 6443)}
    mlflow = one(sources(MLFLOW), "Deployment")
    mlflow_pod = mlflow["spec"]["template"]
    assert rules["mlflow"]["peer"]["podSelector"]["matchLabels"].items() <= (
        mlflow_pod["metadata"]["labels"].items()
    )
    (container,) = mlflow_pod["spec"]["containers"]
    assert rules["mlflow"]["ports"] == {("TCP", p["containerPort"]) for p in container["ports"]}
    serving = standard_labels({"kind": "ModelDeployment", "metadata": {"name": "m"}}, COMPONENT)
    assert rules["server"]["peer"]["podSelector"]["matchLabels"].items() <= serving.items()
    assert rules["server"]["peer"]["namespaceSelector"] == {}
    assert rules["server"]["ports"] == {("TCP", SERVER_PORT)}
    assert rules["prometheus"]["ports"] == {("TCP", 9090)}


# --- namespaced install ---------------------------------------------------------------

CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def test_namespaced_install_grants_nothing_cluster_wide_but_watching_crds_and_namespaces() -> None:
    docs = build(NAMESPACED)
    cluster = one(docs, "ClusterRole", "modelworks-operator")
    assert grants_of(cluster) == {k: v for k, v in OPERATOR_GRANTS.items() if k in CLUSTER_SCOPED}
    binding = one(docs, "ClusterRoleBinding", "modelworks-operator")
    assert binding["roleRef"]["name"] == "modelworks-operator"
    roles = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] != LEASE_ROLE]
    namespaces = {r["metadata"]["namespace"] for r in roles}
    assert namespaces and NAMESPACE not in namespaces
    namespaced = {k: v for k, v in OPERATOR_GRANTS.items() if k not in CLUSTER_SCOPED}
    for role in roles:
        assert grants_of(role) == namespaced, role["metadata"]["namespace"]
    bindings = {
        b["metadata"]["namespace"]: b
        for b in docs
        if b["kind"] == "RoleBinding" and b["metadata"]["name"] == "modelworks-operator"
    }
    assert set(bindings) == namespaces
    for ns, b in bindings.items():
        assert b["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "modelworks-operator",
        }, ns
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "modelworks-operator", "namespace": NAMESPACE}
        ]
    deployment = one(docs, "Deployment", "modelworks-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert set(settings.namespaces) == namespaces
    assert one(docs, "NetworkPolicy", "modelworks-operator-egress")
