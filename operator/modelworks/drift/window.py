"""Live drift windows: per-pod cumulative bucket counters -> counts over the last window. Pure.

The model server counts every scored row into the reference profile's buckets
(``modelworks_feature_bucket_total{feature,bucket}``, and ``..._missing_total``). Those are
counters since the pod started. The DriftMonitor takes a snapshot of every serving pod
at each check and scores the difference between now and the last snapshot taken at
least one window ago. A pod that is new since then counts in full; a pod whose counters
went down restarted, and counts in full from its restart. With no snapshot old enough
(the first check, or after an operator restart) the window is everything the pods
have counted since they started, and the result says so.

The model's answers are counted the same way per output
(``modelworks_prediction_bucket_total{output,bucket}``, ``..._missing_total``) into the
profile's ``outputs`` buckets; ``outputs=True`` reads those instead of the features.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from modelworks.drift.profile import FeatureProfile, Profile, bucket_labels
from modelworks.names import FEATURE_BUCKET_METRIC as BUCKETS
from modelworks.names import FEATURE_MISSING_METRIC as MISSING
from modelworks.names import PREDICTION_BUCKET_METRIC as OUTPUT_BUCKETS
from modelworks.names import PREDICTION_MISSING_METRIC as OUTPUT_MISSING

# feature -> (per-bucket counts aligned with the profile, missing)
FeatureCounts = Mapping[str, tuple[tuple[int, ...], int]]


@dataclass(frozen=True)
class Snapshot:
    """What every serving pod had counted at ``at`` (seconds, any monotonic clock)."""

    at: float
    pods: Mapping[str, FeatureCounts]  # pod uid -> counts


@dataclass(frozen=True)
class Window:
    counts: FeatureCounts
    since: float | None  # the baseline snapshot's time; None: since the pods started
    pods: int
    restarted: int  # pods counted in full because their counters went down


@dataclass(frozen=True)
class Series:
    """Which counters hold one kind of entry: features, or the model's outputs."""

    buckets: str
    missing: str
    label: str


FEATURES = Series(BUCKETS, MISSING, "feature")
OUTPUTS = Series(OUTPUT_BUCKETS, OUTPUT_MISSING, "output")


def entries(profile: Profile, outputs: bool = False) -> tuple[FeatureProfile, ...]:
    return profile.outputs if outputs else profile.features


def pod_counts(
    samples: Iterable[tuple[str, Mapping[str, str], float]],
    profile: Profile,
    version: str,
    *,
    outputs: bool = False,
) -> dict[str, tuple[tuple[int, ...], int]]:
    """One pod's counters for the features (or ``outputs``) of ``profile`` (served
    ``version`` only)."""
    series = OUTPUTS if outputs else FEATURES
    watched = entries(profile, outputs)
    index = {f.name: {b: i for i, b in enumerate(bucket_labels(f))} for f in watched}
    counts = {f.name: [0] * len(bucket_labels(f)) for f in watched}
    missing = dict.fromkeys(index, 0)
    for name, labels, value in samples:
        if labels.get("version", version) != version:
            continue
        feature = labels.get(series.label, "")
        if feature not in index:
            continue
        if name == series.buckets:
            slot = index[feature].get(labels.get("bucket", ""))
            if slot is not None:
                counts[feature][slot] += int(value)
        elif name == series.missing:
            missing[feature] += int(value)
    return {f: (tuple(c), missing[f]) for f, c in counts.items()}


def _minus(
    now: tuple[tuple[int, ...], int], before: tuple[tuple[int, ...], int]
) -> tuple[tuple[int, ...], int] | None:
    """``now - before``, or None when any counter went down (the pod restarted)."""
    if len(now[0]) != len(before[0]):
        return None
    diff = tuple(a - b for a, b in zip(now[0], before[0], strict=True))
    missing = now[1] - before[1]
    if missing < 0 or any(d < 0 for d in diff):
        return None
    return diff, missing


def baseline_for(history: Sequence[Snapshot], at: float, window: float) -> Snapshot | None:
    """The latest snapshot taken at least ``window`` before ``at``."""
    older = [s for s in history if s.at <= at - window]
    return max(older, key=lambda s: s.at) if older else None


def window_counts(current: Snapshot, history: Sequence[Snapshot], window: float) -> Window:
    """The counts over the last ``window`` seconds, summed over the pods."""
    base = baseline_for(history, current.at, window)
    totals: dict[str, tuple[list[int], int]] = {}
    restarted = 0
    for uid, features in current.pods.items():
        before = base.pods.get(uid) if base is not None else None
        pod_restarted = False
        for feature, now in features.items():
            delta = now
            if before is not None and feature in before:
                diff = _minus(now, before[feature])
                if diff is None:
                    pod_restarted = True
                else:
                    delta = diff
            acc = totals.setdefault(feature, ([0] * len(now[0]), 0))
            if len(acc[0]) != len(delta[0]):
                continue  # a pod serving with other bucket edges: not comparable
            for i, c in enumerate(delta[0]):
                acc[0][i] += c
            totals[feature] = (acc[0], acc[1] + delta[1])
        restarted += pod_restarted
    counts = {f: (tuple(c), m) for f, (c, m) in totals.items()}
    return Window(counts, base.at if base else None, len(current.pods), restarted)


def prune(history: Sequence[Snapshot], at: float, window: float) -> list[Snapshot]:
    """Keep what later windows can still use: the newest snapshot older than a window, and
    everything after it."""
    keep_from = baseline_for(history, at, window)
    return [s for s in history if keep_from is None or s.at >= keep_from.at]


# --- from Prometheus -------------------------------------------------------------------
# With a Prometheus that scrapes the serving pods (manifests/monitoring/podmonitor.yaml),
# the window is one query: increase() over it handles counter resets itself, and the
# history survives operator restarts. increase() extrapolates to the window's edges, so
# counts are rounded.


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def prometheus_queries(
    namespace: str,
    modeldeployment: str,
    model: str,
    version: str,
    window: float,
    *,
    outputs: bool = False,
) -> tuple[str, str]:
    """The PromQL for the bucket counts and the missing counts over the last ``window`` s
    (of the features, or of the model's ``outputs``)."""
    series = OUTPUTS if outputs else FEATURES
    matchers = ",".join(
        f"{label}={_promql_string(value)}"
        for label, value in (
            ("namespace", namespace),
            ("modeldeployment", modeldeployment),
            ("model", model),
            ("version", version),
        )
    )
    seconds = max(round(window), 1)
    label = series.label
    return (
        f"sum by ({label}, bucket, pod) (increase({series.buckets}{{{matchers}}}[{seconds}s]))",
        f"sum by ({label}, pod) (increase({series.missing}{{{matchers}}}[{seconds}s]))",
    )


def prometheus_window(
    buckets: Iterable[tuple[Mapping[str, str], float]],
    missing: Iterable[tuple[Mapping[str, str], float]],
    profile: Profile,
    version: str,
    *,
    outputs: bool = False,
) -> Window:
    """The window's counts from the two query results (label set, value) of
    :func:`prometheus_queries`; ``pods`` is how many pods had series in it."""
    series = OUTPUTS if outputs else FEATURES
    samples: list[tuple[str, Mapping[str, str], float]] = []
    pods: set[str] = set()
    for name, rows in ((series.buckets, buckets), (series.missing, missing)):
        for labels, value in rows:
            if value != value or value < 0:  # NaN (no data) or nonsense: nothing counted
                continue
            samples.append((name, {**labels, "version": version}, float(round(value))))
            pods.add(labels.get("pod", ""))
    return Window(pod_counts(samples, profile, version, outputs=outputs), None, len(pods), 0)
