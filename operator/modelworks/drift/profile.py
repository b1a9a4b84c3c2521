"""Reference profiles: per-feature bins and counts of the training data. Pure (numpy).

A profile is what the DriftMonitor compares live traffic with, and what the model
server takes its histogram bucket edges from. It is plain JSON, logged with the model
(``reference_profile.json``, e.g. ``mlflow.log_dict(build_profile(...).to_json(), PROFILE_FILE)``
as the example trainer does) by any trainer that writes the
same shape.

A profile may also carry ``outputs``: the same kind of entries for what the model
answered on its training data (``prediction``: the predicted class, or a regression
value; ``score``: a binary classifier's positive-class score), which the model server
counts its answers into and the DriftMonitor scores as prediction drift. Profiles
without ``outputs`` stay valid.

Buckets follow Prometheus' ``le`` convention: numeric bucket ``i`` holds the values
``edges[i-1] < x <= edges[i]``; the first is open below, the last open above. Values
that are missing (NaN/None) are counted apart.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

PROFILE_FILE = "reference_profile.json"
FORMAT_VERSION = 1
OTHER = "__other__"  # categories unseen in the reference, or beyond max_categories
PREDICTION = "prediction"  # output: the predicted class or value of each row
SCORE = "score"  # output: a binary classifier's positive-class score
FeatureType = Literal["numeric", "categorical"]
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    type: FeatureType
    counts: tuple[
        int, ...
    ]  # numeric: len(edges) + 1 buckets; categorical: len(categories) + 1 (OTHER)
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    missing: int = 0

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "counts": list(self.counts),
            "missing": self.missing,
        }
        if self.type == "numeric":
            out["edges"] = list(self.edges)
        else:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureProfile:
        kind = data["type"]
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {data.get('name')!r}: unknown type {kind!r}")
        return cls(
            name=str(data["name"]),
            type=kind,
            counts=tuple(int(c) for c in data["counts"]),
            edges=tuple(float(e) for e in data.get("edges", ())),
            categories=tuple(str(c) for c in data.get("categories", ())),
            missing=int(data.get("missing", 0)),
        )


@dataclass(frozen=True)
class Profile:
    features: tuple[FeatureProfile, ...]
    rows: int
    meta: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[FeatureProfile, ...] = ()  # the model's answers on the reference rows

    def feature(self, name: str) -> FeatureProfile | None:
        return next((f for f in self.features if f.name == name), None)

    def output(self, name: str) -> FeatureProfile | None:
        return next((f for f in self.outputs if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        out = {
            "version": FORMAT_VERSION,
            "rows": self.rows,
            "meta": dict(self.meta),
            "features": [f.to_json() for f in self.features],
        }
        if self.outputs:
            out["outputs"] = [f.to_json() for f in self.outputs]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        if int(data.get("version", 0)) != FORMAT_VERSION:
            raise ValueError(f"unsupported profile version {data.get('version')!r}")
        return cls(
            features=tuple(FeatureProfile.from_json(f) for f in data["features"]),
            rows=int(data["rows"]),
            meta={str(k): str(v) for k, v in (data.get("meta") or {}).items()},
            outputs=tuple(FeatureProfile.from_json(f) for f in data.get("outputs") or ()),
        )


def infer_type(values: np.ndarray, *, max_unique_numeric_as_categorical: int = 5) -> FeatureType:
    """Numbers with more than a handful of distinct values are numeric; the rest categorical."""
    if values.dtype.kind in "iuf":
        finite = values[~np.isnan(values.astype(float))] if values.dtype.kind == "f" else values
        if np.unique(finite).size > max_unique_numeric_as_categorical:
            return "numeric"
    return "categorical"


def quantile_edges(values: np.ndarray, bins: int) -> tuple[float, ...]:
    """Inner bucket edges at the reference quantiles (distinct, increasing)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ()
    qs = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return tuple(float(e) for e in np.unique(qs))


def bucket_numeric(values: np.ndarray, edges: Sequence[float]) -> tuple[tuple[int, ...], int]:
    """(counts per bucket, missing) with Prometheus ``le`` buckets, by a binary search per value.

    :func:`numeric_counts` gives the same counts, faster for the usual few edges.
    """
    x = np.asarray(values, dtype=float)
    nan = np.isnan(x)
    idx = np.searchsorted(np.asarray(edges, dtype=float), x[~nan], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return tuple(int(c) for c in counts), int(nan.sum())


def as_float(values: ArrayLike) -> FloatArray:
    """A column as floats; a value that is not a number becomes NaN (missing)."""
    arr = np.asarray(values)
    try:
        return np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in arr.ravel()], dtype=np.float64)


def numeric_counts(values: ArrayLike, edges: Sequence[float]) -> tuple[IntArray, int]:
    """(counts per ``le`` bucket, NaN count) of a numeric column: :func:`bucket_numeric`'s
    numbers; with up to 32 edges it counts ``x <= edge`` per edge (a few vectorised
    passes) instead of a binary search per value."""
    x = as_float(values).ravel()
    if len(edges) > 32:
        counts, missing = bucket_numeric(x, edges)
        return np.asarray(counts, dtype=np.int64), missing
    missing = int(np.count_nonzero(np.isnan(x)))
    upto = [np.count_nonzero(x <= edge) for edge in edges]  # NaN compares False
    cumulative: IntArray = np.array([0, *upto, x.size - missing], dtype=np.int64)
    return np.diff(cumulative), missing


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_text(counts: Mapping[Any, int]) -> tuple[dict[str, int], int]:
    """Fold ``{value: count}`` into ``({str(value): count}, missing)``."""
    out: dict[str, int] = {}
    missing = 0
    for key, c in counts.items():
        if _is_missing(key):
            missing += c
        else:
            k = str(key)
            out[k] = out.get(k, 0) + c
    return out, missing


def category_counts(values: ArrayLike) -> tuple[dict[str, int], int]:
    """``({category: count}, missing)`` of a raw column; categories compared as text.

    ``None`` and NaN are missing, everything else counts as ``str(value)``. Numbers are
    counted by value and strings by hash (one pass, no sort, no per-row Python work beyond
    the counting), so a million rows take tens of milliseconds; only a column where
    values that compare equal print differently (``1``, ``1.0`` and ``True``; ``0.0``
    and ``-0.0``) pays for a ``str`` per row.
    """
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "iub":
        uniq, n = np.unique(arr, return_counts=True)
        return {str(u): int(c) for u, c in zip(uniq.tolist(), n.tolist(), strict=True)}, 0
    if arr.dtype.kind == "f":
        x = arr.ravel()
        nan = np.isnan(x)
        x = x[~nan]
        signs = np.signbit(x[x == 0])
        if signs.any() and not signs.all():  # 0.0 and -0.0: equal, but two categories
            return _as_text(collections.Counter(str(v) for v in x.tolist()))[0], int(nan.sum())
        uniq, n = np.unique(x, return_counts=True)
        out = {str(u): int(c) for u, c in zip(uniq.tolist(), n.tolist(), strict=True)}
        return out, int(nan.sum())
    items = arr.ravel().tolist()
    seen = collections.Counter(items)
    kinds = {type(k) for k in seen if not _is_missing(k)}
    if all(issubclass(t, str) for t in kinds) or kinds == {int}:
        return _as_text(seen)
    return _as_text(collections.Counter(None if _is_missing(v) else str(v) for v in items))


def align_categories(counts: Mapping[str, int], categories: Sequence[str]) -> IntArray:
    """Counts per category in ``categories`` order, then everything else (``OTHER``) last."""
    out = np.zeros(len(categories) + 1, dtype=np.int64)
    index = {c: i for i, c in enumerate(categories)}
    for key, c in counts.items():
        out[index.get(key, len(categories))] += c
    return out


def bucket_categorical(
    values: Sequence[Any] | np.ndarray, categories: Sequence[str]
) -> tuple[tuple[int, ...], int]:
    """(counts per category plus OTHER last, missing)."""
    seen, missing = category_counts(values)
    return tuple(int(c) for c in align_categories(seen, categories)), missing


def count_values(feature: FeatureProfile, values: ArrayLike) -> tuple[IntArray, int]:
    """Count a column into ``feature``'s buckets: (counts aligned with
    :func:`bucket_labels`, missing). What the model server does per request and the
    batch check per column."""
    if feature.type == "numeric":
        return numeric_counts(values, feature.edges)
    seen, missing = category_counts(values)
    return align_categories(seen, feature.categories), missing


def profile_column(
    name: str,
    values: ArrayLike,
    ftype: FeatureType | None = None,
    *,
    bins: int = 10,
    max_categories: int = 50,
) -> FeatureProfile:
    """One feature's reference profile: numeric features get ``bins`` quantile buckets,
    categorical ones their ``max_categories`` most frequent categories (ties by name)
    plus ``OTHER``. The type is ``ftype``, else inferred (:func:`infer_type`)."""
    if bins < 2:
        raise ValueError("bins must be at least 2")
    arr = np.asarray(values)
    kind = ftype or infer_type(arr)
    if kind == "numeric":
        x = as_float(arr)
        edges = quantile_edges(x, bins)
        counts, missing = numeric_counts(x, edges)
        return FeatureProfile(
            name, "numeric", tuple(int(c) for c in counts), edges=edges, missing=missing
        )
    seen, missing = category_counts(arr)
    order = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))
    categories = tuple(k for k, _ in order[:max_categories])
    counts = align_categories(seen, categories)
    return FeatureProfile(
        name, "categorical", tuple(int(c) for c in counts), categories=categories, missing=missing
    )


def build_profile(
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    bins: int = 10,
    max_categories: int = 50,
    types: Mapping[str, FeatureType] | None = None,
    meta: Mapping[str, str] | None = None,
) -> Profile:
    """The reference profile of a table given as ``{column: values}``
    (:func:`profile_column` per column)."""
    if bins < 2:
        raise ValueError("bins must be at least 2")
    features = []
    rows = 0
    for name, raw in columns.items():
        values = np.asarray(raw)
        rows = max(rows, int(values.shape[0]))
        kind = (types or {}).get(name)
        features.append(
            profile_column(name, values, kind, bins=bins, max_categories=max_categories)
        )
    return Profile(tuple(features), rows, dict(meta or {}))


def output_columns(
    prediction: Sequence[float | str], scores: Sequence[Sequence[float]] | None = None
) -> dict[str, np.ndarray]:
    """The outputs of a batch of answers (``serving.answers.rows``): ``prediction`` per
    row, and ``score`` (the second column) when the scores are a binary classifier's."""
    out: dict[str, np.ndarray] = {PREDICTION: np.asarray(list(prediction), dtype=object)}
    if scores is not None and len(scores) and len(scores[0]) == 2:
        out[SCORE] = np.asarray(scores, dtype=np.float64)[:, 1]
    return out


def profile_outputs(
    prediction: Sequence[float | str],
    scores: Sequence[Sequence[float]] | None = None,
    *,
    classifier: bool | None = None,
    bins: int = 10,
    max_categories: int = 50,
) -> tuple[FeatureProfile, ...]:
    """The ``outputs`` of a profile from the model's answers on the reference rows.

    ``prediction`` is categorical (class shares) for a classifier — one that answers
    scores, or ``classifier=True`` — and otherwise numeric when its values are numbers
    with more than a handful of distinct values (:func:`infer_type`), like a regression;
    ``score`` is numeric (``bins`` quantile buckets)."""
    columns = output_columns(prediction, scores)
    if classifier is None:
        classifier = scores is not None
    kinds: dict[str, FeatureType | None] = {PREDICTION: "categorical" if classifier else None}
    if not classifier:
        values = as_float(columns[PREDICTION])
        numbers = not np.isnan(values).all()
        kinds[PREDICTION] = infer_type(values) if numbers else "categorical"
    kinds[SCORE] = "numeric"
    return tuple(
        profile_column(name, values, kinds[name], bins=bins, max_categories=max_categories)
        for name, values in columns.items()
    )


def typical_row(profile: Profile, integers: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One row of typical values: each numeric feature's median edge (rounded for the
    ``integers`` columns), each categorical feature's most frequent category.

    What the model server predicts once before it says it is ready, so the first real
    request does not pay for the model's cold start.
    """
    row: dict[str, Any] = {}
    for f in profile.features:
        if f.type == "numeric":
            value = float(f.edges[len(f.edges) // 2]) if f.edges else 0.0
            row[f.name] = round(value) if f.name in integers else value
        else:
            seen = list(zip(f.counts[: len(f.categories)], f.categories, strict=True))
            row[f.name] = max(seen)[1] if seen else ""
    return row


def bucket_labels(feature: FeatureProfile) -> tuple[str, ...]:
    """The ``bucket`` label of each count, shared by the model server and the DriftMonitor.

    Numeric: the bucket's upper edge (``repr`` of the float) and ``+Inf`` for the last;
    categorical: the category and ``__other__`` last.
    """
    if feature.type == "numeric":
        return (*(repr(float(e)) for e in feature.edges), "+Inf")
    return (*feature.categories, OTHER)


def bucket_counts(
    feature: FeatureProfile, values: Sequence[Any] | np.ndarray
) -> tuple[tuple[int, ...], int]:
    """:func:`count_values` as plain ints: (counts aligned with bucket_labels, missing)."""
    counts, missing = count_values(feature, values)
    return tuple(int(c) for c in counts), missing


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
