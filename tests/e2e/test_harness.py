"""The harness never leaves a platform behind, even when its own process is terminated."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

HOLDER = """
import json, sys, time
from pathlib import Path
from ragline.local.harness import running_platform
with running_platform(Path(sys.argv[1])) as platform:
    print(json.dumps(platform.ports), flush=True)
    time.sleep(600)
"""


def test_sigterm_to_the_harness_process_stops_the_platform(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "state")], stdout=subprocess.PIPE, text=True
    )
    ports = json.loads(holder.stdout.readline())  # the platform is up
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    listening = dict(ports)
    while listening and time.monotonic() < deadline:
        for name, port in list(listening.items()):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    del listening[name]
        time.sleep(0.2)
    assert not listening, f"still listening after SIGTERM: {listening}"
