"""The data validation a TrainingJob runs as a Job before it trains.

``modelworks validate-data --dataset URI --config JSON [--profile URI] [--note TEXT]``
reads the dataset in bounded memory (Parquet a column at a time, CSV in blocks; ``s3://``
with the pod's storage credentials, other URIs as :mod:`modelworks.clients.datasets`
reads them), judges it with :mod:`modelworks.validation`, prints the verdict and writes
it, compacted to fit, to the termination message. Exit codes: 0 passed, 2 the data failed
a check (the verdict says which), 1 the check could not run (the message says why:
the store unreachable, a missing file); the operator tells the last two apart.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelworks.api.trainingjob import DataValidation
from modelworks.validation import Accumulator, Expected, Verdict, compact, judge, listed_columns

TERMINATION_LOG = Path("/dev/termination-log")
BATCH_ROWS = 65_536
PASSED, DATA_INVALID, ERROR = 0, 2, 1
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


class Unreadable(Exception):
    """The data itself cannot be parsed (a data verdict, not an outage)."""


def _dataset(uri: str, tmp: str) -> Any:
    """A pyarrow dataset over ``uri`` (a file, or a directory of Parquet files)."""
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds

    name = uri.lower().rstrip("/")
    fmt: Any = "parquet"
    if name.endswith(CSV_SUFFIXES):
        delimiter = "\t" if ".tsv" in name else ","
        fmt = ds.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter=delimiter))
    if uri.startswith("s3://"):
        from modelworks.clients.objectstore import parse_s3, s3_filesystem

        return ds.dataset(parse_s3(uri).path, filesystem=s3_filesystem(), format=fmt)
    from modelworks.clients.datasets import local_path

    return ds.dataset(str(local_path(uri, tmp)), format=fmt)


def _chunks(dataset: Any, columnar: bool) -> Iterator[tuple[str, Any]]:
    """(column, values) chunks: a column at a time for Parquet, row blocks for CSV."""
    names = list(dataset.schema.names)
    if columnar:
        for name in names:
            for batch in dataset.to_batches(columns=[name], batch_size=BATCH_ROWS):
                yield name, batch.column(0)
        return
    for batch in dataset.to_batches(batch_size=BATCH_ROWS):
        for name, values in zip(batch.schema.names, batch.columns, strict=True):
            yield name, values


def observe(uri: str, label: str | None) -> Any:
    """The dataset's statistics (:class:`modelworks.validation.Observed`)."""
    import pyarrow as pa

    with tempfile.TemporaryDirectory(prefix="modelworks-data-") as tmp:
        dataset = _dataset(uri, tmp)
        acc = Accumulator(dataset.schema, label)
        columnar = not uri.lower().rstrip("/").endswith(CSV_SUFFIXES)
        try:
            for name, values in _chunks(dataset, columnar):
                acc.add(name, values)
        except pa.ArrowInvalid as exc:
            raise Unreadable(str(exc)) from exc
        return acc.result()


def expected_from_profile(uri: str) -> Expected:
    """The columns of a reference profile and their types (numeric or categorical)."""
    from modelworks.clients.datasets import load_json
    from modelworks.drift.profile import Profile

    profile = Profile.from_json(load_json(uri))
    return [(f.name, f.type) for f in profile.features]


def check(dataset: str, config: DataValidation, profile: str | None, notes: list[str]) -> Verdict:
    expected = listed_columns(config)
    if profile:
        expected = expected_from_profile(profile)
    label = config.label.column if config.label else None
    return judge(config, observe(dataset, label), expected, notes)


def _report(text: str, path: Path) -> None:
    with contextlib.suppress(OSError):  # not in a pod: stdout is the report
        path.write_text(text)


def main(
    dataset: str,
    config_json: str,
    profile: str | None = None,
    note: str | None = None,
    termination_log: Path = TERMINATION_LOG,
) -> int:
    notes = [note] if note else []
    try:
        config = DataValidation.model_validate(json.loads(config_json))
        verdict = check(dataset, config, profile, notes)
    except Unreadable as exc:
        verdict = Verdict(False, 0, (_unreadable(dataset, exc),), tuple(notes))
    except Exception as exc:  # every failure is reported, whatever its type
        message = f"{type(exc).__name__}: {exc}"
        print(message, file=sys.stderr)
        _report(message[:3500], termination_log)
        return ERROR
    out = verdict.to_json()
    print(json.dumps(out, indent=2))
    _report(json.dumps(compact(out), separators=(",", ":")), termination_log)
    return PASSED if verdict.passed else DATA_INVALID


def _unreadable(dataset: str, exc: Exception) -> Any:
    from modelworks.validation import Failure

    return Failure("readable", f"{dataset} cannot be parsed: {str(exc)[:500]}")
