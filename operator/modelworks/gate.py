"""The quality gate: every rule must hold for a model to be registered. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from modelworks.api.trainingjob import GateRule

_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


@dataclass(frozen=True)
class RuleResult:
    metric: str
    op: str
    value: float | None  # the run's metric (None: not logged)
    threshold: float | None  # what it was compared with (the strictest of value and baseline)
    passed: bool
    explanation: str


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    results: tuple[RuleResult, ...]

    @property
    def summary(self) -> str:
        """One line for the printer column: the failing rules, or all of them when it passed."""
        shown = [r for r in self.results if not r.passed] or list(self.results)
        return ", ".join(r.explanation for r in shown)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def baseline_threshold(baseline: float, op: str, min_relative_change: float) -> float:
    """The value the candidate must reach to beat ``baseline`` by ``min_relative_change``."""
    margin = abs(baseline) * min_relative_change
    return baseline + margin if op in (">", ">=") else baseline - margin


def evaluate(
    rules: list[GateRule],
    metrics: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float] | None],
) -> GateOutcome:
    """Check every rule against the run's ``metrics``.

    ``baselines`` maps an alias to the metrics of the version that holds it now, or to
    None when no version holds it yet: a first model has nothing to beat, so a baseline
    clause with no baseline passes (its explanation says so).
    """
    results = []
    for rule in rules:
        value = metrics.get(rule.metric)
        if value is None or math.isnan(value):
            results.append(
                RuleResult(
                    rule.metric, rule.op, None, rule.value, False, f"{rule.metric} was not logged"
                )
            )
            continue
        checks: list[tuple[float, str]] = []
        if rule.value is not None:
            checks.append((rule.value, _fmt(rule.value)))
        note = ""
        if rule.baseline is not None:
            held = baselines.get(rule.baseline.alias)
            base = None if held is None else held.get(rule.metric)
            if base is None:
                note = f" (no @{rule.baseline.alias} {rule.metric} to beat yet)"
            else:
                target = baseline_threshold(base, rule.op, rule.baseline.min_relative_change)
                checks.append((target, f"{_fmt(target)} (@{rule.baseline.alias} {_fmt(base)})"))
        failed = [(t, text) for t, text in checks if not _OPS[rule.op](value, t)]
        passed = not failed
        worst = failed[0] if failed else (checks[-1] if checks else (None, ""))
        op = rule.op if passed else {">": "<=", ">=": "<", "<": ">=", "<=": ">"}[rule.op]
        explanation = (
            f"{rule.metric}={_fmt(value)} {op} {worst[1]}{note}"
            if worst[0] is not None
            else f"{rule.metric}={_fmt(value)}{note}"
        )
        results.append(RuleResult(rule.metric, rule.op, value, worst[0], passed, explanation))
    return GateOutcome(all(r.passed for r in results), tuple(results))
