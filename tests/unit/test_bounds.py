"""What a tenant's inputs may cost the operator: the limits, their settings, their effect."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from modelworks.clients.http import redact
from modelworks.drift.engine import (
    MAX_CELLS,
    Calibration,
    DriftConfig,
    WindowCounts,
    resamples,
    score_counts,
)
from modelworks.drift.profile import FeatureProfile
from modelworks.handlers.controller import bounds_of
from modelworks.reconcilers.base import Bounds
from modelworks.settings import MIB, Settings


def huge_profile(features: int, buckets: int) -> list[FeatureProfile]:
    edges = tuple(float(i) for i in range(buckets - 1))
    return [FeatureProfile(f"f{i}", "numeric", (100,) * buckets, edges) for i in range(features)]


def test_calibration_of_a_huge_profile_stays_within_the_budget() -> None:
    """20 features x 2000 buckets x 5000 resamples is 200M cells: minutes of CPU in one
    pass. The budget (4M cells) shares out 100 resamples per feature: seconds."""
    profile = huge_profile(20, 2000)
    current = {f.name: WindowCounts(f.counts) for f in profile}
    config = DriftConfig(calibration=Calibration(samples=5000), min_samples=1)
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(score_counts(profile, current, config)))
    thread.daemon = True
    started = time.monotonic()
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "calibration still running after 60 s"
    took = time.monotonic() - started
    assert all("quantile of 100 bootstrap scores" in f.note for f in out[0].features)
    assert took < 60


@pytest.mark.parametrize(
    ("samples", "buckets", "max_cells", "expected"),
    [
        (200, 10, MAX_CELLS, 200),  # well within: as asked
        (5000, 2000, MAX_CELLS, 2000),  # capped by the budget
        (5000, 2000, 80_000, 40),
        (5000, 10_000, 80_000, 0),  # fewer than 20 fit: not calibrated
        (5000, 0, 80_000, 5000),
    ],
)
def test_resamples_fit_the_budget(
    samples: int, buckets: int, max_cells: int, expected: int
) -> None:
    assert resamples(Calibration(samples=samples, max_cells=max_cells), buckets) == expected


def test_a_feature_over_the_budget_keeps_its_default_threshold() -> None:
    profile = huge_profile(1, 5000)
    config = DriftConfig(calibration=Calibration(samples=200, max_cells=50_000), min_samples=1)
    (result,) = score_counts(profile, {"f0": WindowCounts(profile[0].counts)}, config).features
    assert result.threshold == 0.2  # psi's default
    assert "not calibrated: too many buckets for the calibration budget" in result.note


def test_settings_defaults_are_the_clients_defaults() -> None:
    assert bounds_of(Settings()) == Bounds()
    assert Settings().metrics_max_bytes == 4 * MIB
    assert Settings().prometheus_max_bytes == 8 * MIB
    assert Settings().profile_max_bytes == 64 * MIB


def test_limits_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "MODELWORKS_METRICS_MAX_BYTES": "1024",
            "MODELWORKS_PROMETHEUS_DEADLINE_SECONDS": "2.5",
            "MODELWORKS_CALIBRATION_MAX_CELLS": "100000",
        }
    )
    bounds = bounds_of(s)
    assert bounds.metrics.max_bytes == 1024 and bounds.metrics.deadline == 5.0
    assert bounds.prometheus.deadline == 2.5
    assert bounds.calibration_cells == 100_000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("METRICS_MAX_BYTES", "lots", "MODELWORKS_METRICS_MAX_BYTES must be a number"),
        ("PROFILE_MAX_BYTES", "1.5", "MODELWORKS_PROFILE_MAX_BYTES must be a whole number"),
        ("PROFILE_DEADLINE_SECONDS", "0", "MODELWORKS_PROFILE_DEADLINE_SECONDS must be at least"),
        ("CALIBRATION_MAX_CELLS", "0", "MODELWORKS_CALIBRATION_MAX_CELLS must be at least"),
    ],
)
def test_bad_limits_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({f"MODELWORKS_{name}": value})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://prometheus:9090", "http://prometheus:9090"),
        ("https://user:secret@prom.example/x?token=abc#f", "https://prom.example/x"),
        ("http://[::1]:9090/", "http://[::1]:9090/"),
        ("http://[bad", "<invalid URL>"),
    ],
)
def test_urls_in_messages_carry_no_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown
