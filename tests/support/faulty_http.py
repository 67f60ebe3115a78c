"""A fault-injecting HTTP proxy for tests: it stands on a local port in front of a real server and, for a
chosen share of POST requests, answers 503 with the error body this project's model servers send
(`{"error": {"code", "message"}}`) or holds the request without answering until the client gives up. Every
other request is forwarded to the server and its answer passed back unchanged.

Which requests meet a fault is decided from the request itself, not from a clock or a global counter: the
verdict for the n-th time a given body arrives is a hash of (seed, n, body) compared with the shares. A run is
therefore reproducible however the requests interleave. `faults_per_request` caps how many times the same
request can meet a fault, so a test can keep faults within what its retry budget absorbs (a request that fails
every time is an outage, which a test makes by stopping the server instead), and `spacing` keeps faults apart
in the order requests arrive, so that a test can keep a caller's circuit breaker closed."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx


class Verdict(StrEnum):
    FORWARD = "forwarded"
    FAIL = "failed"
    STALL = "stalled"


@dataclass(frozen=True)
class FaultPlan:
    fail_share: float = 0.0
    """Share of requests answered 503 without reaching the server."""
    stall_share: float = 0.0
    """Share of requests held unanswered for `stall_s`, then dropped (set it above the client's timeout)."""
    stall_s: float = 2.0
    seed: int = 0
    faults_per_request: int | None = 1
    """How many deliveries of the same body may meet a fault; None for no limit."""
    spacing: int = 0
    """Requests forwarded after each fault before the next may meet one: with 2, no three requests in a row
    hold two faults, so no run of five or more requests is half faults (a circuit breaker that opens at a 50%
    failure rate stays closed)."""

    def __post_init__(self) -> None:
        if self.fail_share < 0 or self.stall_share < 0 or self.fail_share + self.stall_share > 1:
            raise ValueError("fail_share and stall_share must be non-negative and add up to at most 1")
        if self.spacing < 0:
            raise ValueError("spacing must be non-negative")

    def verdict(self, body: bytes, attempt: int) -> Verdict:
        """What happens to the `attempt`-th arrival (from 1) of a request with this body."""
        if self.faults_per_request is not None and attempt > self.faults_per_request:
            return Verdict.FORWARD
        digest = hashlib.sha256(f"{self.seed}:{attempt}:".encode() + body).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw < self.fail_share:
            return Verdict.FAIL
        if draw < self.fail_share + self.stall_share:
            return Verdict.STALL
        return Verdict.FORWARD


class FaultyProxy:
    """`url` is the proxy's base URL; `counts[Verdict.X]` how many POSTs got each verdict so far. `plan` may be
    replaced between requests. GET requests (health checks) are always forwarded and not counted."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan()
        self.counts: Counter[Verdict] = Counter()
        self._seen: Counter[bytes] = Counter()  # body digest → arrivals
        self._requests = 0
        self._last_fault: int | None = None  # the number of the last request that met a fault
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._http = httpx.Client(timeout=120)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                proxy._forward(self, b"")

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                verdict = proxy._judge(body)
                if verdict is Verdict.FAIL:
                    proxy._answer(
                        self, 503, "injected_unavailable", "The proxy failed this request on purpose"
                    )
                elif verdict is Verdict.STALL:
                    proxy._closing.wait(proxy.plan.stall_s)
                    self.close_connection = True  # no answer at all: the client has given up by now
                else:
                    proxy._forward(self, body)

            def log_message(self, *_: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="faulty-proxy", daemon=True)
        self._thread.start()

    def _judge(self, body: bytes) -> Verdict:
        key = hashlib.sha256(body).digest()
        with self._lock:
            self._seen[key] += 1
            self._requests += 1
            verdict = self.plan.verdict(body, self._seen[key])
            if verdict is not Verdict.FORWARD:
                if self._last_fault is not None and self._requests - self._last_fault <= self.plan.spacing:
                    verdict = Verdict.FORWARD
                else:
                    self._last_fault = self._requests
            self.counts[verdict] += 1
        return verdict

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() in {"content-type", "accept"}}
        try:
            response = self._http.request(
                request.command, self.upstream + request.path, content=body or None, headers=headers
            )
        except httpx.TransportError as exc:
            self._answer(request, 502, "upstream_unreachable", f"{type(exc).__name__}: {exc}")
            return
        self._send(request, response.status_code, response.headers.get("content-type"), response.content)

    def _answer(self, request: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(request, status, "application/json", body)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, content_type: str | None, body: bytes) -> None:
        try:
            request.send_response(status)
            if content_type:
                request.send_header("Content-Type", content_type)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (its own timeout); nothing to tell it

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()  # releases stalled requests
        self._httpd.shutdown()
        self._httpd.server_close()
        self._http.close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
