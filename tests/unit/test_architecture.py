"""The layering contract of DESIGN.md, written down as a test.

Layers import only downward; the pure layers import no network or Kubernetes code;
only handlers/ imports kopf; only clients/ imports kubernetes and mlflow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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
PURE = {"api", "conditions", "builders", "status", "drift", "apidocs", "humans"}

# For each layer, the modelworks layers it may import.
ALLOWED: dict[str, set[str]] = {
    "api": {"api"},
    "conditions": set(),
    "builders": {"api", "conditions", "builders"},
    "status": {"api", "conditions", "builders", "status", "drift"},
    "drift": {"drift"},
    "clients": {"api", "clients"},
    "reconcilers": {"api", "conditions", "builders", "status", "drift", "clients", "reconcilers"},
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
