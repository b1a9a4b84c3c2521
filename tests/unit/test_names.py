"""The bottom layer's helpers: RFC 3339 times and the owner label of a kind."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from modelworks import names
from modelworks.api import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB

NOON = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T12:00:00Z", NOON),
        ("2026-01-01T12:00:00+00:00", NOON),
        ("2026-01-01T14:00:00+02:00", NOON),
        ("2026-01-01T12:00:00.250Z", NOON.replace(microsecond=250000)),
        ("2026-01-01T12:00:00", NOON),  # naive: UTC
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = names.parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z"])
def test_parse_time_refuses_what_is_no_time(text: str) -> None:
    with pytest.raises(ValueError):
        names.parse_time(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T12:00:00Z", NOON),
        ("yesterday", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_parse_time_or_none(value: Any, expected: datetime | None) -> None:
    assert names.parse_time_or_none(value) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (NOON, "2026-01-01T12:00:00Z"),
        (NOON.replace(microsecond=999999), "2026-01-01T12:00:00Z"),  # cut, not rounded
        (NOON.astimezone(timezone(timedelta(hours=-5))), "2026-01-01T12:00:00Z"),
        (datetime(2026, 1, 1, 12, 0, 0), "2026-01-01T12:00:00Z"),  # naive: UTC
    ],
)
def test_format_time(when: datetime, expected: str) -> None:
    assert names.format_time(when) == expected


@pytest.mark.parametrize(
    ("now", "seconds", "expected"),
    [
        ("2026-01-01T12:00:00Z", 0, "2026-01-01T12:00:00Z"),
        ("2026-01-01T12:00:00Z", 90, "2026-01-01T12:01:30Z"),
        ("2026-01-01T23:59:30Z", 45.9, "2026-01-02T00:00:15Z"),
        ("2026-01-01T12:00:00Z", -60, "2026-01-01T11:59:00Z"),
    ],
)
def test_later(now: str, seconds: float, expected: str) -> None:
    assert names.later(now, seconds) == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-01-01T12:00:00Z", "2026-01-01T12:00:30Z", 30.0),
        ("2026-01-01T12:00:30Z", "2026-01-01T12:00:00Z", -30.0),
        ("2026-01-01T12:00:00Z", "2026-01-01T14:00:00+02:00", 0.0),
        ("2025-12-31T23:00:00Z", "2026-01-01T01:00:00Z", 7200.0),
    ],
)
def test_seconds_between(start: str, end: str, expected: float) -> None:
    assert names.seconds_between(start, end) == expected


def test_owner_labels_follow_the_kinds() -> None:
    assert names.kind_label(TRAINING_JOB.kind) == names.TRAINING_JOB_LABEL
    assert names.kind_label(MODEL_DEPLOYMENT.kind) == names.MODEL_DEPLOYMENT_LABEL
    assert names.kind_label(DRIFT_MONITOR.kind) == "modelworks.dev/driftmonitor"


# A Kubernetes qualified name: an optional DNS-subdomain prefix and '/', then 1-63
# alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric.
QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


@pytest.mark.parametrize(
    "name",
    [k for k in vars(names) if k.endswith(("_LABEL", "_ANNOTATION"))],
)
def test_label_and_annotation_keys_are_qualified_names(name: str) -> None:
    assert QUALIFIED.match(getattr(names, name)), getattr(names, name)


def test_our_keys_are_under_the_group() -> None:
    assert names.PREFIX == names.GROUP + "/"
    keys = {k: v for k, v in vars(names).items() if k.endswith(("_LABEL", "_ANNOTATION", "_TAG"))}
    others = {k for k in keys if k.startswith(("KUEUE_", "SCRAPE_"))}  # other projects' keys
    assert others == {
        "KUEUE_QUEUE_LABEL",
        "KUEUE_PRIORITY_LABEL",
        "SCRAPE_ANNOTATION",
        "SCRAPE_PORT_ANNOTATION",
        "SCRAPE_PATH_ANNOTATION",
    }
    strays = {
        k: v
        for k, v in keys.items()
        if k not in others and not v.startswith(names.RESERVED_PREFIXES)
    }
    assert not strays
