"""Starts `ragline dev` as a separate process on free ports and stops it with Ctrl-C (SIGINT), as a
person would; and a single model server (`ModelServer`) the same way. Used by the tests and the
benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ragline.local.idp import LocalIdentityProvider


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RunningPlatform:
    base_url: str
    state_dir: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes]
    log: Path

    def token(self, user: str, groups: list[str], tenant: str | None = None) -> str:
        return LocalIdentityProvider(self.state_dir).issue(user, groups, tenant=tenant)


@contextmanager
def running_platform(state_dir: Path, ready_timeout_s: float = 240) -> Iterator[RunningPlatform]:
    ports = {name: free_port() for name in ("port", "lambda-port", "moto-port", "embedding-port", "llm-port")}
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "ragline-dev.out"
    command = [sys.executable, "-m", "ragline.cli", "--state-dir", str(state_dir), "dev"]
    command += [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    base_url = f"http://127.0.0.1:{ports['port']}"
    # A SIGTERM (a CI timeout, `timeout`, `kill`) would end this process without running the
    # cleanup below and leave the platform running: turn it into SystemExit while it is up.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"ragline dev exited with {process.returncode}:\n{log.read_text()[-4000:]}"
                )
            try:
                if httpx.get(base_url + "/_local/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ragline dev not ready in {ready_timeout_s}s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield RunningPlatform(base_url, state_dir, ports, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


REPO_ROOT = Path(__file__).resolve().parents[2]


class ModelServer:
    """`sagemaker/<model>/serve.py` as a child process on a free port. The port stays the server's, so
    `stop()` then `start()` brings it back at the same URL (outage tests). `env` is added to this
    process's environment, without the variables that would pick another model or port."""

    def __init__(self, model: str, log: Path, *, env: dict[str, str] | None = None) -> None:
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log
        self._env = env or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self, startup_s: float = 180) -> str:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "WARNING"}
        for variable in ("MODEL_PATH", "MODEL_ID", "MODEL_NAME", "SAGEMAKER_BIND_TO_PORT"):
            env.pop(variable, None)
        script = REPO_ROOT / "sagemaker" / self.model / "serve.py"
        with self._log.open("ab") as output:
            self._process = subprocess.Popen(
                [sys.executable, str(script), "--port", str(self.port)],
                env=env | self._env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + startup_s
        with httpx.Client(timeout=1) as http:  # one client: each new one loads the CA bundle (0.1 s of CPU)
            while True:
                if self._process.poll() is not None:
                    log = self._log.read_text(errors="replace")[-3000:]
                    self._process = None
                    raise RuntimeError(f"the {self.model} server exited while starting:\n{log}")
                try:
                    if http.get(f"{self.url}/ping").status_code == 200:
                        return self.url
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"the {self.model} server did not answer /ping within {startup_s:.0f}s"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
