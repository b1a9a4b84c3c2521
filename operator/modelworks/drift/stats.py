"""Drift statistics on bucket counts and on raw samples. Pure (numpy, scipy).

Every count-based statistic takes a reference and a current array of bucket counts
(the reference profile's buckets, see :mod:`modelworks.drift.profile`) and works on
the **last axis**, so a ``(B, k)`` stack of bootstrap resamples is scored in one
vectorised call. For 1-d inputs the result is a 0-d array: ``float(...)`` it. A side
with no counts at all gives ``nan``: there is nothing to compare (the engine never
gets that far, it stops at its minimum-sample guard).

Missing values are never part of these distributions: the profile and the model
server count them apart, and the engine reports them next to the score.

Distances (drift when the score is *above* the threshold):

- :func:`psi`: population stability index, ``Σ (q - p) · ln(q / p)`` over buckets.
- :func:`jensen_shannon`: Jensen-Shannon distance, base 2, in ``[0, 1]``.
- :func:`wasserstein_binned` / :func:`wasserstein_samples`: Wasserstein-1 (earth
  mover's) distance divided by the reference's robust standard deviation, ``IQR /
  1.349`` (:data:`IQR_TO_SIGMA`), so one threshold fits features of any unit.
  Evidently divides by the standard deviation; the robust one is the same for normal
  data, is not driven by a few outliers, and can be read off a histogram whose end
  buckets are open (a standard deviation cannot), so live and batch scores agree.

Tests (the score is a p-value, drift when *below* the threshold):

- :func:`chi2_homogeneity`: chi-square test that both samples come from one
  categorical distribution (2 x k contingency table).
- :func:`ks_binned` (approximate) / :func:`ks_samples` (exact statistic): two-sample
  Kolmogorov-Smirnov.

Raw samples are scored from sorted arrays (:func:`ks_sorted`,
:func:`ks_wasserstein_sorted`) or, for integer-valued data, from counts per value
(:func:`ks_wasserstein_counts`, exact too, no sort).

Multiple testing: :func:`bonferroni`, :func:`benjamini_hochberg`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special  # type: ignore[import-untyped]


def _stats() -> Any:
    """``scipy.stats``, imported on first use: ~1 s of every operator and CLI start that
    never computes a KS p-value."""
    from scipy import stats

    return stats


FloatArray = NDArray[np.float64]

PSI_EPSILON = 1e-4
"""Floor for bucket proportions in :func:`psi` (empty buckets would make it infinite)."""

IQR_TO_SIGMA = 1.3489795003921634
"""Interquartile range of the standard normal: ``IQR / IQR_TO_SIGMA`` is a robust sigma."""

KS_EXACT_MAX_N = 10_000
"""Like ``scipy.stats.ks_2samp(method="auto")``: exact p-values up to this sample size."""


def _counts(values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        raise ValueError("bucket counts must have at least one axis")
    return arr


def proportions(counts: ArrayLike) -> FloatArray:
    """Counts divided by their total along the last axis (``nan`` where the total is 0)."""
    c = _counts(counts)
    total = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(c / total, dtype=np.float64)


def _empty(*arrays: FloatArray) -> NDArray[np.bool_]:
    out = np.zeros(np.broadcast_shapes(*(a.shape[:-1] for a in arrays)), dtype=bool)
    for a in arrays:
        out = out | (a.sum(axis=-1) <= 0)
    return out


def psi(reference: ArrayLike, current: ArrayLike, *, epsilon: float = PSI_EPSILON) -> FloatArray:
    """Population stability index of two bucket-count arrays.

    ``PSI = Σ_i (q_i - p_i) · ln(q_i / p_i)`` with ``p`` the reference and ``q`` the
    current proportions. A bucket that is empty on one side would make the sum
    infinite, so both proportions are floored at ``epsilon`` (default ``1e-4``, the
    usual choice; not renormalised): a bucket that is empty in the reference but
    holds a share ``q`` of the current window adds ``(q - ε) · ln(q / ε)``, large but
    finite. Symmetric, ``0`` for identical proportions. Rule of thumb: below 0.1
    stable, 0.1-0.2 moderate shift, above 0.2 significant.
    """
    r, c = _counts(reference), _counts(current)
    p = np.maximum(proportions(r), epsilon)
    q = np.maximum(proportions(c), epsilon)
    out = np.sum((q - p) * np.log(q / p), axis=-1)
    return np.asarray(np.where(_empty(r, c), np.nan, out), dtype=np.float64)


def jensen_shannon(reference: ArrayLike, current: ArrayLike) -> FloatArray:
    """Jensen-Shannon *distance* (base 2) of two bucket-count arrays, in ``[0, 1]``.

    ``sqrt(JSD)``, ``JSD = ½ KL(p ‖ m) + ½ KL(q ‖ m)`` with ``m = (p + q) / 2`` and
    ``0 · log 0 = 0``, so empty buckets need no smoothing. ``0`` for identical
    proportions, ``1`` for disjoint supports. Same value as
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    """
    r, c = _counts(reference), _counts(current)
    p, q = proportions(r), proportions(c)
    m = (p + q) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    jsd = 0.5 * np.sum(kl_p, axis=-1) + 0.5 * np.sum(kl_q, axis=-1)
    out = np.sqrt(np.clip(jsd, 0.0, 1.0))
    return np.asarray(np.where(_empty(r, c), np.nan, out), dtype=np.float64)


def chi2_homogeneity(reference: ArrayLike, current: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Chi-square test of homogeneity: ``(statistic, p-value)``.

    The reference is a sample too (not a known distribution), so this is Pearson's
    test on the 2 x k table ``[reference; current]`` — the same as
    ``scipy.stats.chi2_contingency(table, correction=False)``. Buckets empty on both
    sides carry no information and are left out (they would give ``0/0`` terms and a
    wrong number of degrees of freedom); a bucket empty only in the reference is kept
    (its expected count is positive). ``dof = (non-empty buckets) - 1``; with a single
    non-empty bucket there is nothing to test and the p-value is 1. The p-value is
    the asymptotic chi-square one (``scipy.special.chdtrc``): rough when expected
    counts are below ~5, which the engine's minimum-sample guard makes rare.
    """
    r, c = _counts(reference), _counts(current)
    r, c = np.broadcast_arrays(r, c)
    cols = r + c
    n_r = r.sum(axis=-1, keepdims=True)
    n_c = c.sum(axis=-1, keepdims=True)
    total = n_r + n_c
    keep = cols > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        e_r = n_r * cols / total
        e_c = n_c * cols / total
        terms = np.where(keep, (r - e_r) ** 2 / e_r + (c - e_c) ** 2 / e_c, 0.0)
    stat = np.sum(terms, axis=-1)
    dof = keep.sum(axis=-1) - 1
    with np.errstate(invalid="ignore"):
        p = np.where(dof > 0, special.chdtrc(np.maximum(dof, 1), stat), 1.0)
    empty = _empty(r, c)
    return (
        np.asarray(np.where(empty, np.nan, stat), dtype=np.float64),
        np.asarray(np.where(empty, np.nan, np.clip(p, 0.0, 1.0)), dtype=np.float64),
    )


def ks_pvalue(statistic: ArrayLike, n: int, m: int) -> FloatArray:
    """Asymptotic two-sided p-value of a two-sample KS statistic, as scipy computes it.

    ``scipy.stats.kstwo.sf(D, round(n·m / (n + m)))`` — what ``ks_2samp`` does with
    ``method="asymp"`` (and with ``"auto"`` above :data:`KS_EXACT_MAX_N`).
    """
    d = np.asarray(statistic, dtype=np.float64)
    en = max(round(n * m / (n + m)), 1)
    return np.asarray(np.clip(_stats().kstwo.sf(d, en), 0.0, 1.0), dtype=np.float64)


def ks_binned_statistic(reference: ArrayLike, current: ArrayLike) -> FloatArray:
    """The statistic ``D`` of :func:`ks_binned` alone (cheap; its p-value is not)."""
    r, c = _counts(reference), _counts(current)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_r = np.cumsum(r, axis=-1) / r.sum(axis=-1, keepdims=True)
        f_c = np.cumsum(c, axis=-1) / c.sum(axis=-1, keepdims=True)
    d = np.max(np.abs(f_r - f_c), axis=-1)
    return np.asarray(np.where(_empty(r, c), np.nan, d), dtype=np.float64)


def ks_binned(reference: ArrayLike, current: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Kolmogorov-Smirnov from histograms — an approximation: ``(D, p-value)``.

    ``D = max_i |F_ref(e_i) - F_cur(e_i)|`` with both empirical CDFs known exactly at
    the bucket edges only; the exact statistic is a supremum over every value, so
    this ``D`` is a lower bound of it (equal when the data only take the edge
    values). The p-value is the asymptotic one (:func:`ks_pvalue`) with the sample
    sizes the counts imply; it is conservative (too high) when the true difference
    peaks inside a bucket. Buckets must be ordered (numeric features).
    """
    r, c = _counts(reference), _counts(current)
    d = ks_binned_statistic(r, c)
    n_r, n_c = r.sum(axis=-1), c.sum(axis=-1)
    empty = np.isnan(d)
    with np.errstate(invalid="ignore", divide="ignore"):
        en = np.where(empty, 1.0, np.maximum(np.round(n_r * n_c / (n_r + n_c)), 1.0))
    p = np.clip(_stats().kstwo.sf(np.where(empty, 0.0, d), en), 0.0, 1.0)
    return d, np.asarray(np.where(empty, np.nan, p), dtype=np.float64)


def ks_samples(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Exact two-sample Kolmogorov-Smirnov on raw values: ``(D, p-value)``.

    ``D = sup_x |F_ref(x) - F_cur(x)|`` over the empirical CDFs (ties handled: each
    CDF is evaluated just after every observed value). Same numbers as
    ``scipy.stats.ks_2samp(reference, current)``: for samples of at most
    :data:`KS_EXACT_MAX_N` values scipy's exact p-value is used, above that the
    asymptotic one. NaNs must be removed first.
    """
    u = np.sort(np.asarray(reference, dtype=np.float64))
    v = np.sort(np.asarray(current, dtype=np.float64))
    return ks_sorted(u, v)


def ks_sorted(u: FloatArray, v: FloatArray) -> tuple[float, float]:
    """:func:`ks_samples` of two already *sorted*, NaN-free samples (no copy, no sort)."""
    if u.size == 0 or v.size == 0:
        return math.nan, math.nan
    if max(u.size, v.size) <= KS_EXACT_MAX_N:
        with warnings.catch_warnings():  # scipy's own "exact failed, using asymp" fallback
            warnings.simplefilter("ignore", RuntimeWarning)
            res: Any = _stats().ks_2samp(u, v)
        return float(res.statistic), float(res.pvalue)
    d = ks_statistic_sorted(u, v)
    return d, float(ks_pvalue(d, u.size, v.size))


def _last_of_ties(x: FloatArray) -> NDArray[np.bool_]:
    """Where a sorted array's value changes next: the right-continuous CDF's jump points."""
    last = np.empty(x.size, dtype=bool)
    np.not_equal(x[1:], x[:-1], out=last[:-1])
    last[-1:] = True
    return last


def ks_statistic_sorted(u: FloatArray, v: FloatArray) -> float:
    """Two-sample KS statistic of two *sorted*, NaN-free samples, in one merge.

    ``G = F_u - F_v`` is a right-continuous step function that only moves at the
    observed values, so ``D = max |G|`` is taken just after each distinct value of the
    union. A stable argsort of ``u`` followed by ``v`` is one linear merge of two sorted
    runs (timsort); which side each merged value came from gives ``#u <= x`` by a running
    count, and ``#v <= x`` is the rest of the position. Evaluated at the last of each run
    of equal values, ties count on both sides as they should.
    """
    n, m = u.size, v.size
    if n == 0 or m == 0:
        return math.nan
    both = np.concatenate((u, v))
    order = np.argsort(both, kind="stable")
    merged = both[order]
    del both  # the temporaries are the whole memory cost: keep at most three alive
    count = np.int32 if n + m < 2**31 else np.int64
    seen_u: NDArray[np.signedinteger[Any]] = np.cumsum(order < n, dtype=count)
    del order
    last = _last_of_ties(merged)
    del merged
    if last.all():  # no ties: every position counts
        upto_u = seen_u
        upto: NDArray[np.signedinteger[Any]] = np.arange(1, n + m + 1, dtype=count)
    else:
        at = np.flatnonzero(last)
        upto_u = seen_u[at]
        upto = at + 1
    g = upto_u / n - (upto - upto_u) / m
    return float(max(g.max(), -g.min()))


def ks_wasserstein_sorted(u: FloatArray, v: FloatArray) -> tuple[float, float]:
    """KS statistic and (unnormalised) Wasserstein-1 distance of two *sorted* samples.

    The samples are merged with one search (each ``u`` value's merged position is its
    index plus its rank in ``v``, before equal ``v`` values; ``v`` fills the rest); both
    empirical CDFs follow from a running count, evaluated after each distinct value.
    ``D`` is the largest difference and ``W1 = ∫ |F_u - F_v| dx`` the sum of the
    differences times the gaps between consecutive distinct values. Infinite values
    give an infinite (or undefined) ``W1``; the engine leaves them out of it.
    """
    n, m = u.size, v.size
    if n == 0 or m == 0:
        return math.nan, math.nan
    total = n + m
    pos_u = np.arange(n) + np.searchsorted(v, u, side="left")
    from_u = np.zeros(total, dtype=bool)
    from_u[pos_u] = True
    merged = np.empty(total, dtype=np.float64)
    merged[pos_u] = u
    merged[~from_u] = v  # v keeps its order in the slots u leaves free
    seen_u = np.cumsum(from_u)
    last = _last_of_ties(merged)
    diff = np.abs(seen_u[last] / n - (np.flatnonzero(last) + 1 - seen_u[last]) / m)
    with np.errstate(invalid="ignore"):
        w = float(np.dot(diff[:-1], np.diff(merged[last])))
    return float(diff.max()), w


def ks_wasserstein_counts(
    reference: ArrayLike, current: ArrayLike, values: ArrayLike
) -> tuple[float, float]:
    """:func:`ks_wasserstein_sorted` of two samples given as counts over shared values.

    ``values`` are sorted and distinct and every observation is one of them (say the
    integers from the smallest to the largest one of an integer-valued feature), so
    both CDFs are exact at each value and constant in between: ``D`` is the largest
    difference, ``W1`` the differences times the gaps. Exact, and linear time: no sort.
    """
    r, c = _counts(reference), _counts(current)
    x = np.asarray(values, dtype=np.float64)
    n, m = r.sum(), c.sum()
    if n <= 0 or m <= 0:
        return math.nan, math.nan
    diff = np.abs(np.cumsum(r) / n - np.cumsum(c) / m)
    return float(diff.max()), float(np.dot(diff[:-1], np.diff(x)))


def robust_scale_counts(counts: ArrayLike, values: ArrayLike) -> float:
    """:func:`robust_scale` of the sample that has ``counts[i]`` times ``values[i]``."""
    c = np.asarray(counts, dtype=np.int64)
    x = np.asarray(values, dtype=np.float64)
    n = int(c.sum())
    if n == 0:
        return 1.0
    ends = np.cumsum(c)  # sorted positions [ends[i-1], ends[i]) hold values[i]

    def q(t: float) -> float:
        pos = t * (n - 1)
        lo = math.floor(pos)
        a, b = x[np.searchsorted(ends, [lo, min(lo + 1, n - 1)], side="right")]
        return float(a + (pos - lo) * (b - a))

    iqr = q(0.75) - q(0.25)
    if iqr > 0 and math.isfinite(iqr):
        return iqr / IQR_TO_SIGMA
    mean = float(np.dot(c, x)) / n
    std = math.sqrt(max(float(np.dot(c, (x - mean) ** 2)) / n, 0.0))
    return std if std > 0 and math.isfinite(std) else 1.0


def robust_scale(sorted_values: FloatArray) -> float:
    """A robust sigma of a sorted finite sample: ``IQR / 1.349``, else the std, else 1.

    IQR with linear interpolation (``numpy.quantile``'s default). For normal data it
    equals sigma; unlike the standard deviation it ignores outliers, and it can also be
    read from a histogram (:func:`binned_scale`), so raw and binned Wasserstein
    distances are normalised alike. Falls back to the standard deviation when more
    than half the values are tied (IQR 0), and to 1 for a constant sample.
    """
    n = sorted_values.size
    if n == 0:
        return 1.0

    def q(t: float) -> float:
        pos = t * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        return float(sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo]))

    iqr = q(0.75) - q(0.25)
    if iqr > 0 and math.isfinite(iqr):
        return iqr / IQR_TO_SIGMA
    std = float(np.std(sorted_values))
    return std if std > 0 and math.isfinite(std) else 1.0


def wasserstein_samples(reference: ArrayLike, current: ArrayLike) -> float:
    """Wasserstein-1 distance of two raw samples divided by the reference's robust sigma.

    ``W1 = ∫ |F_ref(x) - F_cur(x)| dx`` (``scipy.stats.wasserstein_distance``), over
    :func:`robust_scale` of the reference, so a threshold means "this many standard
    deviations of mass moved" whatever the feature's unit. Only finite values count.
    """
    u = np.sort(np.asarray(reference, dtype=np.float64), kind="stable")
    v = np.sort(np.asarray(current, dtype=np.float64), kind="stable")
    u, v = u[np.isfinite(u)], v[np.isfinite(v)]
    _, w = ks_wasserstein_sorted(u, v)
    return w / robust_scale(u)


def bucket_bounds(edges: ArrayLike) -> FloatArray:
    """Finite boundaries for ``len(edges) + 1`` ``le`` buckets: ``len(edges) + 2`` points.

    The inner buckets are ``(e_{i-1}, e_i]``. The first and last are open; they are
    closed at one neighbour's width beyond the outer edges (``e_0 - (e_1 - e_0)`` and
    ``e_last + (e_last - e_prev)``), which for quantile edges puts about as much
    reference mass in as little room as the neighbouring bucket. With a single edge
    the width is 1 (the normalised distance does not depend on it); without edges
    there is one bucket on ``[0, 1]``.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.size == 0:
        return np.array([0.0, 1.0])
    lo = e[1] - e[0] if e.size > 1 else 1.0
    hi = e[-1] - e[-2] if e.size > 1 else 1.0
    return np.concatenate([[e[0] - lo], e, [e[-1] + hi]])


def _cdf_at_bounds(counts: FloatArray) -> FloatArray:
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = np.cumsum(counts, axis=-1) / total
    zeros = np.zeros((*counts.shape[:-1], 1))
    return np.asarray(np.concatenate([zeros, cdf], axis=-1), dtype=np.float64)


def binned_quantile(counts: ArrayLike, edges: ArrayLike, q: float) -> float:
    """Quantile of a histogram read as uniform within each bucket (see :func:`bucket_bounds`)."""
    c = _counts(counts)
    if c.ndim != 1 or c.sum() <= 0:
        return math.nan
    bounds = bucket_bounds(edges)
    cdf = _cdf_at_bounds(c)
    j = int(np.searchsorted(cdf, q, side="left"))  # cdf[j-1] < q <= cdf[j]
    j = min(max(j, 1), cdf.size - 1)
    lo, hi = cdf[j - 1], cdf[j]
    frac = 0.0 if hi <= lo else (q - lo) / (hi - lo)
    return float(bounds[j - 1] + frac * (bounds[j] - bounds[j - 1]))


def binned_scale(counts: ArrayLike, edges: ArrayLike) -> float:
    """Robust sigma (``IQR / 1.349``) of a histogram; positive whenever it has counts."""
    iqr = binned_quantile(counts, edges, 0.75) - binned_quantile(counts, edges, 0.25)
    return iqr / IQR_TO_SIGMA if iqr > 0 else 1.0


def wasserstein_binned(
    reference: ArrayLike, current: ArrayLike, edges: ArrayLike, *, scale: float | None = None
) -> FloatArray:
    """Wasserstein-1 distance of two histograms over the same ``le`` buckets, normalised.

    Each histogram is read as uniform within its buckets (open end buckets closed as
    in :func:`bucket_bounds`), so both CDFs are piecewise linear and the difference
    ``d(x) = F_ref(x) - F_cur(x)`` is linear within each bucket; ``∫ |d|`` is summed
    exactly per bucket (splitting where ``d`` changes sign). Divided by ``scale``,
    default the reference's robust sigma (:func:`binned_scale`), so it is comparable
    with :func:`wasserstein_samples`. An approximation of the raw-sample distance:
    mass moved within a bucket is not seen, and mass moved beyond the outer edges
    counts as if it stopped one bucket width past them.
    """
    r, c = _counts(reference), _counts(current)
    bounds = bucket_bounds(edges)
    if bounds.size != r.shape[-1] + 1 or r.shape[-1] != c.shape[-1]:
        raise ValueError(f"{r.shape[-1]} buckets need {r.shape[-1] - 1} edges")
    if scale is None:
        if r.ndim != 1:
            raise ValueError("pass scale= (the reference's) for stacked reference counts")
        scale = binned_scale(r, edges)
    d = _cdf_at_bounds(r) - _cdf_at_bounds(c)
    a, b = np.abs(d[..., :-1]), np.abs(d[..., 1:])
    same_sign = d[..., :-1] * d[..., 1:] >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_width = np.where(same_sign, (a + b) / 2.0, (a * a + b * b) / (2.0 * (a + b)))
    per_width = np.where(a + b > 0, per_width, 0.0)
    out = np.sum(per_width * np.diff(bounds), axis=-1) / scale
    return np.asarray(np.where(_empty(r, c), np.nan, out), dtype=np.float64)


def bonferroni(pvalues: ArrayLike) -> FloatArray:
    """Bonferroni-adjusted p-values: ``min(1, p · m)`` for ``m`` tests."""
    p = np.asarray(pvalues, dtype=np.float64)
    return np.asarray(np.minimum(p * p.size, 1.0), dtype=np.float64)


def benjamini_hochberg(pvalues: ArrayLike) -> FloatArray:
    """Benjamini-Hochberg (FDR) adjusted p-values, in the input order.

    Sorted ascending, ``p_(i) · m / i``, made monotone from the largest down
    (running minimum) and capped at 1. Rejecting where the adjusted p-value is below
    ``alpha`` controls the false discovery rate at ``alpha`` (independent or positively
    dependent tests) — the same as ``statsmodels``' ``multipletests(method="fdr_bh")``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out
