"""boto3 clients built one way: standard retry mode, the local endpoint when there is one.

Built once per process by the wiring modules and passed into adapters' constructors."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from ragline.settings import Settings

_RETRIES = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=60)


def client(
    service: str, settings: Settings, *, endpoint_url: str | None = None, config: Config | None = None
) -> Any:
    return boto3.client(
        service,
        region_name=settings.aws_region,
        endpoint_url=endpoint_url or settings.aws_endpoint_url,
        config=_RETRIES.merge(config) if config else _RETRIES,
    )
