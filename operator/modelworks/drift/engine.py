"""The drift engine: score a set of features against their reference. Pure (numpy, scipy).

Two ways in, one way out:

- **Live** (:func:`score_counts`): the reference profile and, per feature, the bucket
  counts of the current window — the increase of the model server's
  ``modelworks_feature_bucket_total`` counters over the window (not cumulative, in
  the profile's bucket order) and of ``modelworks_feature_missing_total``. No raw
  value is needed; KS and Wasserstein are then approximations and say so
  (``approximate=True`` and a note).
- **Batch** (:func:`score_arrays`): raw columns (numpy arrays) of the current data
  and either raw reference columns or a reference profile. With raw columns on both
  sides KS and Wasserstein are computed exactly on the values; PSI,
  Jensen-Shannon and chi-square always work on buckets (the reference's deciles for
  numeric features, its categories plus ``__other__`` for categorical ones), exactly
  as in live mode.

Out comes a :class:`DatasetResult`: a verdict, the share of drifted features and one
:class:`FeatureResult` per feature (score, threshold, drifted, samples, missing,
approximate, note). :func:`hysteresis` turns window verdicts into declared drift.

Rules, in the order they apply:

1. **Missing values** (NaN/None) are counted apart (``missing``) and are not part of
   any distribution: a feature that goes missing more often is a data-quality
   problem, not a distribution shift. Categories unseen in the reference count as
   ``__other__``.
2. **Minimum samples**: a feature with fewer than ``min_samples`` present values in
   the current data gets no score (``score=None``, ``drifted=None``, verdict
   ``InsufficientData``); the dataset is ``InsufficientData`` when no feature has a
   score.
3. **Method per feature**: the feature's override, else the monitor's method. What each
   method is and does comes from its entry in
   :data:`~modelworks.drift.statistics.STATISTICS`. KS and Wasserstein need ordered
   values; on a categorical feature they fall back to their nearest kin, chi-square (a
   test) and Jensen-Shannon (a distance), with a note.
4. **Threshold per feature**: the feature's explicit threshold; else a calibrated one
   (:func:`calibrate_threshold`) when calibration is on; else the monitor's
   threshold if the method is of the same kind (p-value or distance) as the
   monitor's; else the method's default threshold.
5. **Decision**: a distance drifts when its score is above the threshold, a test
   when its p-value is below it. For p-value methods the correction (Bonferroni or
   Benjamini-Hochberg FDR over the features tested with a p-value) is applied first
   and the reported score is the adjusted p-value (the raw one is in the note).
6. **Dataset**: ``Drift`` when ``drifted / scored >= drift_share``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modelworks.drift import stats
from modelworks.drift.profile import (
    FeatureProfile,
    FeatureType,
    Profile,
    as_float,
    count_values,
    infer_type,
    profile_column,
)
from modelworks.drift.statistics import METHODS as METHODS
from modelworks.drift.statistics import STATISTICS, Method, Sample

Correction = Literal["none", "bonferroni", "fdr"]
Verdict = Literal["NoDrift", "Drift", "InsufficientData"]

P_VALUE_METHODS: frozenset[Method] = frozenset(m for m, s in STATISTICS.items() if s.p_value)
DEFAULT_THRESHOLDS: Mapping[Method, float] = MappingProxyType(
    {m: s.default_threshold for m, s in STATISTICS.items()}
)

MAX_CELLS = 4_000_000  # default calibration budget (MODELWORKS_CALIBRATION_MAX_CELLS)
MIN_RESAMPLES = 20

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """Thresholds from the reference's own sampling noise (NannyML-style), per feature.

    See :func:`calibrate_threshold`. ``seed`` makes it deterministic.
    """

    samples: int = 200
    quantile: float = 0.99
    seed: int = 0
    max_cells: int = MAX_CELLS  # resamples x buckets, all features of one check together


def resamples(calibration: Calibration, buckets: int) -> int:
    """How many resamples fit the budget for a feature of ``buckets`` buckets (at most the
    asked ``samples``; 0 when fewer than ``MIN_RESAMPLES`` fit: no calibration then)."""
    fit = min(calibration.samples, calibration.max_cells // max(buckets, 1))
    return fit if fit >= MIN_RESAMPLES else 0


def _budgeted(config: DriftConfig, features: int) -> DriftConfig:
    """``config`` with the calibration budget shared evenly by ``features`` features."""
    cal = config.calibration
    if cal is None or features <= 1:
        return config
    return replace(config, calibration=replace(cal, max_cells=cal.max_cells // features))


@dataclass(frozen=True)
class FeatureOverride:
    """Per-feature settings (the DriftMonitor's ``spec.features[]``)."""

    method: Method | None = None
    threshold: float | None = None
    enabled: bool = True
    type: FeatureType | None = None  # batch mode with a raw reference: skip type inference


@dataclass(frozen=True)
class DriftConfig:
    """How to score: the DriftMonitor spec's drift settings, as plain data."""

    method: Method = "psi"
    threshold: float | None = None
    features: Mapping[str, FeatureOverride] = field(default_factory=dict)
    calibration: Calibration | None = None
    correction: Correction = "none"
    drift_share: float = 0.5
    min_samples: int = 100


@dataclass(frozen=True)
class WindowCounts:
    """One feature's current window: counts per reference bucket, and missing values."""

    counts: tuple[int, ...]
    missing: int = 0


@dataclass(frozen=True)
class FeatureResult:
    name: str
    method: Method
    score: float | None  # None: not scored (see note)
    threshold: float | None
    drifted: bool | None  # None: not scored
    samples: int  # present (non-missing) values in the current data
    missing: int = 0
    approximate: bool = False  # computed from buckets where the method wants raw values
    note: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.drifted is None:
            return "InsufficientData"
        return "Drift" if self.drifted else "NoDrift"


@dataclass(frozen=True)
class DatasetResult:
    verdict: Verdict
    drifted_share: float | None  # drifted / scored features; None when none was scored
    samples: int  # rows in the current data (largest present + missing of any feature)
    features: tuple[FeatureResult, ...]

    def feature(self, name: str) -> FeatureResult | None:
        return next((f for f in self.features if f.name == name), None)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)


class Hysteresis(NamedTuple):
    consecutive: int  # drifting windows in a row, this one included
    declared: bool  # drift is declared (act on it: alert, retrain)


def hysteresis(previous: int, drift: bool | None, windows: int) -> Hysteresis:
    """Declare drift only after ``windows`` drifting windows in a row.

    ``drift`` is this window's dataset verdict: ``True`` (Drift) extends the run,
    ``False`` (NoDrift) ends it, ``None`` (InsufficientData) neither extends nor ends
    it, and never declares: a quiet night does not reset a drift in progress, nor
    can it trigger a retraining.
    """
    if windows < 1:
        raise ValueError("windows must be at least 1")
    previous = max(previous, 0)
    if drift is None:
        return Hysteresis(previous, False)
    if not drift:
        return Hysteresis(0, False)
    count = previous + 1
    return Hysteresis(count, count >= windows)


def is_drift(method: Method, score: float, threshold: float) -> bool:
    """Distances drift above the threshold, p-values below it."""
    return STATISTICS[method].drifted(score, threshold)


def adjust_pvalues(pvalues: Sequence[float], correction: Correction) -> list[float]:
    """Multiple-testing adjusted p-values (``none``, ``bonferroni`` or ``fdr`` = BH)."""
    if correction == "none" or not pvalues:
        return list(pvalues)
    fn = stats.bonferroni if correction == "bonferroni" else stats.benjamini_hochberg
    return [float(p) for p in fn(np.asarray(pvalues, dtype=np.float64))]


# --- scoring one feature -------------------------------------------------------------


def _rng(seed: int, name: str) -> np.random.Generator:
    # Seeded per feature by name: a feature's threshold does not depend on the others.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def calibrate_threshold(
    reference: FeatureProfile,
    current_samples: int,
    method: Method,
    calibration: Calibration = Calibration(),
) -> float:
    """A threshold for ``method`` from the reference's own noise (parametric bootstrap).

    Under "no drift" both the reference and the current window are samples of one
    distribution, estimated by the reference proportions ``p``. Draw ``samples``
    pairs of multinomial resamples of ``p`` — one the size of the reference, one the
    size of the current window — score each pair with the same count-based statistic
    as the real comparison, and take the ``quantile`` of the scores (the
    ``1 - quantile`` quantile for p-values). Resampling both sides matters: with a
    current window as large as the reference, the score of two honest samples is
    about twice the noise of one. The threshold thus shrinks as windows grow, so
    large identical samples do not flag — the usual complaint about fixed p-value
    thresholds on big data. Vectorised: one ``(samples, buckets)`` draw per side.
    The draw is capped at ``calibration.max_cells`` cells (:func:`resamples`): NaN when
    not even ``MIN_RESAMPLES`` fit.
    """
    ref = np.asarray(reference.counts, dtype=np.float64)
    n_ref = int(ref.sum())
    size = resamples(calibration, ref.size)
    if n_ref <= 0 or current_samples <= 0 or size == 0:
        return math.nan
    p = ref / n_ref
    rng = _rng(calibration.seed, reference.name)
    r = rng.multinomial(n_ref, p, size=size).astype(np.float64)
    c = rng.multinomial(current_samples, p, size=size).astype(np.float64)
    statistic = STATISTICS[method]
    if statistic.bootstrap is not None:
        # The score falls as the cheap statistic grows (fixed sizes): take its quantile and
        # convert once (scipy's KS distribution is slow for large samples; 200 calls show).
        d = statistic.bootstrap.statistic(r, c)
        d = d[np.isfinite(d)]
        if d.size == 0:
            return math.nan
        d_q = float(np.quantile(d, calibration.quantile))
        return statistic.bootstrap.to_score(d_q, n_ref, current_samples)
    scores = statistic.binned(reference)(r, c)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return math.nan
    q = 1.0 - calibration.quantile if statistic.p_value else calibration.quantile
    return float(np.quantile(scores, q))


@dataclass(frozen=True)
class _Input:
    """One feature, ready to score: reference buckets, current buckets, maybe raw values."""

    name: str
    profile: FeatureProfile
    counts: IntArray | None  # current, aligned with profile buckets (None if raw only)
    missing: int
    samples: int
    ref_raw: Sample | None = None  # numeric batch mode: the values, for exact methods
    cur_raw: Sample | None = None
    problem: str = ""  # why it cannot be scored


def _resolve(name: str, ftype: FeatureType, config: DriftConfig) -> tuple[Method, str]:
    override = config.features.get(name)
    method = override.method if override and override.method else config.method
    fallback = STATISTICS[method].categorical_fallback
    if ftype == "categorical" and fallback is not None:
        return fallback, f"{method} needs ordered values: {fallback} for a categorical feature"
    return method, ""


def _explicit_threshold(name: str, config: DriftConfig) -> float | None:
    """The feature's own threshold, if it has one (it wins over calibration)."""
    override = config.features.get(name)
    if override and override.threshold is not None:
        return override.threshold
    return None


def _default_threshold(method: Method, config: DriftConfig) -> float:
    statistic = STATISTICS[method]
    if config.threshold is not None and statistic.kind == STATISTICS[config.method].kind:
        return config.threshold
    return statistic.default_threshold


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


class _Measured(NamedTuple):
    score: float
    approximate: bool  # from buckets, although the statistic has an exact form
    notes: list[str]


def _measure(item: _Input, method: Method, calibrated: bool) -> _Measured | str:
    """One feature's score before any threshold, or why it has none.

    Exact on raw values when the statistic has an exact form and both samples are
    there (never under calibration: its bootstrap threshold is a bucket statistic),
    else from the reference's buckets.
    """
    statistic = STATISTICS[method]
    exact = statistic.exact if not calibrated else None
    if exact is not None and item.ref_raw is not None and item.cur_raw is not None:
        if item.ref_raw.size == 0:
            return "the reference has no values"
        score, note = exact(item.ref_raw, item.cur_raw)
        return _Measured(score, False, [note])
    if item.profile.total <= 0:
        return "the reference has no values"
    assert item.counts is not None
    ref = np.asarray(item.profile.counts, dtype=np.float64)
    score = float(statistic.binned(item.profile)(ref, item.counts.astype(np.float64)))
    if statistic.exact is None:
        return _Measured(score, False, [])
    notes = [statistic.approximation]
    if calibrated:
        notes.append("from buckets like its bootstrap threshold")
    return _Measured(score, True, notes)


def _score(item: _Input, config: DriftConfig) -> FeatureResult:
    method, fallback_note = _resolve(item.name, item.profile.type, config)
    explicit = _explicit_threshold(item.name, config)
    threshold = explicit if explicit is not None else _default_threshold(method, config)

    def unscored(note: str) -> FeatureResult:
        return FeatureResult(
            item.name,
            method,
            None,
            threshold,
            None,
            item.samples,
            item.missing,
            False,
            _join(fallback_note, note),
        )

    if item.problem:
        return unscored(item.problem)
    if item.samples < config.min_samples:
        return unscored(f"{item.samples} samples < minSamples {config.min_samples}")
    cal = config.calibration if explicit is None else None
    measured = _measure(item, method, cal is not None)
    if isinstance(measured, str):
        return unscored(measured)
    notes = [fallback_note, *measured.notes]
    if cal is not None:
        value = calibrate_threshold(item.profile, item.samples, method, cal)
        drawn = resamples(cal, len(item.profile.counts))
        if math.isfinite(value):
            threshold = value
            notes.append(f"threshold: {cal.quantile:g} quantile of {drawn} bootstrap scores")
        elif drawn == 0:
            notes.append("not calibrated: too many buckets for the calibration budget")
    if not math.isfinite(measured.score):
        return unscored(_join(*notes, "score is undefined"))
    return FeatureResult(
        item.name,
        method,
        measured.score,
        threshold,
        is_drift(method, measured.score, threshold),
        item.samples,
        item.missing,
        measured.approximate,
        _join(*notes),
    )


def _finish(results: list[FeatureResult], config: DriftConfig) -> DatasetResult:
    tested = [
        i for i, r in enumerate(results) if r.score is not None and STATISTICS[r.method].p_value
    ]
    if config.correction != "none" and tested:
        raw = [results[i].score for i in tested]
        adjusted = adjust_pvalues([float(p) for p in raw if p is not None], config.correction)
        for i, p_adj in zip(tested, adjusted, strict=True):
            r = results[i]
            assert r.score is not None and r.threshold is not None
            note = f"{config.correction}-adjusted over {len(tested)} tests (raw p={r.score:.4g})"
            results[i] = replace(
                r,
                score=p_adj,
                drifted=is_drift(r.method, p_adj, r.threshold),
                note=_join(r.note, note),
            )
    samples = max((r.samples + r.missing for r in results), default=0)
    verdict, share = dataset_verdict(results, config.drift_share)
    return DatasetResult(verdict, share, samples, tuple(results))


def dataset_verdict(
    results: Iterable[FeatureResult], drift_share: float
) -> tuple[Verdict, float | None]:
    """``(verdict, drifted share)`` of scored results: ``Drift`` when at least
    ``drift_share`` of them drifted; ``InsufficientData`` (share None) when none is scored."""
    scored = [r for r in results if r.drifted is not None]
    if not scored:
        return "InsufficientData", None
    share = sum(1 for r in scored if r.drifted) / len(scored)
    return ("Drift" if share >= drift_share else "NoDrift"), share


def _enabled(names: Iterable[str], config: DriftConfig) -> list[str]:
    return [n for n in names if (o := config.features.get(n)) is None or o.enabled]


# --- live mode: counts ------------------------------------------------------------------


def score_counts(
    reference: Profile | Sequence[FeatureProfile],
    current: Mapping[str, WindowCounts | Sequence[int]],
    config: DriftConfig = DriftConfig(),
) -> DatasetResult:
    """Score the current window's bucket counts against the reference profile.

    ``current[name]`` holds the counts in ``bucket_labels(feature)`` order (numeric:
    per ``le`` bucket, not cumulative; categorical: per category then ``__other__``)
    and the missing count; a plain sequence means no missing values. A feature
    without current counts, or with a different number of buckets (the served
    version's profile is not this one), or with negative counts (a counter reset
    inside the window) is not scored and says why.
    """
    features = reference.features if isinstance(reference, Profile) else tuple(reference)
    by_name = {f.name: f for f in features}
    results = []
    enabled = _enabled(by_name, config)
    config = _budgeted(config, len(enabled))
    for name in enabled:
        profile = by_name[name]
        window = current.get(name)
        if window is None:
            item = _Input(name, profile, None, 0, 0, problem="no current counts")
        else:
            w = window if isinstance(window, WindowCounts) else WindowCounts(tuple(window))
            counts = np.asarray(w.counts, dtype=np.int64)
            problem = ""
            if counts.shape != (len(profile.counts),):
                problem = f"{counts.size} buckets, the reference has {len(profile.counts)}"
            elif (counts < 0).any() or w.missing < 0:
                problem = "negative counts (a counter reset in the window?)"
            present = int(counts.sum()) if not problem else 0
            item = _Input(name, profile, counts, max(w.missing, 0), present, problem=problem)
        results.append(_score(item, config))
    return _finish(results, config)


# --- batch mode: raw values -------------------------------------------------------------


def _present(values: ArrayLike) -> tuple[FloatArray, int]:
    """Non-NaN values (infinities kept) and the NaN count."""
    x = as_float(values).ravel()
    nan = np.isnan(x)
    missing = int(nan.sum())
    return (x[~nan] if missing else x), missing


INTEGER_SPAN = 1 << 20
"""Integer-valued columns spanning at most this many values are counted, not sorted."""


def _integer_range(x: FloatArray) -> tuple[int, int] | None:
    """``(lo, hi)`` when every value is an integer and the span is small, else None."""
    if x.size == 0:
        return None
    head = x[:1024]
    if not np.array_equal(head, np.floor(head)):  # most float columns stop here, cheaply
        return None
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo > INTEGER_SPAN:
        return None
    if not np.array_equal(x, np.floor(x)):
        return None
    return int(lo), int(hi)


def _exact_samples(reference: ArrayLike, current: ArrayLike) -> tuple[Sample, int, Sample, int]:
    """Both samples for the exact methods: counted when both are small-span integers."""
    ref, ref_missing = _present(reference)
    cur, cur_missing = _present(current)
    ref_range, cur_range = _integer_range(ref), _integer_range(cur)
    if ref_range and cur_range:
        lo, hi = min(ref_range[0], cur_range[0]), max(ref_range[1], cur_range[1])
        if hi - lo <= INTEGER_SPAN:
            values = np.arange(lo, hi + 1, dtype=np.float64)
            ref_counts = np.bincount((ref - lo).astype(np.int64), minlength=values.size)
            cur_counts = np.bincount((cur - lo).astype(np.int64), minlength=values.size)
            return (
                Sample(values, ref_counts.astype(np.int64)),
                ref_missing,
                Sample(values, cur_counts.astype(np.int64)),
                cur_missing,
            )
    return Sample(np.sort(ref)), ref_missing, Sample(np.sort(cur)), cur_missing


def _batch_type(
    name: str, reference: FeatureProfile | ArrayLike, config: DriftConfig
) -> FeatureType:
    if isinstance(reference, FeatureProfile):
        return reference.type
    override = config.features.get(name)
    return (override.type if override else None) or infer_type(np.asarray(reference))


def _batch_input(
    name: str,
    reference: FeatureProfile | ArrayLike,
    current: ArrayLike,
    config: DriftConfig,
    bins: int,
    max_categories: int,
) -> _Input:
    ftype = _batch_type(name, reference, config)
    method, _ = _resolve(name, ftype, config)
    calibrated = config.calibration is not None and _explicit_threshold(name, config) is None
    if isinstance(reference, FeatureProfile):
        profile = reference
    elif ftype == "numeric" and STATISTICS[method].exact is not None and not calibrated:
        # Exact on raw values: one sort (or count) per column is all the statistic needs.
        ref_raw, ref_missing, cur_raw, cur_missing = _exact_samples(reference, current)
        profile = FeatureProfile(name, "numeric", (ref_raw.size,), missing=ref_missing)
        return _Input(
            name,
            profile,
            np.array([cur_raw.size], dtype=np.int64),
            cur_missing,
            cur_raw.size,
            ref_raw=ref_raw,
            cur_raw=cur_raw,
        )
    else:
        profile = profile_column(name, reference, ftype, bins=bins, max_categories=max_categories)
    counts, missing = count_values(profile, current)
    return _Input(name, profile, counts, missing, int(counts.sum()))


def score_arrays(
    reference: Profile | Mapping[str, ArrayLike],
    current: Mapping[str, ArrayLike],
    config: DriftConfig = DriftConfig(),
    *,
    bins: int = 10,
    max_categories: int = 50,
    workers: int = 1,
) -> DatasetResult:
    """Batch mode: score raw current columns against a raw reference or a profile.

    ``reference`` is either a :class:`Profile` (the current columns are bucketed into
    its buckets and scored as in :func:`score_counts`) or ``{column: values}``; then
    each reference column is profiled like ``build_profile(bins=bins,
    max_categories=max_categories)`` would (type from the feature override, else
    inferred), and KS and Wasserstein on numeric features are computed exactly on
    the raw values (unless calibration gives them a bootstrap threshold, which is a
    bucket statistic: then they are scored from buckets too, and flagged
    approximate). Numeric columns may hold NaN (missing) and ±inf (counted in the
    open end buckets and in KS; left out of Wasserstein). Everything is vectorised:
    one sort per numeric column for the exact methods (a count per value when both
    sides hold small-range integers), a bucket count otherwise, one hash count per
    categorical column. With ``workers > 1`` features are scored in
    that many threads (numpy's sorts and searches release the GIL); the result is the
    same.
    """
    refs: Mapping[str, FeatureProfile | ArrayLike] = (
        {f.name: f for f in reference.features} if isinstance(reference, Profile) else reference
    )

    def one(name: str) -> FeatureResult:
        ref = refs[name]
        if name in current:
            item = _batch_input(name, ref, current[name], config, bins, max_categories)
        else:
            ftype = _batch_type(name, ref, config)
            empty = ref if isinstance(ref, FeatureProfile) else FeatureProfile(name, ftype, ())
            item = _Input(name, empty, None, 0, 0, problem="not in the current data")
        return _score(item, config)

    names = _enabled(refs, config)
    if workers > 1 and len(names) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(names))) as pool:
            results = list(pool.map(one, names))
    else:
        results = [one(name) for name in names]
    return _finish(results, config)
