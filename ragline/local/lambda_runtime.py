"""Calling handlers the way Lambda does: the handler path from the topology, a context object with
the attributes Powertools reads, one invocation at a time per function (Lambda runs one event per
execution environment; the local platform has one environment per function)."""

from __future__ import annotations

import importlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ragline.topology import FunctionSpec, physical_name


@dataclass
class LocalLambdaContext:
    function_name: str
    memory_limit_in_mb: int
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_s * 1000


def load(handler_path: str) -> Callable[[dict[str, Any], Any], Any]:
    module, _, attribute = handler_path.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


class LocalFunction:
    def __init__(
        self, spec: FunctionSpec, handler: Callable[[dict[str, Any], Any], Any] | None = None
    ) -> None:
        self.spec = spec
        self.name = physical_name(spec.name)
        self._handler = handler or load(spec.handler)
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        context = LocalLambdaContext(self.name, self.spec.memory_mb, self.spec.timeout_s)
        with self._lock:
            return self._handler(event, context)
