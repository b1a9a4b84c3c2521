"""The drift engine: verdicts, guards, thresholds, corrections, calibration, batch vs live."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import get_args

import hypothesis.strategies as st
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings

from modelworks.api import driftmonitor as api
from modelworks.drift import stats
from modelworks.drift.engine import (
    DEFAULT_THRESHOLDS,
    METHODS,
    P_VALUE_METHODS,
    Calibration,
    DriftConfig,
    FeatureOverride,
    FeatureResult,
    Hysteresis,
    Method,
    WindowCounts,
    adjust_pvalues,
    calibrate_threshold,
    hysteresis,
    is_drift,
    score_arrays,
    score_counts,
)
from modelworks.drift.profile import (
    OTHER,
    FeatureProfile,
    Profile,
    bucket_categorical,
    bucket_counts,
    bucket_numeric,
    build_profile,
    category_counts,
    numeric_counts,
    profile_column,
)

N = 5000
RNG = np.random.default_rng(20260101)
REF = {
    "x": RNG.normal(size=N),
    "y": RNG.lognormal(size=N),
    "c": RNG.choice(["a", "b", "c", "d"], N, p=[0.4, 0.3, 0.2, 0.1]).astype(object),
}
SAME = {  # an independent sample of the same distributions
    "x": RNG.normal(size=N),
    "y": RNG.lognormal(size=N),
    "c": RNG.choice(["a", "b", "c", "d"], N, p=[0.4, 0.3, 0.2, 0.1]).astype(object),
}
SHIFTED = {
    "x": RNG.normal(1.0, size=N),
    "y": RNG.lognormal(0.7, size=N),
    "c": RNG.choice(["a", "b", "c", "d"], N, p=[0.1, 0.2, 0.3, 0.4]).astype(object),
}
TYPES = {"x": "numeric", "y": "numeric", "c": "categorical"}


def config(**kw: object) -> DriftConfig:
    return DriftConfig(**kw)  # type: ignore[arg-type]


def test_the_engine_speaks_the_api() -> None:
    assert get_args(api.Method) == METHODS
    assert set(api.P_VALUE_METHODS) == P_VALUE_METHODS
    description = api.DriftMonitorSpec.model_fields["threshold"].description or ""
    for method, value in DEFAULT_THRESHOLDS.items():
        assert f"{value:g}" in description and method.split("-")[0] in description
    defaults = api.DriftMonitorSpec.model_fields
    assert DriftConfig().method == defaults["method"].default
    assert DriftConfig().drift_share == defaults["drift_share"].default
    assert DriftConfig().min_samples == defaults["min_samples"].default
    assert DriftConfig().correction == defaults["correction"].default
    cal = api.Calibration.model_fields
    assert Calibration().samples == cal["samples"].default
    assert Calibration().quantile == cal["quantile"].default
    assert get_args(api.Verdict) == ("NoDrift", "Drift", "InsufficientData")


# --- verdicts -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_identical_data_does_not_drift(method: Method) -> None:
    result = score_arrays(REF, REF, config(method=method))
    assert result.verdict == "NoDrift"
    assert result.drifted_share == 0.0 and result.samples == N
    for f in result.features:
        assert f.drifted is False and f.score is not None and f.samples == N
        expected = 1.0 if method in P_VALUE_METHODS else 0.0
        assert f.score == pytest.approx(expected, abs=1e-7), f


@pytest.mark.parametrize("method", METHODS)
def test_a_fresh_sample_of_the_same_data_does_not_drift(method: Method) -> None:
    result = score_arrays(REF, SAME, config(method=method))
    assert result.verdict == "NoDrift", result
    assert result.drifted_features == ()


@pytest.mark.parametrize("method", METHODS)
def test_a_big_shift_drifts(method: Method) -> None:
    result = score_arrays(REF, SHIFTED, config(method=method))
    assert result.verdict == "Drift"
    assert result.drifted_features == ("x", "y", "c")
    assert result.drifted_share == 1.0


def test_drift_share_is_inclusive() -> None:
    current = {"x": SHIFTED["x"], "y": SAME["y"], "c": SAME["c"]}  # 1 of 3 drifts
    assert score_arrays(REF, current, config(drift_share=1 / 3)).verdict == "Drift"
    assert score_arrays(REF, current, config(drift_share=0.34)).verdict == "NoDrift"


@pytest.mark.parametrize(
    ("method", "score", "threshold", "drift"),
    [
        ("psi", 0.25, 0.2, True),
        ("psi", 0.2, 0.2, False),  # above, not at
        ("ks", 0.01, 0.05, True),
        ("ks", 0.05, 0.05, False),  # below, not at
        ("chi2", 0.9, 0.05, False),
        ("wasserstein", 0.0, 0.0, False),
    ],
)
def test_is_drift(method: Method, score: float, threshold: float, drift: bool) -> None:
    assert is_drift(method, score, threshold) is drift


# --- batch mode: exactness and agreement with live mode --------------------------------


def test_batch_ks_and_wasserstein_are_exact_on_raw_values() -> None:
    ks = score_arrays(REF, SHIFTED, config(method="ks")).feature("x")
    assert ks is not None and not ks.approximate
    assert ks.score == pytest.approx(scipy.stats.ks_2samp(REF["x"], SHIFTED["x"]).pvalue)
    w = score_arrays(REF, SHIFTED, config(method="wasserstein")).feature("y")
    assert w is not None and not w.approximate
    scale = stats.robust_scale(np.sort(REF["y"]))
    expected = scipy.stats.wasserstein_distance(REF["y"], SHIFTED["y"]) / scale
    assert w.score == pytest.approx(expected)


@pytest.mark.parametrize("rows", [300, 30_000])
@pytest.mark.parametrize("method", ["ks", "wasserstein"])
def test_integer_valued_columns_are_counted_exactly(rows: int, method: Method) -> None:
    rng = np.random.default_rng(rows)
    ref = rng.poisson(30, rows).astype(float)
    cur = rng.poisson(31, rows).astype(float)
    ref[::50] = np.nan
    fractional = cur + 0.5  # not integers: sorted instead
    for current in (cur, fractional):
        f = score_arrays({"x": ref}, {"x": current}, config(method=method)).features[0]
        r, c = ref[~np.isnan(ref)], current[~np.isnan(current)]
        assert f.missing == 0 and f.samples == rows and not f.approximate
        if method == "ks":
            assert f.score == pytest.approx(scipy.stats.ks_2samp(r, c).pvalue, rel=1e-9)
            assert ("(counted)" in f.note) is (current is cur)
        else:
            scale = stats.robust_scale(np.sort(r))
            expected = scipy.stats.wasserstein_distance(r, c) / scale
            assert f.score == pytest.approx(expected, rel=1e-9)


def test_small_batch_ks_uses_the_exact_p_value() -> None:
    ref, cur = {"x": REF["x"][:300]}, {"x": SHIFTED["x"][:200]}
    f = score_arrays(ref, cur, config(method="ks")).feature("x")
    assert f is not None and "exact p-value" in f.note
    assert f.score == pytest.approx(scipy.stats.ks_2samp(ref["x"], cur["x"]).pvalue)


@pytest.mark.parametrize("method", METHODS)
def test_live_counts_score_like_batch_against_a_profile(method: Method) -> None:
    profile = build_profile(REF, types=TYPES)  # type: ignore[arg-type]
    batch = score_arrays(profile, SHIFTED, config(method=method))
    windows = {}
    for f in profile.features:
        counts, missing = bucket_counts(f, SHIFTED[f.name])
        windows[f.name] = WindowCounts(counts, missing)
    live = score_counts(profile, windows, config(method=method))
    assert live == batch
    numeric = live.feature("x")
    assert numeric is not None
    assert numeric.approximate is (method in ("ks", "wasserstein"))
    if numeric.approximate:
        assert "from buckets" in numeric.note


def test_bucket_statistics_are_the_same_from_a_raw_reference_or_its_profile() -> None:
    profile = build_profile(REF, types=TYPES)  # type: ignore[arg-type]
    for method in ("psi", "jensen-shannon", "chi2"):
        raw = score_arrays(REF, SHIFTED, config(method=method))
        prof = score_arrays(profile, SHIFTED, config(method=method))
        assert raw == prof


@pytest.mark.parametrize(
    ("values", "ftype"),
    [
        (RNG.normal(size=3000), "numeric"),
        (np.where(RNG.random(3000) < 0.1, np.nan, RNG.normal(size=3000)), "numeric"),
        (RNG.integers(0, 3, 3000), "categorical"),
        (RNG.choice(["a", "b", "c"], 3000), "categorical"),
        (np.array(["a", None, "b", float("nan"), 3, "a"] * 20, dtype=object), "categorical"),
        (np.array([1.0, np.nan, 2.0, 2.0] * 30), "categorical"),
        (np.array([f"v{i}" for i in RNG.zipf(1.5, 3000) % 200], dtype=object), "categorical"),
    ],
)
def test_profile_column_is_build_profile_vectorised(values: np.ndarray, ftype: str) -> None:
    expected = build_profile({"v": values}, max_categories=50).features[0]
    assert expected.type == ftype
    assert profile_column("v", values, max_categories=50) == expected
    if ftype == "categorical":
        seen, missing = category_counts(values)
        counts, missing_expected = bucket_categorical(values, expected.categories)
        assert missing == missing_expected == expected.missing
        assert sum(seen.values()) == sum(counts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60),
    st.lists(st.floats(-1e6, 1e6), max_size=40, unique=True),
)
def test_numeric_counts_are_bucket_numeric(values: list[float], edges: list[float]) -> None:
    e = sorted(edges)
    counts, missing = numeric_counts(np.array(values, dtype=float), e)
    assert (tuple(counts.tolist()), missing) == bucket_numeric(np.array(values, dtype=float), e)


# --- missing values, unseen categories, guards -----------------------------------------


def test_missing_values_are_counted_apart_not_scored() -> None:
    with_nan = SHIFTED["x"].copy()
    with_nan[::2] = np.nan
    objects = SAME["c"].copy()
    objects[::2] = None
    current = {"x": with_nan, "c": objects}
    reference = {"x": REF["x"], "c": REF["c"]}
    for method in METHODS:
        result = score_arrays(reference, current, config(method=method))
        alone = score_arrays(
            reference, {"x": with_nan[1::2], "c": objects[1::2]}, config(method=method)
        )
        for name in ("x", "c"):
            f, g = result.feature(name), alone.feature(name)
            assert f is not None and g is not None
            assert f.missing == N // 2 and f.samples == N // 2 and g.missing == 0
            assert f.score == pytest.approx(g.score)
        assert result.samples == N


def test_unseen_categories_count_as_other() -> None:
    reference = {"c": np.array(["a", "b"] * 500, dtype=object)}
    current = {"c": np.array(["a", "b", "z", "new"] * 250, dtype=object)}
    profile = profile_column("c", reference["c"])
    assert profile.categories == ("a", "b") and profile.counts == (500, 500, 0)
    for method in ("psi", "jensen-shannon", "chi2"):
        f = score_arrays(reference, current, config(method=method)).feature("c")
        assert f is not None and f.drifted is True
    counts, _ = bucket_counts(profile, current["c"])
    assert counts == (250, 250, 500)
    live = score_counts([profile], {"c": counts}, config(method="jensen-shannon"))
    assert live.features[0].score == pytest.approx(float(stats.jensen_shannon([1, 1, 0], counts)))
    assert OTHER == "__other__"


def test_a_single_category_does_not_drift() -> None:
    ref, cur = {"c": np.array(["a"] * 500)}, {"c": np.array(["a"] * 300)}
    for method in METHODS:
        f = score_arrays(ref, cur, config(method=method)).features[0]
        assert f.drifted is False, (method, f)


def test_too_few_samples_is_insufficient_data() -> None:
    current = {"x": SHIFTED["x"][:99], "y": SHIFTED["y"][:99], "c": SHIFTED["c"][:99]}
    result = score_arrays(REF, current, config(min_samples=100))
    assert result.verdict == "InsufficientData" and result.drifted_share is None
    for f in result.features:
        assert f.score is None and f.drifted is None and f.verdict == "InsufficientData"
        assert "minSamples" in f.note and f.samples == 99
    mixed = score_arrays(REF, {**current, "x": SHIFTED["x"]}, config(min_samples=100))
    assert mixed.verdict == "Drift" and mixed.drifted_share == 1.0  # of the one scored
    assert [f.verdict for f in mixed.features] == ["Drift", "InsufficientData", "InsufficientData"]


def test_all_zero_current_counts_and_bad_windows_are_not_scored() -> None:
    profile = build_profile(REF, types=TYPES)  # type: ignore[arg-type]
    x = profile.features[0]
    windows: dict[str, WindowCounts | tuple[int, ...]] = {
        "x": (0,) * len(x.counts),
        "y": (1, 2),  # another profile's buckets
        "c": WindowCounts((10, -3, 0, 0, 0), missing=0),  # a counter reset
    }
    result = score_counts(profile, windows, config(min_samples=1))
    assert result.verdict == "InsufficientData"
    notes = [f.note for f in result.features]
    assert "0 samples" in notes[0]
    assert "2 buckets, the reference has" in notes[1]
    assert "negative" in notes[2]
    missing = score_counts(profile, {}, config()).features
    assert all(f.note == "no current counts" for f in missing)
    gone = score_arrays(REF, {"x": SAME["x"]}, config()).feature("c")
    assert gone is not None and gone.note == "not in the current data" and gone.method == "psi"


def test_an_empty_reference_is_not_scored() -> None:
    empty = FeatureProfile("x", "numeric", (0, 0, 0), edges=(0.0, 1.0))
    f = score_counts([empty], {"x": (100, 100, 100)}, config()).features[0]
    assert f.score is None and "reference has no values" in f.note


def test_infinities_are_values_for_ks_and_left_out_of_wasserstein() -> None:
    cur = SAME["x"].copy()
    cur[:10] = np.inf
    ks = score_arrays({"x": REF["x"]}, {"x": cur}, config(method="ks")).features[0]
    assert ks.score == pytest.approx(scipy.stats.ks_2samp(REF["x"], cur).pvalue)
    w = score_arrays({"x": REF["x"]}, {"x": cur}, config(method="wasserstein")).features[0]
    assert w.score is not None and math.isfinite(w.score) and "10 infinite" in w.note


def test_disabled_features_are_left_out() -> None:
    cfg = config(features={"y": FeatureOverride(enabled=False)})
    assert [f.name for f in score_arrays(REF, SAME, cfg).features] == ["x", "c"]


# --- methods and thresholds ------------------------------------------------------------


def test_categorical_features_fall_back_from_ordered_methods() -> None:
    ks = score_arrays(REF, SHIFTED, config(method="ks")).feature("c")
    w = score_arrays(REF, SHIFTED, config(method="wasserstein")).feature("c")
    assert ks is not None and ks.method == "chi2" and "ks needs ordered values" in ks.note
    assert w is not None and w.method == "jensen-shannon" and w.threshold == 0.1


def test_threshold_precedence() -> None:
    cfg = config(
        method="psi",
        threshold=0.3,
        features={
            "x": FeatureOverride(threshold=0.7),  # explicit wins
            "y": FeatureOverride(method="ks"),  # another kind: its own default, not 0.3
            "c": FeatureOverride(method="jensen-shannon"),  # same kind: the monitor's 0.3
        },
    )
    result = score_arrays(REF, SAME, cfg)
    assert [f.threshold for f in result.features] == [0.7, 0.05, 0.3]
    assert [f.method for f in result.features] == ["psi", "ks", "jensen-shannon"]
    calibrated = score_arrays(REF, SAME, replace(cfg, calibration=Calibration(samples=50)))
    x, y, c = calibrated.features
    assert x.threshold == 0.7  # explicit still wins over calibration
    assert y.threshold != 0.05 and c.threshold != 0.3
    assert "bootstrap" in y.note and "bootstrap" in c.note and "bootstrap" not in x.note
    default = score_arrays(REF, SAME, config(method="chi2")).features
    assert [f.threshold for f in default] == [0.05, 0.05, 0.05]


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_multiple_testing_correction(correction: str) -> None:
    current = {"x": REF["x"] + 0.06, "y": SAME["y"], "c": SAME["c"]}
    cfg = config(method="ks", features={"c": FeatureOverride(method="psi")})
    raw = score_arrays(REF, current, cfg)
    adjusted = score_arrays(REF, current, replace(cfg, correction=correction))
    p = [f.score for f in raw.features[:2]]  # the two p-value features; c is a distance
    assert all(v is not None for v in p)
    expected = adjust_pvalues([float(v) for v in p if v is not None], correction)  # type: ignore[arg-type]
    fn = stats.bonferroni if correction == "bonferroni" else stats.benjamini_hochberg
    assert expected == pytest.approx(fn(p).tolist())
    for f, want in zip(adjusted.features[:2], expected, strict=True):
        assert f.score == pytest.approx(want)
        assert f.drifted == (want < 0.05)
        assert f"{correction}-adjusted over 2 tests" in f.note
    assert adjusted.features[2] == raw.features[2]  # distances are not corrected
    assert adjust_pvalues([0.2], "none") == [0.2]


def test_bonferroni_turns_a_marginal_p_value_into_no_drift() -> None:
    ref = FeatureProfile("a", "categorical", (5000, 5000, 0), categories=("u", "v"))
    marginal = next(
        (k, 1000 - k, 0)
        for k in range(500, 600)
        if 0.02 < float(stats.chi2_homogeneity(ref.counts, (k, 1000 - k, 0))[1]) < 0.05
    )
    profiles = [ref, replace(ref, name="b"), replace(ref, name="c")]
    windows = {"a": marginal, "b": (500, 500, 0), "c": (500, 500, 0)}
    plain = score_counts(profiles, windows, config(method="chi2")).features[0]
    corrected = score_counts(
        profiles, windows, config(method="chi2", correction="bonferroni")
    ).features[0]
    assert plain.drifted is True and corrected.drifted is False
    assert plain.score is not None and corrected.score == pytest.approx(3 * plain.score)


# --- calibration -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_calibration_keeps_large_identical_samples_quiet(method: Method) -> None:
    # 20 windows of 1M rows, all from the reference's own distribution.
    rng = np.random.default_rng(99)
    p = np.array([0.02, 0.08, 0.1, 0.15, 0.15, 0.2, 0.1, 0.1, 0.06, 0.03, 0.01])
    edges = tuple(float(e) for e in np.linspace(-2, 2, 10))
    ref = FeatureProfile("x", "numeric", tuple(rng.multinomial(1_000_000, p).tolist()), edges)
    cfg = config(method=method, calibration=Calibration(samples=200, quantile=0.99, seed=1))
    flagged = 0
    for _ in range(20):
        window = tuple(rng.multinomial(1_000_000, p).tolist())
        flagged += bool(score_counts([ref], {"x": window}, cfg).features[0].drifted)
    assert flagged <= 1
    shifted = tuple(rng.multinomial(1_000_000, np.roll(p, 1)).tolist())
    assert score_counts([ref], {"x": shifted}, cfg).features[0].drifted is True


def test_calibrated_threshold_is_deterministic_and_shrinks_with_the_window() -> None:
    ref = profile_column("x", REF["x"])
    cal = Calibration(samples=200, quantile=0.95, seed=3)
    small = calibrate_threshold(ref, 500, "psi", cal)
    large = calibrate_threshold(ref, 50_000, "psi", cal)
    assert small == calibrate_threshold(ref, 500, "psi", cal)
    assert small != calibrate_threshold(ref, 500, "psi", replace(cal, seed=4))
    assert 0 < large < small
    p_threshold = calibrate_threshold(ref, 5_000, "chi2", cal)
    assert 0.005 < p_threshold < 0.2  # p-values are ~uniform under no drift: ~1 - 0.95
    assert math.isnan(calibrate_threshold(ref, 0, "psi", cal))


def test_calibration_scores_ks_and_wasserstein_from_buckets() -> None:
    cfg = config(method="wasserstein", calibration=Calibration(samples=50))
    f = score_arrays(REF, SHIFTED, cfg).feature("x")
    assert f is not None and f.approximate and f.drifted is True
    assert "bootstrap" in f.note and "from buckets" in f.note


def test_calibration_is_vectorised_over_samples_and_features() -> None:
    # 20 features x 200 resamples: one multinomial draw per side and feature.
    rng = np.random.default_rng(0)
    profiles = [
        FeatureProfile(
            f"f{i}",
            "numeric",
            tuple(rng.integers(1, 10_000, 11).tolist()),
            tuple(float(e) for e in range(10)),
        )
        for i in range(20)
    ]
    windows = {p.name: tuple(rng.integers(1, 1000, 11).tolist()) for p in profiles}
    for method in METHODS:
        result = score_counts(profiles, windows, config(method=method, calibration=Calibration()))
        assert all(f.threshold is not None and f.score is not None for f in result.features)


# --- properties ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(METHODS),
    st.lists(st.integers(0, 500), min_size=4, max_size=4),
    st.lists(st.integers(0, 500), min_size=4, max_size=4),
    st.integers(0, 50),
)
def test_results_are_consistent(
    method: Method, ref: list[int], cur: list[int], missing: int
) -> None:
    profile = FeatureProfile("x", "numeric", tuple(ref), edges=(0.0, 1.0, 2.0))
    result = score_counts(
        [profile], {"x": WindowCounts(tuple(cur), missing)}, config(method=method, min_samples=10)
    )
    f: FeatureResult = result.features[0]
    assert f.samples == sum(cur) and f.missing == missing
    if sum(cur) < 10 or sum(ref) == 0:
        assert f.score is None and result.verdict == "InsufficientData"
        return
    assert f.score is not None and f.threshold is not None
    assert f.drifted == is_drift(method, f.score, f.threshold)
    assert result.verdict == ("Drift" if f.drifted else "NoDrift")
    if method in P_VALUE_METHODS or method == "jensen-shannon":
        assert 0.0 <= f.score <= 1.0
    assert f.score >= 0.0


# --- hysteresis ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "drift", "windows", "expected"),
    [
        (0, True, 1, Hysteresis(1, True)),
        (0, True, 3, Hysteresis(1, False)),
        (1, True, 3, Hysteresis(2, False)),
        (2, True, 3, Hysteresis(3, True)),
        (5, True, 3, Hysteresis(6, True)),  # stays declared while it lasts
        (5, False, 3, Hysteresis(0, False)),  # one clean window resets
        (2, None, 3, Hysteresis(2, False)),  # no data: neither advances nor resets
        (3, None, 3, Hysteresis(3, False)),  # ... and declares nothing by itself
        (-1, True, 1, Hysteresis(1, True)),
    ],
)
def test_hysteresis(previous: int, drift: bool | None, windows: int, expected: Hysteresis) -> None:
    assert hysteresis(previous, drift, windows) == expected


def test_hysteresis_over_a_sequence() -> None:
    count, declared = 0, []
    for drift in [True, True, None, True, False, True, True, True]:
        count, now = hysteresis(count, drift, 3)
        declared.append(now)
    assert declared == [False, False, False, True, False, False, False, True]
    with pytest.raises(ValueError, match="windows"):
        hysteresis(0, True, 0)


def test_profile_type_from_profile_round_trip() -> None:
    profile = Profile.from_json(build_profile(REF, types=TYPES).to_json())  # type: ignore[arg-type]
    assert score_arrays(profile, SHIFTED, config()).drifted_features == ("x", "y", "c")
