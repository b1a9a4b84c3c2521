"""The dependency bulkhead: a concurrency limit and a circuit breaker, on a hand-set clock."""

from __future__ import annotations

import logging
import threading

import pytest

from modelworks.clients.guard import Breaker, DependencyUnavailable, Guard
from modelworks.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("outcomes", "admitted"),
    [
        ([], True),
        ([False, False], True),  # under the threshold
        ([False, False, False], False),  # opened
        ([False, False, True, False], True),  # a success resets the count
    ],
)
def test_breaker_opens_after_consecutive_failures(outcomes: list[bool], admitted: bool) -> None:
    breaker = Breaker(threshold=3, cool_down=10, clock=Clock())
    for ok in outcomes:
        breaker.record(ok)
    assert (breaker.admit() is None) is admitted


def test_breaker_lets_one_probe_through_after_the_cool_down() -> None:
    clock = Clock()
    breaker = Breaker(threshold=1, cool_down=10, clock=clock)
    breaker.record(False)
    assert breaker.admit() == pytest.approx(10)
    clock.now += 10
    assert breaker.admit() is None  # the probe
    assert breaker.admit() == 0.0  # nobody else while it runs
    breaker.record(False)
    assert breaker.admit() == pytest.approx(10)  # open again for a full cool-down
    clock.now += 10
    assert breaker.admit() is None
    breaker.record(True)
    assert breaker.admit() is None and not breaker.open


def test_guard_fails_fast_when_open_and_names_the_dependency() -> None:
    guard = Guard("MLflow", threshold=2, cool_down=15, clock=Clock())
    for _ in range(2):
        with guard.call() as outcome:
            outcome(False)
    refused = pytest.raises(DependencyUnavailable, match=r"MLflow failed 2 times in a row; .* 15s")
    with refused, guard.call():
        pytest.fail("the call must not be made")


def test_guard_refuses_a_call_when_every_slot_is_taken() -> None:
    guard = Guard("MLflow", slots=1, slot_wait=0.05)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with guard.call():
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)
    busy = pytest.raises(DependencyUnavailable, match="MLflow is busy: 1 calls already wait")
    with busy, guard.call():
        pytest.fail("the call must not be made")
    release.set()
    holder.join(5)
    with guard.call():  # the slot is free again; a refused call is no failure
        pass
    assert not guard.breaker.open and guard.breaker.failures == 0


def test_a_probe_that_found_no_slot_lets_the_next_call_probe() -> None:
    clock = Clock()
    guard = Guard("MLflow", slots=1, slot_wait=0.01, threshold=1, cool_down=1, clock=clock)
    with guard.call() as outcome:
        outcome(False)
    clock.now += 1
    taken = guard._slots.acquire(timeout=1)
    assert taken
    with pytest.raises(DependencyUnavailable, match="busy"), guard.call():
        pass
    guard._slots.release()
    with guard.call():
        pass
    assert not guard.breaker.open


def test_mlflow_settings_bound_one_call() -> None:
    s = Settings.from_env(
        {
            "MODELWORKS_MLFLOW_REQUEST_TIMEOUT_SECONDS": "3",
            "MODELWORKS_MLFLOW_REQUEST_RETRIES": "0",
            "MODELWORKS_MLFLOW_CONCURRENCY": "1",
            "MODELWORKS_MLFLOW_BREAKER_FAILURES": "5",
            "MODELWORKS_MLFLOW_BREAKER_COOL_DOWN_SECONDS": "30",
        }
    )
    assert (s.mlflow_concurrency, s.mlflow_breaker_failures) == (1, 5)
    assert s.mlflow_breaker_cool_down_seconds == 30.0
    env = s.mlflow_client_env()
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    defaults = Settings.from_env({}).mlflow_client_env()
    worst = int(defaults["MLFLOW_HTTP_REQUEST_TIMEOUT"]) * (
        int(defaults["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) + 1
    )
    assert worst <= 10  # seconds: one call never holds a worker longer


@pytest.mark.parametrize(
    "env",
    [
        {"MODELWORKS_MLFLOW_CONCURRENCY": "0"},
        {"MODELWORKS_MLFLOW_REQUEST_TIMEOUT_SECONDS": "soon"},
        {"MODELWORKS_MLFLOW_BREAKER_FAILURES": "0"},
    ],
)
def test_bad_mlflow_settings_name_the_variable(env: dict[str, str]) -> None:
    (name,) = env
    with pytest.raises(ValueError, match=name):
        Settings.from_env(env)


def test_breaker_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="modelworks")
    clock = Clock()
    breaker = Breaker(threshold=2, cool_down=15, clock=clock, name="MLflow")
    for _ in range(3):
        breaker.record(False)
    clock.now += 15
    assert breaker.admit() is None
    breaker.record(True)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "MLflow failed 2 times in a row: circuit open, calls fail fast for 15s",
        "MLflow answers again: circuit closed",
    ]
