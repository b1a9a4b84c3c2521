"""Data validation of a TrainingJob's dataset: column statistics and the verdict. Pure.

:class:`Accumulator` counts, column by column and chunk by chunk (so a Job reads a big
dataset in bounded memory), the rows, the missing values (null, or NaN in a float column)
and the label's classes; :func:`judge` holds them against ``spec.dataValidation`` and
returns every rule that failed, naming the column and by how much.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from modelworks.api.trainingjob import DataValidation

MAX_CLASSES = 1000  # distinct label values counted; more is no class label
# Which observed kinds each schema type accepts ("null": a column with no value at all).
ACCEPTS: Mapping[str, frozenset[str]] = {
    "numeric": frozenset({"integer", "float", "null"}),
    "integer": frozenset({"integer", "null"}),
    "string": frozenset({"string", "null"}),
    "boolean": frozenset({"boolean", "null"}),
    "categorical": frozenset({"integer", "float", "string", "boolean", "other", "null"}),
}


def kind_of(dtype: pa.DataType) -> str:
    """integer, float, string, boolean, null or other."""
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_dictionary(dtype):
        return kind_of(dtype.value_type)
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_null(dtype):
        return "null"
    return "other"


def missing_count(values: pa.Array | pa.ChunkedArray) -> int:
    """Nulls, plus NaN in a float column."""
    missing = int(values.null_count)
    if pa.types.is_floating(values.type):
        missing += int(pc.sum(pc.fill_null(pc.is_nan(values), False)).as_py() or 0)
    return missing


def class_text(value: Any) -> str:
    """A label value as the text spec.dataValidation.label.classes names it (1.0 -> 1)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass
class ColumnStats:
    name: str
    kind: str
    rows: int = 0
    missing: int = 0


@dataclass
class Observed:
    """What the dataset holds: rows, per-column statistics, the label's class counts."""

    rows: int
    columns: dict[str, ColumnStats]
    classes: dict[str, int] | None = None  # None: no label column, or too many values


@dataclass
class Accumulator:
    """Statistics over chunks of columns, in any order (a column at a time, or row blocks)."""

    schema: pa.Schema
    label: str | None = None
    columns: dict[str, ColumnStats] = field(default_factory=dict)
    classes: dict[str, int] | None = None

    def __post_init__(self) -> None:
        self.columns = {f.name: ColumnStats(f.name, kind_of(f.type)) for f in self.schema}
        if self.label is not None and self.label in self.columns:
            self.classes = {}

    def add(self, name: str, values: pa.Array | pa.ChunkedArray) -> None:
        stats = self.columns[name]
        stats.rows += len(values)
        stats.missing += missing_count(values)
        if name == self.label and self.classes is not None:
            self._count(values)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        for name, values in zip(batch.schema.names, batch.columns, strict=True):
            self.add(name, values)

    def _count(self, values: pa.Array | pa.ChunkedArray) -> None:
        assert self.classes is not None
        present = values.filter(pc.invert(pc.fill_null(_is_missing(values), True)))
        for item in pc.value_counts(present).to_pylist():
            key = class_text(item["values"])
            self.classes[key] = self.classes.get(key, 0) + int(item["counts"])
        if len(self.classes) > MAX_CLASSES:
            self.classes = None

    def result(self) -> Observed:
        rows = max((c.rows for c in self.columns.values()), default=0)
        return Observed(rows, dict(self.columns), self.classes)


def _is_missing(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_floating(values.type):
        return pc.or_kleene(pc.is_null(values), pc.is_nan(values))
    return pc.is_null(values)


@dataclass(frozen=True)
class Failure:
    rule: str
    message: str
    column: str | None = None
    value: float | None = None
    limit: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        for key in ("column", "value", "limit"):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 6) if isinstance(value, float) else value
        return out


@dataclass(frozen=True)
class Verdict:
    passed: bool
    rows: int
    failures: tuple[Failure, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if self.passed:
            return f"{self.rows} rows passed every check"
        first = self.failures[0].message
        more = len(self.failures) - 1
        return first + (f" (and {more} more)" if more else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "rows": self.rows,
            "summary": self.summary,
            "failures": [f.to_json() for f in self.failures],
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out


Expected = Sequence[tuple[str, str]]  # (column, schema type)


def judge(
    config: DataValidation,
    observed: Observed,
    expected: Expected | None = None,
    notes: Sequence[str] = (),
) -> Verdict:
    """Every rule of ``config`` against ``observed``; ``expected`` is the schema's columns
    (listed in ``config`` or read from a reference profile; None: no schema check)."""
    failures = [
        *_rows(config, observed),
        *_schema(config, observed, expected),
        *_missing(config, observed),
        *_label(config, observed),
    ]
    return Verdict(not failures, observed.rows, tuple(failures), tuple(notes))


def listed_columns(config: DataValidation) -> Expected | None:
    schema = config.table_schema
    if schema is None or schema.columns is None:
        return None
    return [(c.name, c.type) for c in schema.columns]


def _rows(config: DataValidation, observed: Observed) -> list[Failure]:
    if config.min_rows is None or observed.rows >= config.min_rows:
        return []
    message = f"{observed.rows} rows, fewer than the {config.min_rows} required"
    return [Failure("minRows", message, None, float(observed.rows), float(config.min_rows))]


def _schema(config: DataValidation, observed: Observed, expected: Expected | None) -> list[Failure]:
    if expected is None:
        return []
    out: list[Failure] = []
    for name, type_ in expected:
        stats = observed.columns.get(name)
        if stats is None:
            out.append(Failure("schema", f"column {name} is missing (expected {type_})", name))
        elif stats.kind not in ACCEPTS[type_]:
            message = f"column {name} is {stats.kind}, expected {type_}"
            out.append(Failure("schema", message, name))
    schema = config.table_schema
    if schema is not None and not schema.allow_extra_columns:
        named = {name for name, _ in expected} | ({config.label.column} if config.label else set())
        for name in observed.columns:
            if name not in named:
                out.append(Failure("schema", f"column {name} is not in the schema", name))
    return out


def _missing(config: DataValidation, observed: Observed) -> list[Failure]:
    limits = {c.column: c.max_missing_share for c in config.missing_by_column or []}
    out: list[Failure] = []
    for name in limits:
        if name not in observed.columns:
            out.append(Failure("missingByColumn", f"column {name} is missing", name))
    for name, stats in observed.columns.items():
        limit = limits.get(name, config.max_missing_share)
        if limit is None or stats.rows == 0:
            continue
        share = stats.missing / stats.rows
        if share > limit:
            rule = "missingByColumn" if name in limits else "maxMissingShare"
            message = f"column {name}: {_pct(share)} missing, over the {_pct(limit)} allowed"
            out.append(Failure(rule, message, name, share, limit))
    return out


def _label(config: DataValidation, observed: Observed) -> list[Failure]:
    check = config.label
    if check is None:
        return []
    name = check.column
    if name not in observed.columns:
        return [Failure("label", f"label column {name} is missing", name)]
    if observed.classes is None:
        message = f"label column {name} has over {MAX_CLASSES} distinct values: not classes"
        return [Failure("label", message, name)]
    counts, total = observed.classes, sum(observed.classes.values())
    out = [
        Failure("label.classes", f"label {name}: class {c} is absent", name)
        for c in check.classes or []
        if counts.get(c, 0) == 0
    ]
    for cls, count in sorted(counts.items()):
        share = count / total if total else 0.0
        low, high = check.min_class_share, check.max_class_share
        if low is not None and share < low:
            message = f"label {name}: class {cls} is {_pct(share)}, under the {_pct(low)} minimum"
            out.append(Failure("label.minClassShare", message, name, share, low))
        if high is not None and share > high:
            message = f"label {name}: class {cls} is {_pct(share)}, over the {_pct(high)} maximum"
            out.append(Failure("label.maxClassShare", message, name, share, high))
    return out


def _pct(share: float) -> str:
    value = 100.0 * share
    return f"{value:.1f}%" if math.isfinite(value) else str(value)


def compact(verdict: Mapping[str, Any], limit: int = 3500) -> dict[str, Any]:
    """The verdict cut to ``limit`` characters of JSON: notes go first, then failures from
    the end (counted in ``moreFailures``)."""
    out = dict(verdict)
    if _size(out) > limit:
        out.pop("notes", None)
    failures = list(out.get("failures") or [])
    while _size(out) > limit and failures:
        failures.pop()
        out["failures"] = failures
        out["moreFailures"] = int(out.get("moreFailures") or 0) + 1
    return out


def _size(data: Mapping[str, Any]) -> int:
    return len(json.dumps(data, separators=(",", ":")))
