"""Default connections for the endpoint clients, built only when the caller passes none."""

from __future__ import annotations

from typing import Any

import httpx
from botocore.config import Config

from ragline.aws import client
from ragline.settings import Settings


def runtime_client_for(settings: Settings) -> Any:
    """A `sagemaker-runtime` client: ragline.aws's retries, the read timeout of `endpoint_timeout_s`."""
    return client("sagemaker-runtime", settings, config=Config(read_timeout=settings.endpoint_timeout_s))


def http_client_for(settings: Settings) -> httpx.Client:
    return httpx.Client(timeout=settings.endpoint_timeout_s)
