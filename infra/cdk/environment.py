"""Lambda environment variable names, derived from ragline.settings so that they cannot drift.

`var("raw_bucket")` -> "RAGLINE_RAW_BUCKET"; a field Settings does not have is an error at synth time.
"""

from __future__ import annotations

from ragline.settings import Settings

PREFIX = Settings.model_config.get("env_prefix", "")


def var(field: str) -> str:
    if field not in Settings.model_fields:
        raise KeyError(f"ragline.settings.Settings has no field {field!r}")
    return f"{PREFIX}{field}".upper()


def env(**values: str) -> dict[str, str]:
    """env(raw_bucket=bucket.bucket_name) -> {"RAGLINE_RAW_BUCKET": ...}"""
    return {var(field): value for field, value in values.items()}
