"""Model quality of a DriftMonitor (``spec.performance``): judge the performance Job's
result against the thresholds. Pure: the result, the served version's MLflow metrics and
``now`` come in; the ``status.performance`` fields, the ``ModelQuality`` condition and the
Events come out."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelworks.api.performance import LOWER_IS_BETTER, MetricThreshold, Performance
from modelworks.conditions import Event

MODEL_QUALITY = "ModelQuality"
WITHIN = "WithinThresholds"
DEGRADED = "PerformanceDegraded"
INSUFFICIENT = "InsufficientLabels"
NO_CAPTURE = "NoDataCapture"
CHECK_FAILED = "PerformanceCheckFailed"


@dataclass(frozen=True)
class QualityFacts:
    """What the reconciler observed: the Job's result (None: none yet), the served
    version's run metrics, whether the target captures, a failed Job's message."""

    result: Mapping[str, Any] | None
    baselines: Mapping[str, float] = field(default_factory=dict)
    served_version: str | None = None
    captures: bool = True
    target: str = ""
    failure: str | None = None


@dataclass(frozen=True)
class QualityOutcome:
    status: dict[str, Any]
    condition: tuple[str, str, str]  # status ("True"/"False"/"Unknown"), reason, message
    events: list[Event]
    degraded: bool
    reason: str = ""


def worse(metric: str, value: float, bound: float) -> bool:
    """``value`` is worse than ``bound`` for this metric (higher is worse for losses)."""
    return value > bound if metric in LOWER_IS_BETTER else value < bound


def judge(
    value: float | None, rule: MetricThreshold | None, baselines: Mapping[str, float]
) -> tuple[str | None, float | None, str]:
    """(verdict, baseline, reason) of one metric value against its threshold."""
    if value is None or not math.isfinite(value):
        return None, None, "no value (one class only in the window?)"
    if rule is None:
        return "OK", None, ""
    broken: list[str] = []
    if rule.min is not None and value < rule.min:
        broken.append(f"{value:.4g} < min {rule.min:g}")
    if rule.max is not None and value > rule.max:
        broken.append(f"{value:.4g} > max {rule.max:g}")
    baseline = baselines.get(rule.baseline_metric or "") if rule.baseline_metric else None
    if rule.max_drop is not None and baseline is None:
        return None, None, f"baseline metric {rule.baseline_metric} not in the served run"
    if rule.max_drop is not None and baseline is not None:
        direction = 1 if rule.metric in LOWER_IS_BETTER else -1
        bound = baseline * (1 + direction * rule.max_drop)
        if worse(rule.metric, value, bound):
            broken.append(
                f"{value:.4g} worse than {rule.baseline_metric} {baseline:.4g} "
                f"by more than {rule.max_drop:.0%}"
            )
    return ("Degraded" if broken else "OK"), baseline, "; ".join(broken)


def metric_rows(
    spec: Performance, values: Mapping[str, Any], baselines: Mapping[str, float]
) -> list[dict[str, Any]]:
    rules = {t.metric: t for t in spec.thresholds or []}
    rows = []
    for name in spec.metrics:
        raw = values.get(name)
        value = float(raw) if isinstance(raw, int | float) else None
        verdict, baseline, reason = judge(value, rules.get(name), baselines)
        row: dict[str, Any] = {"metric": name, "value": value, "verdict": verdict}
        if baseline is not None:
            row["baseline"] = baseline
        if reason:
            row["reason"] = reason
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def window_fields(result: Mapping[str, Any], facts: QualityFacts) -> dict[str, Any]:
    return {
        "windowStart": result.get("start"),
        "windowEnd": result.get("end"),
        "labelledRows": int(result.get("labelledRows") or 0),
        "unmatchedLabels": int(result.get("unmatchedLabels") or 0),
        "servedVersion": facts.served_version,
    }


def decide_quality(spec: Performance, facts: QualityFacts) -> QualityOutcome:
    """Verdict, status fields, condition and Events of one performance check."""
    if not facts.captures:
        message = (
            f"spec.performance needs captured predictions: ModelDeployment {facts.target} "
            "has no spec.dataCapture"
        )
        return QualityOutcome({}, ("Unknown", NO_CAPTURE, message), [], False)
    if facts.failure is not None:
        message = f"the performance check failed: {facts.failure}"
        event = Event(CHECK_FAILED, message, "Warning")
        return QualityOutcome({}, ("Unknown", CHECK_FAILED, message), [event], False)
    if facts.result is None:
        return QualityOutcome({}, ("Unknown", "Pending", "no performance check yet"), [], False)
    status = {k: v for k, v in window_fields(facts.result, facts).items() if v is not None}
    rows = int(status["labelledRows"])
    if rows < spec.min_labelled_rows:
        message = f"{rows} labelled rows in the window, fewer than minLabelledRows {spec.min_labelled_rows}"
        status.update(verdict="InsufficientLabels", metrics=[])
        return QualityOutcome(status, ("Unknown", INSUFFICIENT, message), [], False)
    metrics = metric_rows(spec, facts.result.get("metrics") or {}, facts.baselines)
    bad = [m for m in metrics if m.get("verdict") == "Degraded"]
    status.update(verdict="Degraded" if bad else "OK", metrics=metrics)
    if bad:
        reason = "; ".join(f"{m['metric']} {m['reason']}" for m in bad)
        message = f"performance dropped over {rows} labelled rows: {reason}"
        event = Event(DEGRADED, message, "Warning")
        return QualityOutcome(status, ("False", DEGRADED, message), [event], True, reason)
    summary = ", ".join(
        f"{m['metric']} {m['value']:.4g}" for m in metrics if m.get("value") is not None
    )
    message = f"within thresholds over {rows} labelled rows: {summary}"
    return QualityOutcome(status, ("True", WITHIN, message), [], False)
