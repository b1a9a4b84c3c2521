"""Reference profiles: per-feature bins and counts of the training data. Pure (numpy).

A profile is what the DriftMonitor compares live traffic with, and what the model
server takes its histogram bucket edges from. It is plain JSON, logged with the model
(``reference_profile.json``, e.g. ``mlflow.log_dict(build_profile(...).to_json(), PROFILE_FILE)``
as the example trainer does) by any trainer that writes the
same shape.

Buckets follow Prometheus' ``le`` convention: numeric bucket ``i`` holds the values
``edges[i-1] < x <= edges[i]``; the first is open below, the last open above. Values
that are missing (NaN/None) are counted apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PROFILE_FILE = "reference_profile.json"
FORMAT_VERSION = 1
OTHER = "__other__"  # categories unseen in the reference, or beyond max_categories
FeatureType = Literal["numeric", "categorical"]


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

    def feature(self, name: str) -> FeatureProfile | None:
        return next((f for f in self.features if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "rows": self.rows,
            "meta": dict(self.meta),
            "features": [f.to_json() for f in self.features],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        if int(data.get("version", 0)) != FORMAT_VERSION:
            raise ValueError(f"unsupported profile version {data.get('version')!r}")
        return cls(
            features=tuple(FeatureProfile.from_json(f) for f in data["features"]),
            rows=int(data["rows"]),
            meta={str(k): str(v) for k, v in (data.get("meta") or {}).items()},
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
    """(counts per bucket, missing) with Prometheus ``le`` buckets."""
    x = np.asarray(values, dtype=float)
    nan = np.isnan(x)
    idx = np.searchsorted(np.asarray(edges, dtype=float), x[~nan], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    return tuple(int(c) for c in counts), int(nan.sum())


def bucket_categorical(
    values: Sequence[Any] | np.ndarray, categories: Sequence[str]
) -> tuple[tuple[int, ...], int]:
    """(counts per category plus OTHER last, missing)."""
    arr = np.asarray(values, dtype=object)
    missing_mask = np.array(
        [v is None or (isinstance(v, float) and np.isnan(v)) for v in arr], dtype=bool
    )
    present = np.array([str(v) for v in arr[~missing_mask]], dtype=object)
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    if present.size:
        uniq, n = np.unique(present.astype(str), return_counts=True)
        for u, c in zip(uniq, n, strict=True):
            counts[index.get(str(u), len(categories))] += int(c)
    return tuple(int(c) for c in counts), int(missing_mask.sum())


def build_profile(
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    bins: int = 10,
    max_categories: int = 50,
    types: Mapping[str, FeatureType] | None = None,
    meta: Mapping[str, str] | None = None,
) -> Profile:
    """The reference profile of a table given as ``{column: values}``."""
    if bins < 2:
        raise ValueError("bins must be at least 2")
    features = []
    rows = 0
    for name, raw in columns.items():
        values = np.asarray(raw)
        rows = max(rows, int(values.shape[0]))
        kind = (types or {}).get(name) or infer_type(values)
        if kind == "numeric":
            x = values.astype(float)
            edges = quantile_edges(x, bins)
            counts, missing = bucket_numeric(x, edges)
            features.append(FeatureProfile(name, "numeric", counts, edges=edges, missing=missing))
        else:
            strs = [
                str(v) for v in values if not (v is None or (isinstance(v, float) and np.isnan(v)))
            ]
            uniq, n = (
                np.unique(np.asarray(strs, dtype=str), return_counts=True)
                if strs
                else (np.array([]), np.array([]))
            )
            order = sorted(zip(uniq.tolist(), n.tolist(), strict=True), key=lambda t: (-t[1], t[0]))
            categories = tuple(str(c) for c, _ in order[:max_categories])
            counts, missing = bucket_categorical(values, categories)
            features.append(
                FeatureProfile(name, "categorical", counts, categories=categories, missing=missing)
            )
    return Profile(tuple(features), rows, dict(meta or {}))


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
    """Count ``values`` into ``feature``'s buckets: (counts aligned with bucket_labels, missing)."""
    if feature.type == "numeric":
        arr = np.asarray(values)
        if arr.dtype.kind not in "iufb":
            arr = np.array([_to_float(v) for v in arr], dtype=float)
        return bucket_numeric(arr.astype(float), feature.edges)
    return bucket_categorical(values, feature.categories)


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
