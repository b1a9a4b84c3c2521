"""Drift statistics: hand-computed cases, edge cases, and properties checked against scipy."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from scipy.spatial.distance import jensenshannon

from modelworks.drift import stats
from modelworks.drift.profile import bucket_numeric

FAST = settings(max_examples=60, deadline=None)
# scipy's own ks_2samp, the reference here, warns when its exact p-value falls back.
pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp:RuntimeWarning")

counts_pair = st.integers(min_value=1, max_value=12).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 1000), min_size=k, max_size=k),
        st.lists(st.integers(0, 1000), min_size=k, max_size=k),
    )
)
samples = st.lists(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32), min_size=1, max_size=80
)


def _psi_direct(r: list[int], c: list[int], eps: float = stats.PSI_EPSILON) -> float:
    p = [max(x / sum(r), eps) for x in r]
    q = [max(x / sum(c), eps) for x in c]
    return sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))


# --- PSI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cur", "expected"),
    [
        ([50, 50], [50, 50], 0.0),
        ([10, 20, 30], [1, 2, 3], 0.0),  # proportions, not counts
        ([50, 50], [90, 10], 0.4 * math.log(0.9 / 0.5) + 0.4 * math.log(0.5 / 0.1)),
        # an empty bucket: proportions floored at epsilon, large but finite
        ([100, 0], [50, 50], _psi_direct([100, 0], [50, 50])),
        ([0, 100], [100, 0], _psi_direct([0, 100], [100, 0])),
    ],
)
def test_psi_table(ref: list[int], cur: list[int], expected: float) -> None:
    assert float(stats.psi(ref, cur)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@FAST
@given(counts_pair)
def test_psi_matches_its_definition_and_is_symmetric(pair: tuple[list[int], list[int]]) -> None:
    r, c = pair
    assume(sum(r) > 0 and sum(c) > 0)
    value = float(stats.psi(r, c))
    assert value == pytest.approx(_psi_direct(r, c), rel=1e-9, abs=1e-12)
    assert value == pytest.approx(float(stats.psi(c, r)), rel=1e-9, abs=1e-12)
    assert value >= 0


# --- Jensen-Shannon -------------------------------------------------------------------


@FAST
@given(counts_pair)
def test_jensen_shannon_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    r, c = pair
    assume(sum(r) > 0 and sum(c) > 0)
    value = float(stats.jensen_shannon(r, c))
    assert value == pytest.approx(float(jensenshannon(r, c, base=2)), abs=1e-7)
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize(
    ("ref", "cur", "expected"),
    [([1, 2, 3], [2, 4, 6], 0.0), ([5, 0], [0, 5], 1.0), ([7], [3], 0.0)],
)
def test_jensen_shannon_bounds(ref: list[int], cur: list[int], expected: float) -> None:
    assert float(stats.jensen_shannon(ref, cur)) == pytest.approx(expected, abs=1e-12)


# --- chi-square -----------------------------------------------------------------------


@FAST
@given(counts_pair)
def test_chi2_matches_scipy_contingency(pair: tuple[list[int], list[int]]) -> None:
    r, c = pair
    assume(sum(r) > 0 and sum(c) > 0)
    keep = [i for i in range(len(r)) if r[i] + c[i] > 0]
    stat, p = stats.chi2_homogeneity(r, c)
    if len(keep) < 2:
        assert float(p) == 1.0
        return
    table = np.array([[r[i] for i in keep], [c[i] for i in keep]])
    expected = scipy.stats.chi2_contingency(table, correction=False)
    assert float(stat) == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
    assert float(p) == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


def test_chi2_close_to_goodness_of_fit_for_a_large_reference() -> None:
    # With a reference much larger than the window, homogeneity ~ chisquare(f_obs, f_exp).
    ref = np.array([400_000, 300_000, 200_000, 100_000])
    cur = np.array([420, 290, 190, 100])
    _, p = stats.chi2_homogeneity(ref, cur)
    expected = scipy.stats.chisquare(cur, ref / ref.sum() * cur.sum()).pvalue
    assert float(p) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(
    ("ref", "cur", "p"),
    [
        ([100, 0, 0], [50, 0, 0], 1.0),  # a single category: nothing to test
        ([100, 100], [100, 100], 1.0),
        ([100, 0, 100], [100, 0, 100], 1.0),  # a bucket empty on both sides is skipped
    ],
)
def test_chi2_degenerate_tables(ref: list[int], cur: list[int], p: float) -> None:
    assert float(stats.chi2_homogeneity(ref, cur)[1]) == pytest.approx(p)


def test_chi2_empty_reference_bucket_is_evidence_not_a_crash() -> None:
    _, p = stats.chi2_homogeneity([500, 500, 0], [400, 400, 200])
    assert 0.0 <= float(p) < 1e-10


# --- KS -------------------------------------------------------------------------------


@FAST
@given(samples, samples)
def test_ks_samples_matches_scipy(u: list[float], v: list[float]) -> None:
    d, p = stats.ks_samples(u, v)
    expected = scipy.stats.ks_2samp(u, v)
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-12)


@FAST
@given(
    st.lists(st.integers(-8, 8) | st.floats(-8, 8), min_size=1, max_size=120),
    st.lists(st.integers(-8, 8) | st.floats(-8, 8), min_size=1, max_size=120),
)
def test_sorted_ks_and_wasserstein_match_scipy(u: list[float], v: list[float]) -> None:
    a, b = np.sort(np.array(u, dtype=float)), np.sort(np.array(v, dtype=float))
    d, w = stats.ks_wasserstein_sorted(a, b)
    expected = scipy.stats.ks_2samp(a, b).statistic
    assert stats.ks_statistic_sorted(a, b) == pytest.approx(expected, abs=1e-12)
    assert stats.ks_statistic_sorted(b, a) == pytest.approx(expected, abs=1e-12)
    assert d == pytest.approx(expected, abs=1e-12)
    assert w == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("shift", "ties"), [(0.0, False), (0.05, False), (0.0, True), (0.3, True)])
def test_ks_samples_matches_scipy_on_large_samples(shift: float, ties: bool) -> None:
    rng = np.random.default_rng(7)
    u, v = rng.normal(size=30_000), rng.normal(shift, size=20_000)
    if ties:
        u, v = np.round(u, 1), np.round(v, 1)
    d, p = stats.ks_samples(u, v)
    expected = scipy.stats.ks_2samp(u, v)
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


@FAST
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=200),
    st.lists(st.integers(-5, 5), min_size=1, max_size=200),
)
def test_ks_binned_is_exact_when_values_sit_on_the_edges(u: list[int], v: list[int]) -> None:
    edges = list(range(-5, 5))  # every value is an edge or beyond the last one
    r, _ = bucket_numeric(np.array(u, dtype=float), edges)
    c, _ = bucket_numeric(np.array(v, dtype=float), edges)
    d, _ = stats.ks_binned(r, c)
    assert float(d) == pytest.approx(scipy.stats.ks_2samp(u, v).statistic, abs=1e-12)


@FAST
@given(samples, samples, st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8, unique=True))
def test_ks_binned_is_a_lower_bound(u: list[float], v: list[float], edges: list[float]) -> None:
    e = sorted(edges)
    r, _ = bucket_numeric(np.array(u), e)
    c, _ = bucket_numeric(np.array(v), e)
    d, p = stats.ks_binned(r, c)
    exact = scipy.stats.ks_2samp(u, v).statistic
    assert float(d) <= exact + 1e-12
    assert 0.0 <= float(p) <= 1.0


def test_ks_binned_p_value_is_the_asymptotic_one() -> None:
    r, c = np.array([300, 400, 300]), np.array([200, 400, 400])
    d, p = stats.ks_binned(r, c)
    assert float(d) == pytest.approx(0.1)
    assert float(p) == pytest.approx(scipy.stats.kstwo.sf(0.1, 500))


# --- Wasserstein ----------------------------------------------------------------------


@FAST
@given(samples, samples)
def test_wasserstein_samples_matches_scipy(u: list[float], v: list[float]) -> None:
    scale = stats.robust_scale(np.sort(np.array(u)))
    expected = scipy.stats.wasserstein_distance(u, v) / scale
    assert stats.wasserstein_samples(u, v) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    st.floats(-3, 3),
    st.floats(0.3, 3),
    st.floats(-50, 50),
    st.floats(0.01, 100),
    st.integers(0, 2**32 - 1),
)
def test_wasserstein_binned_is_close_to_the_raw_distance(
    shift: float, spread: float, loc: float, unit: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    u = loc + unit * rng.normal(size=3000)
    v = loc + unit * (shift + spread * rng.normal(size=2000))
    lo, hi = min(u.min(), v.min()), max(u.max(), v.max())
    edges = np.linspace(lo, hi, 300)
    width = edges[1] - edges[0]
    r, _ = bucket_numeric(u, edges)
    c, _ = bucket_numeric(v, edges)
    binned = float(stats.wasserstein_binned(r, c, edges, scale=1.0))
    raw = scipy.stats.wasserstein_distance(u, v)
    # Uniform-within-bucket CDFs are off by at most one bucket width per side.
    assert binned == pytest.approx(raw, abs=3 * width)
    # ... and the normalised distance does not depend on the unit.
    normalised = float(stats.wasserstein_binned(r, c, edges))
    assert normalised == pytest.approx(raw / stats.binned_scale(r, edges), abs=3 * width)


def test_wasserstein_binned_is_unit_free_and_matches_a_normal_shift() -> None:
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=200_000), rng.normal(0.5, size=200_000)
    edges = np.quantile(u, np.linspace(0, 1, 11)[1:-1])
    r, _ = bucket_numeric(u, edges)
    c, _ = bucket_numeric(v, edges)
    w = float(stats.wasserstein_binned(r, c, edges))
    w_scaled = float(stats.wasserstein_binned(r, c, edges * 1000.0 + 7.0))
    assert w == pytest.approx(w_scaled, rel=1e-9)
    # Deciles see most of a half-sigma shift (the tails are only one bucket wide).
    assert 0.35 < w < 0.55
    assert stats.wasserstein_samples(u, v) == pytest.approx(0.5, abs=0.02)


@FAST
@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=300),
    st.lists(st.integers(-20, 20), min_size=1, max_size=300),
)
def test_counted_integer_samples_match_scipy(u: list[int], v: list[int]) -> None:
    values = np.arange(-20, 21, dtype=float)
    r = np.bincount(np.array(u) + 20, minlength=41)
    c = np.bincount(np.array(v) + 20, minlength=41)
    d, w = stats.ks_wasserstein_counts(r, c, values)
    assert d == pytest.approx(scipy.stats.ks_2samp(u, v).statistic, abs=1e-12)
    assert w == pytest.approx(scipy.stats.wasserstein_distance(u, v), abs=1e-9)
    expanded = np.sort(np.array(u, dtype=float))
    assert stats.robust_scale_counts(r, values) == pytest.approx(stats.robust_scale(expanded))


@pytest.mark.parametrize(
    ("edges", "bounds"),
    [
        ([], [0.0, 1.0]),
        ([2.0], [1.0, 2.0, 3.0]),
        ([0.0, 1.0, 3.0], [-1.0, 0.0, 1.0, 3.0, 5.0]),
    ],
)
def test_bucket_bounds_close_the_open_ends(edges: list[float], bounds: list[float]) -> None:
    assert stats.bucket_bounds(edges).tolist() == bounds


def test_binned_quantile_interpolates_within_buckets() -> None:
    edges = [0.0, 1.0, 2.0]  # bounds -1, 0, 1, 2, 3
    counts = [0, 50, 50, 0]
    assert stats.binned_quantile(counts, edges, 0.25) == pytest.approx(0.5)
    assert stats.binned_quantile(counts, edges, 0.5) == pytest.approx(1.0)
    assert stats.binned_quantile(counts, edges, 0.75) == pytest.approx(1.5)
    assert stats.binned_scale(counts, edges) == pytest.approx(1.0 / stats.IQR_TO_SIGMA)
    assert math.isnan(stats.binned_quantile([0, 0, 0, 0], edges, 0.5))


def test_robust_scale() -> None:
    rng = np.random.default_rng(0)
    assert stats.robust_scale(np.sort(rng.normal(0, 3, 100_000))) == pytest.approx(3, rel=0.02)
    assert stats.robust_scale(np.zeros(10)) == 1.0  # constant: unnormalised
    tied = np.sort(np.array([0.0] * 90 + [1.0] * 10))  # IQR 0: standard deviation
    assert stats.robust_scale(tied) == pytest.approx(float(np.std(tied)))
    assert stats.robust_scale(np.array([])) == 1.0


# --- shared edge cases and vectorisation ----------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        stats.psi,
        stats.jensen_shannon,
        lambda r, c: stats.chi2_homogeneity(r, c)[1],
        lambda r, c: stats.ks_binned(r, c)[1],
        lambda r, c: stats.wasserstein_binned(r, c, [1.0, 2.0], scale=1.0),
    ],
    ids=["psi", "js", "chi2", "ks", "wasserstein"],
)
def test_a_side_without_counts_gives_nan(fn: Callable[[list[int], list[int]], Any]) -> None:
    assert math.isnan(float(fn([10, 20, 30], [0, 0, 0])))
    assert math.isnan(float(fn([0, 0, 0], [10, 20, 30])))


def test_identical_distributions_score_no_drift() -> None:
    r = np.array([5, 10, 20, 40, 25])
    c = 3 * r
    assert float(stats.psi(r, c)) == pytest.approx(0.0, abs=1e-12)
    assert float(stats.jensen_shannon(r, c)) == pytest.approx(0.0, abs=1e-7)
    assert float(stats.chi2_homogeneity(r, c)[1]) == pytest.approx(1.0)
    assert float(stats.ks_binned(r, c)[1]) == pytest.approx(1.0)
    assert float(stats.wasserstein_binned(r, c, [1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.0)


def test_every_statistic_scores_a_stack_like_its_rows() -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 100, size=(7, 6)).astype(float)
    cur = rng.integers(0, 100, size=(7, 6)).astype(float)
    edges = [0.0, 1.0, 2.5, 3.0, 10.0]
    fns = {
        "psi": stats.psi,
        "js": stats.jensen_shannon,
        "chi2": lambda r, c: stats.chi2_homogeneity(r, c)[1],
        "ks": lambda r, c: stats.ks_binned(r, c)[1],
        "w": lambda r, c: stats.wasserstein_binned(r, c, edges, scale=2.0),
    }
    for name, fn in fns.items():
        stacked = fn(ref, cur)
        rows = [float(fn(ref[i], cur[i])) for i in range(7)]
        assert stacked.shape == (7,), name
        assert stacked.tolist() == pytest.approx(rows, rel=1e-9), name


# --- multiple testing -----------------------------------------------------------------


def test_bonferroni_and_bh_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.bonferroni(p).tolist() == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4/rank: 0.02, 0.02, 0.04, 0.04 (already monotone)
    assert stats.benjamini_hochberg(p).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # monotone from the top: 0.03*3/2 = 0.045 is lowered to the next rank's 0.04
    assert stats.benjamini_hochberg([0.01, 0.03, 0.03, 0.04]).tolist() == pytest.approx(
        [0.04, 0.04, 0.04, 0.04]
    )
    assert stats.bonferroni([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert stats.benjamini_hochberg([]).tolist() == []


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.floats(0.001, 0.5))
def test_bh_rejects_the_step_up_set(p: list[float], alpha: float) -> None:
    m = len(p)
    ranked = sorted(p)
    k = max((i for i in range(1, m + 1) if ranked[i - 1] <= i * alpha / m), default=0)
    cutoff = ranked[k - 1] if k else -1.0
    adjusted = stats.benjamini_hochberg(p)
    for raw, adj in zip(p, adjusted, strict=True):
        assert adj >= raw - 1e-15
        # Step-up set, up to float rounding right at the boundary.
        if abs(adj - alpha) > 1e-12:
            assert (adj <= alpha) == (raw <= cutoff)
