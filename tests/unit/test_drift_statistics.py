"""The statistics registry: adding a statistic is one entry, and everything else agrees.

Every place that names the drift methods or their thresholds is derived from
``STATISTICS`` or checked against it here; each entry is checked on identical and on
disjoint data, table-driven over the registry.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import yaml

from modelworks import metrics
from modelworks.api import driftmonitor as api
from modelworks.drift import engine
from modelworks.drift.profile import FeatureProfile
from modelworks.drift.statistics import (
    METHODS,
    P_VALUE_METHODS,
    STATISTICS,
    Method,
    Sample,
    Statistic,
    and_list,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = list(STATISTICS.values())
DISTANCES = tuple(m for m in METHODS if not STATISTICS[m].p_value)


def _crd_spec() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "modelworks.dev_driftmonitors.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec: dict[str, Any] = schema["properties"]["spec"]
    return spec


def test_one_entry_per_method_under_its_own_name() -> None:
    assert tuple(STATISTICS) == METHODS == get_args(Method)
    assert all(name == s.name for name, s in STATISTICS.items())
    assert api.Method is Method and engine.METHODS == METHODS


def test_the_crd_enums_are_the_registry() -> None:
    spec = _crd_spec()
    assert spec["properties"]["method"]["enum"] == list(METHODS)
    feature = spec["properties"]["features"]["items"]["properties"]
    assert feature["method"]["enum"] == list(METHODS)


def test_the_api_rules_and_descriptions_come_from_the_registry() -> None:
    p_values = [m for m in METHODS if STATISTICS[m].p_value]
    rule = next(r for r in api.DriftMonitorSpec.__rules__ if "p-value" in r.message)
    for m in METHODS:
        assert (f"'{m}'" in rule.cel) is (m in p_values), (m, rule.cel)
    assert list(P_VALUE_METHODS) == p_values
    description = api.DriftMonitorSpec.model_fields["threshold"].description or ""
    for s in ENTRIES:
        assert f"{s.name} {s.default_threshold:g}" in description
    assert f"below it for {and_list(p_values)})" in description
    rules = _crd_spec()["x-kubernetes-validations"]
    assert any(r["rule"] == rule.cel and r["message"] == rule.message for r in rules)


def test_the_docs_table_is_the_registry() -> None:
    page = (ROOT / "docs" / "driftmonitor.md").read_text()
    assert markdown_table() in page, "paste modelworks.drift.statistics.markdown_table():\n" + (
        markdown_table()
    )
    rows = [line for line in markdown_table().splitlines() if line.startswith("| `")][1:]
    assert [row.split("`")[1] for row in rows] == list(METHODS)


def test_texts_that_name_the_p_value_methods_agree() -> None:
    p_values = [m for m in METHODS if STATISTICS[m].p_value]
    (score_help,) = (m.documentation for m in metrics.DRIFT_SCORE.describe())
    assert f"a p-value for {and_list(p_values)})" in score_help
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert f"a p-value for {and_list([f'`{m}`' for m in p_values])})" in operations
    conventions = (ROOT / "docs" / "api-conventions.md").read_text()
    assert "/".join(f"`{m}`" for m in p_values) + " thresholds are" in conventions
    dashboard = json.loads(
        (ROOT / "manifests" / "monitoring" / "dashboards" / "modelworks.json").read_text()
    )
    wanted = (
        f"For {and_list(list(DISTANCES))} a feature drifts above its threshold; "
        f"for {and_list(p_values)} (p-values) below it."
    )
    assert wanted in json.dumps(dashboard)


@pytest.mark.parametrize("s", ENTRIES, ids=lambda s: s.name)
def test_the_entry_is_consistent(s: Statistic) -> None:
    assert s.summary and s.kind in ("distance", "p-value")
    if s.p_value:
        assert 0.0 < s.default_threshold < 1.0
    else:
        assert s.default_threshold > 0.0
    assert bool(s.approximation) is (s.exact is not None), "say what buckets approximate"
    if s.categorical_fallback is not None:
        fallback = STATISTICS[s.categorical_fallback]
        assert fallback.kind == s.kind and fallback.categorical_fallback is None
    if s.bootstrap is not None:
        assert s.p_value, "a score that falls as the statistic grows"


NUMERIC = FeatureProfile("x", "numeric", (250, 250, 250, 250), edges=(1.0, 2.0, 3.0))
CATEGORICAL = FeatureProfile("c", "categorical", (300, 300, 400, 0), categories=("a", "b", "c"))
CASES = [
    (s, profile)
    for s in ENTRIES
    for profile in (NUMERIC, CATEGORICAL)
    if profile.type == "numeric" or s.categorical_fallback is None
]


@pytest.mark.parametrize(("s", "profile"), CASES, ids=[f"{s.name}-{p.type}" for s, p in CASES])
def test_binned_identical_counts_do_not_drift(s: Statistic, profile: FeatureProfile) -> None:
    ref = np.asarray(profile.counts, dtype=np.float64)
    score = float(s.binned(profile)(ref, ref.copy()))
    assert score == pytest.approx(1.0 if s.p_value else 0.0, abs=1e-9)
    assert not s.drifted(score, s.default_threshold)


@pytest.mark.parametrize(("s", "profile"), CASES, ids=[f"{s.name}-{p.type}" for s, p in CASES])
def test_binned_disjoint_counts_drift(s: Statistic, profile: FeatureProfile) -> None:
    ref = np.array([500, 500, 0, 0], dtype=np.float64)
    cur = np.array([0, 0, 500, 500] if profile.type == "numeric" else [0, 0, 0, 1000], float)
    score = float(s.binned(profile)(ref, cur))
    assert s.drifted(score, s.default_threshold)
    if s.p_value:
        assert score < 1e-6
    else:
        assert score >= 5 * s.default_threshold
    stacked = s.binned(profile)(np.stack([ref, ref]), np.stack([ref, cur]))
    assert stacked.shape == (2,) and float(stacked[1]) == pytest.approx(score)


EXACT = [s for s in ENTRIES if s.exact is not None]
SAME = np.arange(1000, dtype=np.float64)
SAMPLES = {
    "sorted": (Sample(SAME), Sample(SAME.copy()), Sample(SAME + 1000)),
    "counted": (
        Sample(np.arange(4.0), np.array([5, 5, 0, 0])),
        Sample(np.arange(4.0), np.array([5, 5, 0, 0])),
        Sample(np.arange(4.0), np.array([0, 0, 5, 5])),
    ),
}


@pytest.mark.parametrize("form", SAMPLES)
@pytest.mark.parametrize("s", EXACT, ids=lambda s: s.name)
def test_exact_on_raw_values(s: Statistic, form: str) -> None:
    assert s.exact is not None
    ref, same, shifted = SAMPLES[form]
    score, note = s.exact(ref, same)
    assert score == pytest.approx(1.0 if s.p_value else 0.0, abs=1e-9) and note
    assert not s.drifted(score, s.default_threshold)
    score, _ = s.exact(ref, shifted)
    assert s.drifted(score, s.default_threshold)


def test_the_engine_does_not_branch_on_method_names() -> None:
    tree = ast.parse((ROOT / "operator" / "modelworks" / "drift" / "engine.py").read_text())
    names = set(METHODS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare | ast.Dict | ast.Set | ast.Tuple | ast.List):
            consts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
            assert not names & set(consts), f"line {node.lineno}: dispatch via STATISTICS"


@pytest.mark.parametrize(
    ("names", "text"),
    [([], ""), (["a"], "a"), (["a", "b"], "a and b"), (["a", "b", "c"], "a, b and c")],
)
def test_and_list(names: list[str], text: str) -> None:
    assert and_list(names) == text
