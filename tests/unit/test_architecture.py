"""The layering contract of DESIGN.md, written down as a test.

Layers import only downward; the pure layers import no network or Kubernetes code;
only handlers/ imports kopf; only clients/ imports kubernetes and mlflow. ``names`` is
the bottom layer: every layer may import it, it imports no other modelworks module, and
it alone defines our label, annotation and tag keys.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelworks.api import BY_KIND, KINDS
from modelworks.handlers import RECONCILERS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modelworks"

# Third-party and stdlib modules that do I/O or belong to a framework.
NETWORK = {
    "kopf",
    "kubernetes",
    "mlflow",
    "requests",
    "urllib3",
    "httpx",
    "aiohttp",
    "socket",
    "http",
    "urllib",
    "prometheus_client",
    "subprocess",
}
PURE = {
    "names",
    "api",
    "conditions",
    "builders",
    "status",
    "drift",
    "apidocs",
    "humans",
    "gate",
    "schedule",
    "prommath",
    "validation",
}
# The bottom layer: every layer may import it; it imports no other modelworks module.
BOTTOM = "names"

# For each layer, the modelworks layers it may import (besides BOTTOM).
ALLOWED: dict[str, set[str]] = {
    "names": set(),
    "api": {"api", "drift"},  # drift.statistics: the method enum and its rules
    "conditions": set(),
    "gate": {"api"},
    "schedule": set(),
    "prommath": set(),
    "builders": {"api", "conditions", "builders"},
    "status": {"api", "conditions", "builders", "status", "drift", "gate", "schedule", "prommath"},
    "drift": {"drift"},
    "clients": {"api", "clients"},
    "reconcilers": {
        "api",
        "conditions",
        "builders",
        "status",
        "drift",
        "gate",
        "clients",
        "reconcilers",
    },
    "handlers": {
        "api",
        "conditions",
        "reconcilers",
        "clients",
        "settings",
        "metrics",
        "handlers",
        "__init__",
    },
    "serving": {"api", "drift", "clients", "settings", "metrics", "serving", "__init__"},
    "settings": set(),
    "metrics": set(),
    "crdgen": {"api"},
    "batch": {"api", "drift", "status", "clients"},
    "snapshot": {"clients", "quality"},
    "quality": {"quality", "clients", "api"},
    "validation": {"api"},
    "datacheck": {"api", "clients", "drift", "validation"},
    "apidocs": {"api"},
    "humans": {"api", "conditions"},
    "cli": {
        "api",
        "crdgen",
        "handlers",
        "settings",
        "__init__",
        "serving",
        "clients",
        "batch",
        "snapshot",
        "quality",
        "datacheck",
        "humans",
    },
    "__main__": {"cli"},
    "__init__": set(),
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "modelworks":  # from modelworks import conditions
                found += [f"modelworks.{a.name}" for a in node.names]
            else:
                found.append(node.module)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_operator_dir_is_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists(), "operator/ would shadow the stdlib"


def test_every_layer_is_known() -> None:
    unknown = {layer_of(p) for p in SOURCES} - set(ALLOWED)
    assert not unknown, f"add these layers to the contract: {unknown}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    layer = layer_of(path)
    problems = []
    for name in imports(path):
        top = name.split(".")[0]
        if top == "modelworks":
            target = name.split(".")[1] if "." in name else "__init__"
            if target == "__version__":
                target = "__init__"
            if target == BOTTOM and layer != BOTTOM:
                continue
            if target not in ALLOWED[layer] and target != layer:
                problems.append(f"{layer} may not import modelworks.{target}")
        elif top == "kopf" and layer != "handlers":
            problems.append("only handlers/ may import kopf")
        elif top in {"kubernetes", "mlflow"} and layer not in {"clients", "serving"}:
            problems.append(f"only clients/ may import {top}")
        elif layer in PURE and top in NETWORK:
            problems.append(f"pure layer {layer} imports {top}")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_operator_start_does_not_import_scipy_stats() -> None:
    """``scipy.stats`` costs ~1 s of every operator and CLI start; the drift statistics
    import it on first use (a KS p-value) instead."""
    code = "import sys, modelworks.handlers, modelworks.cli; print('scipy.stats' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "False"


def test_names_imports_only_the_standard_library() -> None:
    found = {name.split(".")[0] for name in imports(PACKAGE / f"{BOTTOM}.py")}
    outside = found - set(sys.stdlib_module_names) - {"__future__"}
    assert not outside, f"{BOTTOM}.py must stay the bottom layer; it imports {outside}"


# Our keys: a string that starts with one of these is a label, annotation or tag key.
KEY_PREFIXES = ("modelworks.dev/", "app.kubernetes.io/")
# Where such strings may be written: the one definition, and the API (API_VERSION, docs).
KEY_HOMES = {PACKAGE / f"{BOTTOM}.py", PACKAGE / "api"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def key_literals(path: Path) -> list[str]:
    """``line: text`` of every string (f-string parts included) that spells one of our keys."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    return [
        f"{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(KEY_PREFIXES)
        and id(node) not in docs
    ]


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if not any(p == h or h in p.parents for h in KEY_HOMES)],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_keys_are_spelled_only_in_names(path: Path) -> None:
    found = key_literals(path)
    assert not found, f"{path.name}: import these keys from modelworks.names: {found}"


def test_the_key_scan_finds_a_key(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        '"""Sets ``modelworks.dev/model-version``."""\n'
        'VERSION_LABEL = "modelworks.dev/model-version"\n'
        'labels = {f"app.kubernetes.io/{part}": 1 for part in ("name",)}\n'
    )
    assert key_literals(source) == [
        "2: 'modelworks.dev/model-version'",
        "3: 'app.kubernetes.io/'",
    ]


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_every_kind_is_wired(kind: str) -> None:
    """docs/architecture.md, "Adding a kind": a reconciler, RBAC, a health check, a page."""
    k = BY_KIND[kind]
    assert kind in RECONCILERS, "handlers.RECONCILERS has no pass for it"
    rbac = [
        d
        for d in yaml.safe_load_all((ROOT / "manifests" / "default" / "rbac.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    ]
    rules = [r for d in rbac for r in d["rules"] if "modelworks.dev" in r.get("apiGroups", [])]
    verbs = {res: set() for r in rules for res in r["resources"]}
    for r in rules:
        for res in r["resources"]:
            verbs[res] |= set(r["verbs"])
    assert {"list", "watch"} <= verbs.get(k.plural, set()), "RBAC: watch the kind"
    assert "patch" in verbs.get(f"{k.plural}/status", set()), "RBAC: write its status"
    health = ROOT / "manifests" / "gitops" / "argocd" / "modelworks.dev" / kind / "health.lua"
    assert health.is_file(), "an Argo CD health check"
    assert (ROOT / "docs" / f"{k.singular}.md").is_file(), "a page in docs/"


# The layers whose functions must stay short enough to read at once.
SHORT_LAYERS = PURE | {"handlers", "reconcilers"}
MAX_FUNCTION_LINES = 60


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``line name (n lines)`` of every def and async def (methods and nested functions
    included) longer than ``limit`` lines, decorators not counted."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{node.lineno} {node.name} ({length} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > limit
    ]


def test_functions_are_short() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{found}"
        for path in SOURCES
        if layer_of(path) in SHORT_LAYERS
        for found in long_functions(path)
    ]
    assert not offenders, f"split functions over {MAX_FUNCTION_LINES} lines: {offenders}"


def test_the_length_scan_finds_a_long_function(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "class A:\n"
        "    @staticmethod\n"
        "    async def method():\n"
        "        def nested():\n"
        "            a = 1\n"
        "            b = 2\n"
        "            return a + b\n"
        "\n"
        "        return nested\n"
        "\n"
        "def short():\n"
        "    return 1\n"
    )
    assert long_functions(source, limit=3) == ["3 method (7 lines)", "4 nested (4 lines)"]


CLOCKS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("time", "time")}
CLOCKS |= {("time", "monotonic"), ("time", "perf_counter")}


def clock_reads(tree: ast.AST) -> list[str]:
    """Calls that read the clock: ``datetime.now()``, ``time.monotonic()``, ..."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if (name, node.func.attr) in CLOCKS:
                found.append(f"{name}.{node.func.attr}() at line {node.lineno}")
    return found


def test_pure_layers_take_now_and_never_read_the_clock() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py")
        if layer in PURE:
            offenders += [f"{rel}: {c}" for c in clock_reads(ast.parse(path.read_text()))]
    assert not offenders


def test_the_clock_scan_finds_a_clock_read() -> None:
    tree = ast.parse("import datetime, time\nx = datetime.datetime.now()\ny = time.monotonic()")
    assert clock_reads(tree) == ["datetime.now() at line 2", "time.monotonic() at line 3"]
