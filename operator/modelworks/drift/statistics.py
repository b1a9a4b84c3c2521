"""The drift statistics as one registry: one :class:`Statistic` per ``method``. Pure.

Everything that differs from one statistic to another is in its entry: the name the
API uses, whether the score is a distance (drift above the threshold) or a p-value
(drift below it), the default threshold, the function over bucket counts, the exact
function over raw values (or none), the statistic a categorical feature gets instead,
and what "approximate" means when the exact one is scored from buckets. The engine
dispatches through :data:`STATISTICS`; the API's ``method`` enum, its CEL rule and
threshold description (and so the CRDs and docs/api-reference.md), and the table in
docs/driftmonitor.md (:func:`markdown_table`) are derived from it, and
tests/unit/test_drift_statistics.py fails when one of them disagrees. The formulas
themselves are in :mod:`modelworks.drift.stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple, get_args

import numpy as np
from numpy.typing import NDArray

from modelworks.drift import stats
from modelworks.drift.profile import FeatureProfile

Method = Literal["psi", "ks", "jensen-shannon", "wasserstein", "chi2"]
"""The statistics' names, as in the DriftMonitor API; one per :data:`STATISTICS` entry."""
Kind = Literal["distance", "p-value"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Binned = Callable[[FloatArray, FloatArray], FloatArray]
"""Score of reference and current bucket counts, on the last axis (stacks allowed)."""


@dataclass(frozen=True)
class Sample:
    """A numeric sample without its missing values: sorted values, or counts of values.

    ``counts is None``: ``values`` is the sorted sample. Otherwise ``values`` are sorted
    distinct values (shared with the other side) and ``counts`` how often each occurs.
    """

    values: FloatArray
    counts: IntArray | None = None

    @property
    def size(self) -> int:
        return int(self.values.size if self.counts is None else self.counts.sum())


Exact = Callable[[Sample, Sample], tuple[float, str]]
"""Score of two raw samples, and a note saying how it was computed."""


class Monotone(NamedTuple):
    """A cheap statistic the score decreases with (sample sizes fixed), and the conversion.

    Calibration takes the quantile of the cheap statistic over the bootstrap resamples
    and converts it once, instead of converting every resample.
    """

    statistic: Binned
    to_score: Callable[[float, int, int], float]


@dataclass(frozen=True)
class Statistic:
    """One drift statistic: everything the engine, the API and the docs need to know."""

    name: Method
    kind: Kind
    default_threshold: float
    binned: Callable[[FeatureProfile], Binned]  # the feature's reference -> counts function
    summary: str  # what it measures, one sentence for the docs table
    exact: Exact | None = None  # on raw values (batch mode, numeric features)
    categorical_fallback: Method | None = None  # needs ordered values: this one instead
    approximation: str = ""  # note when scored from buckets although ``exact`` exists
    bootstrap: Monotone | None = None  # calibration shortcut, see Monotone

    @property
    def p_value(self) -> bool:
        return self.kind == "p-value"

    def drifted(self, score: float, threshold: float) -> bool:
        """Distances drift above the threshold, p-values below it."""
        return score < threshold if self.p_value else score > threshold


def _fixed(fn: Binned) -> Callable[[FeatureProfile], Binned]:
    """A counts function that needs nothing from the reference beyond its counts."""
    return lambda _profile: fn


def _wasserstein_binned(profile: FeatureProfile) -> Binned:
    edges = np.asarray(profile.edges, dtype=np.float64)
    scale = stats.binned_scale(profile.counts, edges)
    return lambda r, c: stats.wasserstein_binned(r, c, edges, scale=scale)


def _wasserstein_exact(ref: Sample, cur: Sample) -> tuple[float, str]:
    """Wasserstein-1 on the raw values (sorted, or counted when integer-valued)."""
    note = "Wasserstein on raw values / robust sigma of the reference"
    if ref.counts is not None and cur.counts is not None:
        _, w = stats.ks_wasserstein_counts(ref.counts, cur.counts, ref.values)
        return w / stats.robust_scale_counts(ref.counts, ref.values), note
    finite_ref = ref.values[np.isfinite(ref.values)]
    finite_cur = cur.values[np.isfinite(cur.values)]
    _, w = stats.ks_wasserstein_sorted(finite_ref, finite_cur)
    left_out = ref.size - finite_ref.size + cur.size - finite_cur.size
    if left_out:
        note += f" ({left_out} infinite values left out)"
    return w / stats.robust_scale(finite_ref), note


def _ks_exact(ref: Sample, cur: Sample) -> tuple[float, str]:
    """KS on the raw values (sorted, or counted when integer-valued): the p-value."""
    counted = ref.counts is not None and cur.counts is not None
    small = max(ref.size, cur.size) <= stats.KS_EXACT_MAX_N
    if ref.counts is not None and cur.counts is not None and not small:
        d, _ = stats.ks_wasserstein_counts(ref.counts, cur.counts, ref.values)
        p = float(stats.ks_pvalue(d, ref.size, cur.size))
    elif ref.counts is not None and cur.counts is not None:
        d, p = stats.ks_sorted(np.repeat(ref.values, ref.counts), np.repeat(cur.values, cur.counts))
    else:
        d, p = stats.ks_sorted(ref.values, cur.values)
    kind = "exact" if small else "asymptotic"
    return p, f"KS on raw values{' (counted)' if counted else ''}, D={d:.4g}, {kind} p-value"


STATISTICS: Mapping[Method, Statistic] = MappingProxyType(
    {
        "psi": Statistic(
            "psi",
            "distance",
            0.2,
            _fixed(stats.psi),
            "Population stability index, proportions floored at 1e-4 for empty buckets",
        ),
        "ks": Statistic(
            "ks",
            "p-value",
            0.05,
            _fixed(lambda r, c: stats.ks_binned(r, c)[1]),
            "Two-sample Kolmogorov-Smirnov test",
            exact=_ks_exact,
            categorical_fallback="chi2",
            approximation="KS from buckets: D at the bucket edges only (a lower bound), "
            "asymptotic p-value",
            bootstrap=Monotone(
                stats.ks_binned_statistic, lambda d, n, m: float(stats.ks_pvalue(d, n, m))
            ),
        ),
        "jensen-shannon": Statistic(
            "jensen-shannon",
            "distance",
            0.1,
            _fixed(stats.jensen_shannon),
            "Jensen-Shannon distance, base 2, in [0, 1]",
        ),
        "wasserstein": Statistic(
            "wasserstein",
            "distance",
            0.1,
            _wasserstein_binned,
            "Wasserstein-1 distance over the reference's robust sigma (IQR / 1.349)",
            exact=_wasserstein_exact,
            categorical_fallback="jensen-shannon",
            approximation="Wasserstein from buckets: uniform within buckets, open ends one "
            "bucket wide",
        ),
        "chi2": Statistic(
            "chi2",
            "p-value",
            0.05,
            _fixed(lambda r, c: stats.chi2_homogeneity(r, c)[1]),
            "Chi-square test of homogeneity (2 x buckets table)",
        ),
    }
)

METHODS: tuple[Method, ...] = get_args(Method)
P_VALUE_METHODS: tuple[Method, ...] = tuple(m for m in METHODS if STATISTICS[m].p_value)


def and_list(names: tuple[str, ...] | list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1] if names else "")))


def markdown_table() -> str:
    """The table of statistics in docs/driftmonitor.md (a unit test keeps the two equal)."""
    rows = [
        "| `method` | score | default threshold | what it measures | from bucket counts "
        "| on raw values (batch) | categorical feature |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in STATISTICS.values():
        when = "p-value, drift below" if s.p_value else "distance, drift above"
        counts = f"approximate: {s.approximation}" if s.exact else "as defined"
        raw = "exact" if s.exact else "from buckets, like live"
        fallback = f"`{s.categorical_fallback}` instead" if s.categorical_fallback else "the same"
        rows.append(
            f"| `{s.name}` | {when} | {s.default_threshold:g} | {s.summary} | {counts} "
            f"| {raw} | {fallback} |"
        )
    return "\n".join(rows) + "\n"
