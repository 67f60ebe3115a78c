"""A circuit breaker per model endpoint that opens on the failure RATE within a sliding time window.

Written here rather than taken from PyPI: the maintained Python breakers (pybreaker 1.4, circuitbreaker 2.1,
aiobreaker 1.2, purgatory 3.0) all open after N *consecutive* failures, so an endpoint failing every other
call never trips them; pybreaker also holds its lock for the whole guarded call. Rate-in-a-window with a
minimum number of calls (Resilience4j's model) is the small class below.

    closed ──(the last `window_s` holds ≥ `minimum_calls` outcomes and failed/all ≥ `failure_rate`)──▶ open
    open ──(`open_s` later, the next call goes through as the one probe)──▶ half-open
    half-open ──(the probe succeeds)──▶ closed, window emptied     half-open ──(it fails)──▶ open

While open, and while a half-open probe is in flight, calls fail fast with
`EndpointError("circuit_open", retryable=True)`. Only retryable EndpointErrors count as failures (5xx,
throttling, timeouts, unreachable, broken streams); any other outcome shows the endpoint answering and counts
as a success (a 4xx is the caller's fault). An exception that is not an EndpointError (a bug on our side)
leaves no verdict. An outcome that arrives after the state changed is ignored: it belongs to the old state.

State is per process: the client factories build one breaker per endpoint, and the wiring modules build
the clients once per process. One lock guards the bookkeeping; it is never held during a call. State changes
are logged and emitted as the `CircuitBreakerState` metric (0 closed, 1 half-open, 2 open; dimension
`endpoint`), so an alarm on its maximum ≥ 2 says some process stopped calling an endpoint."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from ragline.endpoints.errors import EndpointError
from ragline.observability import NAMESPACE
from ragline.observability import logger as make_logger
from ragline.settings import Settings

T = TypeVar("T")

log = make_logger("endpoints")


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


METRIC_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}
METRIC_NAME = "CircuitBreakerState"  # the Ops dashboard graphs it (infra/cdk/stacks/ops.py)


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate: float = 0.5
    minimum_calls: int = 5
    window_s: float = 60.0
    open_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.minimum_calls < 1 or self.window_s <= 0 or self.open_s <= 0:
            raise ValueError("minimum_calls, window_s and open_s must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        return cls(
            failure_rate=settings.breaker_failure_rate,
            minimum_calls=settings.breaker_minimum_calls,
            window_s=settings.breaker_window_s,
            open_s=settings.breaker_open_s,
        )


@dataclass(frozen=True)
class Stats:
    state: State
    calls: int
    failures: int


OnTransition = Callable[[str, State, State], None]


def log_and_emit(name: str, old: State, new: State) -> None:
    """The default observer: one structured log line and one metric per state change."""
    level = log.warning if new is State.OPEN else log.info
    level("circuit breaker %s", new.value, extra={"endpoint": name, "from_state": old, "to_state": new})
    with single_metric(
        name=METRIC_NAME,
        unit=MetricUnit.NoUnit,
        value=METRIC_VALUES[new],
        namespace=NAMESPACE,
        default_dimensions={"endpoint": name},
    ):
        pass


class Permit:
    """One admitted call. Exactly one verdict counts: the first of succeeded / failed / released."""

    def __init__(self, breaker: CircuitBreaker, epoch: int, *, probe: bool) -> None:
        self._breaker = breaker
        self.epoch = epoch
        self.probe = probe
        self.settled = False

    def succeeded(self) -> None:
        self._breaker._settle(self, failed=False)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, EndpointError):
            self._breaker._settle(self, failed=exc.retryable)
        else:
            self.released()

    def released(self) -> None:
        """No verdict (the call was abandoned, or failed on our side): frees the half-open probe slot."""
        self._breaker._settle(self, failed=None)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: OnTransition | None = log_and_emit,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._outcomes: deque[tuple[float, bool]] = deque()  # (finished at, failed), oldest first
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._epoch = 0  # bumped on every state change

    @property
    def state(self) -> State:
        """The stored state: an open circuit becomes half-open when a call arrives after the cool-down."""
        with self._lock:
            return self._state

    def stats(self) -> Stats:
        with self._lock:
            self._prune(self._clock())
            return Stats(self._state, len(self._outcomes), sum(failed for _, failed in self._outcomes))

    # ----------------------------------------------------------------------------------------
    # Guarding calls
    # ----------------------------------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        permit = self.acquire()
        try:
            result = fn()
        except BaseException as exc:
            permit.failed(exc)
            raise
        permit.succeeded()
        return result

    def stream(self, events: Iterable[T]) -> Iterator[T]:
        """Guards a lazy stream: admitted at the first `next`, judged when it ends or fails. A stream closed
        early (the client went away) succeeded if it produced anything; otherwise it leaves no verdict."""
        permit = self.acquire()
        produced = False
        try:
            for event in events:
                produced = True
                yield event
        except GeneratorExit:
            if produced:
                permit.succeeded()
            else:
                permit.released()
            raise
        except BaseException as exc:
            permit.failed(exc)
            raise
        else:
            permit.succeeded()
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # closes the connection, so the server stops generating

    def acquire(self) -> Permit:
        """Admit one call or raise EndpointError("circuit_open")."""
        changes: list[tuple[State, State]] = []
        try:
            with self._lock:
                now = self._clock()
                if self._state is State.OPEN:
                    if now - self._opened_at < self.config.open_s:
                        raise self._rejection(self.config.open_s - (now - self._opened_at))
                    changes.append(self._move(State.HALF_OPEN, now))
                if self._state is State.HALF_OPEN:
                    if self._probe_in_flight:
                        raise self._rejection(None)
                    self._probe_in_flight = True
                    return Permit(self, self._epoch, probe=True)
                return Permit(self, self._epoch, probe=False)
        finally:
            self._notify(changes)

    # ----------------------------------------------------------------------------------------
    # Bookkeeping (all under the lock; observers are told after it is released)
    # ----------------------------------------------------------------------------------------

    def _settle(self, permit: Permit, *, failed: bool | None) -> None:
        changes: list[tuple[State, State]] = []
        with self._lock:
            if permit.settled:
                return
            permit.settled = True
            if permit.epoch != self._epoch:
                return  # admitted before the last state change: it says nothing about this state
            now = self._clock()
            if self._state is State.HALF_OPEN and permit.probe:
                self._probe_in_flight = False
                if failed is not None:
                    changes.append(self._move(State.OPEN if failed else State.CLOSED, now))
            elif self._state is State.CLOSED and failed is not None:
                self._outcomes.append((now, failed))
                self._prune(now)
                if failed and self._tripped():
                    changes.append(self._move(State.OPEN, now))
        self._notify(changes)

    def _tripped(self) -> bool:
        calls = len(self._outcomes)
        failures = sum(failed for _, failed in self._outcomes)
        return calls >= self.config.minimum_calls and failures >= self.config.failure_rate * calls

    def _prune(self, now: float) -> None:
        while self._outcomes and self._outcomes[0][0] <= now - self.config.window_s:
            self._outcomes.popleft()

    def _move(self, new: State, now: float) -> tuple[State, State]:
        old, self._state = self._state, new
        self._epoch += 1
        self._probe_in_flight = False
        if new is State.OPEN:
            self._opened_at = now
        self._outcomes.clear()  # a new state starts a new window
        return old, new

    def _rejection(self, retry_in_s: float | None) -> EndpointError:
        when = f"a probe is allowed in {retry_in_s:.1f}s" if retry_in_s is not None else "a probe is running"
        return EndpointError(
            "circuit_open",
            f"{self.name}: the circuit is open after repeated failures; {when}",
            retryable=True,
        )

    def _notify(self, changes: list[tuple[State, State]]) -> None:
        if self._on_transition is None:
            return
        for old, new in changes:
            try:
                self._on_transition(self.name, old, new)
            except Exception:  # noqa: BLE001 - observing a state change must never fail the call
                log.exception("circuit breaker observer failed", extra={"endpoint": self.name})


def breaker_for(endpoint: str, settings: Settings) -> CircuitBreaker:
    """The breaker for one endpoint, configured from settings (the client factories build one each)."""
    return CircuitBreaker(endpoint, BreakerConfig.from_settings(settings))
