"""The endpoint circuit breaker with an injected clock: transitions, the sliding window, the minimum number of
calls, the half-open probe, what counts as a failure, and a thread-safety smoke test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from ragline.endpoints.breaker import (
    BreakerConfig,
    CircuitBreaker,
    State,
    breaker_for,
    log_and_emit,
)
from ragline.endpoints.errors import EndpointError
from ragline.settings import Settings

CONFIG = BreakerConfig(failure_rate=0.5, minimum_calls=4, window_s=10.0, open_s=5.0)
UNAVAILABLE = EndpointError("http_503", "down", retryable=True, status=503)
BAD_REQUEST = EndpointError("invalid_role", "bad role", retryable=False, status=400)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[tuple[str, State, State]] = []

    def __call__(self, name: str, old: State, new: State) -> None:
        self.transitions.append((name, old, new))


def make(config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, Clock, Recorder]:
    clock, recorder = Clock(), Recorder()
    return CircuitBreaker("llm", config, clock=clock, on_transition=recorder), clock, recorder


def succeed(breaker: CircuitBreaker) -> None:
    breaker.call(lambda: "ok")


def fail(breaker: CircuitBreaker, error: Exception = UNAVAILABLE) -> None:
    def boom() -> None:
        raise error

    with pytest.raises(type(error)):
        breaker.call(boom)


def rejected(breaker: CircuitBreaker) -> EndpointError:
    with pytest.raises(EndpointError) as raised:
        breaker.call(lambda: pytest.fail("an open circuit must not call the endpoint"))
    return raised.value


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(CONFIG.minimum_calls):
        fail(breaker)
    assert breaker.state is State.OPEN


# --------------------------------------------------------------------------------------------
# closed → open
# --------------------------------------------------------------------------------------------


def test_opens_when_the_failure_rate_in_the_window_reaches_the_threshold() -> None:
    breaker, _, recorder = make()
    succeed(breaker)
    fail(breaker)
    succeed(breaker)
    assert breaker.state is State.CLOSED  # 3 calls: below the minimum
    fail(breaker)  # 2 of 4 failed: 0.5

    assert breaker.state is State.OPEN
    assert recorder.transitions == [("llm", State.CLOSED, State.OPEN)]
    error = rejected(breaker)
    assert (error.code, error.retryable) == ("circuit_open", True)


def test_a_rate_below_the_threshold_keeps_it_closed() -> None:
    breaker, _, _ = make()
    for _ in range(3):
        succeed(breaker)
        succeed(breaker)
        fail(breaker)  # a third of the calls fail, forever

    assert breaker.state is State.CLOSED
    assert breaker.stats().calls == 9 and breaker.stats().failures == 3


def test_fewer_calls_than_the_minimum_never_open_it() -> None:
    breaker, _, _ = make()
    for _ in range(CONFIG.minimum_calls - 1):
        fail(breaker)
    assert breaker.state is State.CLOSED  # 100 % failed, but too few calls to judge

    fail(breaker)
    assert breaker.state is State.OPEN


def test_outcomes_leave_the_window_as_it_slides() -> None:
    breaker, clock, _ = make()
    for _ in range(3):
        fail(breaker)
    clock.now += CONFIG.window_s  # those three are now outside the window
    fail(breaker)

    assert breaker.state is State.CLOSED
    assert (breaker.stats().calls, breaker.stats().failures) == (1, 1)


def test_successes_that_slid_out_no_longer_dilute_the_rate() -> None:
    breaker, clock, _ = make()
    for _ in range(10):
        succeed(breaker)
    clock.now += CONFIG.window_s / 2
    for _ in range(4):
        fail(breaker)
    assert breaker.state is State.CLOSED  # 4 of 14

    clock.now += CONFIG.window_s / 2  # the successes slide out, the failures stay
    fail(breaker)
    assert breaker.state is State.OPEN


# --------------------------------------------------------------------------------------------
# open → half-open → closed / open
# --------------------------------------------------------------------------------------------


def test_after_the_cool_down_one_probe_goes_through_and_its_success_closes() -> None:
    breaker, clock, recorder = make()
    open_it(breaker)
    clock.now += CONFIG.open_s - 0.1
    rejected(breaker)

    clock.now += 0.1
    probe = breaker.acquire()
    assert probe.probe and breaker.state is State.HALF_OPEN
    assert rejected(breaker).code == "circuit_open"  # only one probe at a time
    probe.succeeded()

    assert breaker.state is State.CLOSED
    assert breaker.stats().calls == 0  # a closed circuit starts a new window
    assert [new for _, _, new in recorder.transitions] == [State.OPEN, State.HALF_OPEN, State.CLOSED]
    succeed(breaker)


def test_a_failed_probe_opens_it_again_for_a_full_cool_down() -> None:
    breaker, clock, _ = make()
    open_it(breaker)
    clock.now += CONFIG.open_s
    fail(breaker)  # the probe

    assert breaker.state is State.OPEN
    clock.now += CONFIG.open_s - 0.1
    rejected(breaker)
    clock.now += 0.1
    succeed(breaker)
    assert breaker.state is State.CLOSED


def test_a_probe_that_leaves_no_verdict_frees_the_slot_for_the_next() -> None:
    breaker, clock, _ = make()
    open_it(breaker)
    clock.now += CONFIG.open_s
    fail(breaker, RuntimeError("our bug, not the endpoint's"))

    assert breaker.state is State.HALF_OPEN
    succeed(breaker)  # the next call is the probe
    assert breaker.state is State.CLOSED


def test_outcomes_of_calls_admitted_before_a_state_change_are_ignored() -> None:
    breaker, clock, _ = make()
    slow = breaker.acquire()  # admitted while closed
    open_it(breaker)
    slow.succeeded()  # arrives while open: says nothing about the open state
    assert breaker.state is State.OPEN

    clock.now += CONFIG.open_s
    probe = breaker.acquire()
    stale = EndpointError("endpoint_timeout", "slow", retryable=True)
    slow.failed(stale)  # settled already: no second verdict
    probe.succeeded()
    assert breaker.state is State.CLOSED


# --------------------------------------------------------------------------------------------
# What counts
# --------------------------------------------------------------------------------------------


def test_a_4xx_is_the_callers_fault_and_does_not_count() -> None:
    breaker, _, _ = make()
    for _ in range(20):
        fail(breaker, BAD_REQUEST)

    assert breaker.state is State.CLOSED
    assert (breaker.stats().calls, breaker.stats().failures) == (20, 0)


def test_a_4xx_probe_shows_the_endpoint_answering_and_closes_it() -> None:
    breaker, clock, _ = make()
    open_it(breaker)
    clock.now += CONFIG.open_s
    fail(breaker, BAD_REQUEST)
    assert breaker.state is State.CLOSED


def test_errors_that_are_not_endpoint_errors_leave_no_verdict() -> None:
    breaker, _, _ = make()
    for _ in range(10):
        fail(breaker, ValueError("a bug on our side"))
    assert breaker.stats().calls == 0


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


def events(*items: object, error: Exception | None = None) -> Iterator[object]:
    yield from items
    if error is not None:
        raise error


def test_a_stream_is_judged_when_it_ends_or_fails() -> None:
    breaker, _, _ = make()
    assert list(breaker.stream(events(1, 2))) == [1, 2]
    with pytest.raises(EndpointError):
        list(breaker.stream(events(1, error=UNAVAILABLE)))
    assert (breaker.stats().calls, breaker.stats().failures) == (2, 1)


def test_a_stream_closed_early_succeeded_if_it_produced_and_closes_its_source() -> None:
    breaker, _, _ = make()
    closed: list[str] = []

    def source(name: str) -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(name)

    guarded = breaker.stream(source("read one"))
    assert next(guarded) == 1
    guarded.close()
    assert closed == ["read one"]
    assert (breaker.stats().calls, breaker.stats().failures) == (1, 0)


def test_a_stream_of_an_open_circuit_fails_at_the_first_next() -> None:
    breaker, _, _ = make()
    open_it(breaker)
    guarded = breaker.stream(events(1))
    with pytest.raises(EndpointError) as raised:
        next(guarded)
    assert raised.value.code == "circuit_open"


# --------------------------------------------------------------------------------------------
# Observability, configuration
# --------------------------------------------------------------------------------------------


def test_state_changes_are_logged_and_emitted_as_a_metric(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    log_and_emit("ragline-llm", State.CLOSED, State.OPEN)

    (record,) = [r for r in caplog.records if getattr(r, "to_state", None) == "open"]
    assert (record.levelname, record.endpoint, record.from_state) == ("WARNING", "ragline-llm", "closed")
    metrics = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "CircuitBreakerState" in line
    ]
    assert metrics and metrics[0]["CircuitBreakerState"] == [2.0] and metrics[0]["endpoint"] == "ragline-llm"
    (declaration,) = metrics[0]["_aws"]["CloudWatchMetrics"]
    assert declaration["Namespace"] == "Ragline"
    assert any("endpoint" in dimensions for dimensions in declaration["Dimensions"])


def test_an_observer_that_fails_does_not_fail_the_call() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("metrics backend down")

    breaker = CircuitBreaker("llm", CONFIG, clock=Clock(), on_transition=broken)
    for _ in range(CONFIG.minimum_calls):
        fail(breaker)
    assert breaker.state is State.OPEN


def test_thresholds_come_from_settings() -> None:
    settings = Settings(
        breaker_failure_rate=0.25, breaker_minimum_calls=7, breaker_window_s=12, breaker_open_s=3
    )
    breaker = breaker_for("ragline-embedding", settings)
    assert breaker.name == "ragline-embedding"
    assert breaker.config == BreakerConfig(failure_rate=0.25, minimum_calls=7, window_s=12, open_s=3)


@pytest.mark.parametrize(
    "kwargs", [{"failure_rate": 0}, {"failure_rate": 1.5}, {"minimum_calls": 0}, {"open_s": 0}]
)
def test_nonsense_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


def test_concurrent_calls_are_all_counted() -> None:
    never_trips = BreakerConfig(failure_rate=1.0, minimum_calls=10**9, window_s=3600, open_s=1)
    breaker, _, _ = make(never_trips)
    threads, calls = 16, 250
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        for i in range(calls):
            if (n + i) % 2:
                fail(breaker)
            else:
                succeed(breaker)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    stats = breaker.stats()
    assert (stats.calls, stats.failures) == (threads * calls, threads * calls // 2)


def test_racing_callers_get_exactly_one_half_open_probe() -> None:
    breaker, clock, _ = make()
    open_it(breaker)
    clock.now += CONFIG.open_s
    threads = 32
    start = threading.Barrier(threads)
    admitted: list[bool] = []
    refused: list[str] = []
    lock = threading.Lock()

    def race() -> None:
        start.wait()
        try:
            permit = breaker.acquire()
        except EndpointError as exc:
            with lock:
                refused.append(exc.code)
        else:
            with lock:
                admitted.append(permit.probe)

    workers = [threading.Thread(target=race) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert admitted == [True]
    assert refused == ["circuit_open"] * (threads - 1)
