"""One local platform for the whole end-to-end session: `ragline dev` in its own process on free
ports, stopped with Ctrl-C (SIGINT) at the end."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from ragline.local.harness import RunningPlatform, running_platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Iterator[RunningPlatform]:
    # Webhook tests receive on 127.0.0.1: the test-only setting that allows it, for this platform alone.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAGLINE_WEBHOOK_ALLOW_LOOPBACK", "true")
        env.setenv("RAGLINE_WEBHOOK_BACKOFF_S", "1")
        with running_platform(tmp_path_factory.mktemp("ragline")) as running:
            yield running
    # Ctrl-C stopped every child: none of their ports still accepts connections.
    assert running.process.returncode == 0
    for name, port in running.ports.items():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{name} still listening after Ctrl-C"


@pytest.fixture(scope="session")
def http(platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.base_url, timeout=60) as client:
        yield client
