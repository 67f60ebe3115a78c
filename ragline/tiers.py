"""The API's tiers: the rate, burst and daily quota an API key is bound to.

Declared once in cdk.json (context key `apiTiers`, camelCase as CDK's context is); the CDK app makes a
usage plan of each (API Gateway: throttle rate/burst, quota per DAY) and the local gateway enforces
the same numbers, so clients can be tested against the limits they will meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ragline.cdkjson import CDK_JSON, cdk_context

CONTEXT_KEY = "apiTiers"


class Tier(BaseModel):
    """One usage plan: a token bucket (refilled at `rate_per_second`, `burst` deep) and a daily quota."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")
    rate_per_second: float = Field(gt=0, description="Steady-state requests per second")
    burst: int = Field(ge=1, description="Requests that may arrive at once (the bucket's depth)")
    daily_quota: int = Field(ge=1, description="Requests per UTC day")


DEFAULT_TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier(name="free", rate_per_second=2, burst=5, daily_quota=1_000),
        Tier(name="pro", rate_per_second=20, burst=40, daily_quota=100_000),
        Tier(name="enterprise", rate_per_second=100, burst=200, daily_quota=5_000_000),
    )
}
# The tier of keys made without one (`ragline api-key` with no --tier).
DEFAULT_TIER = "free"


def tiers_from_context(value: Mapping[str, Any] | None) -> dict[str, Tier]:
    """`apiTiers` as cdk.json spells it ({name: {ratePerSecond, burst, dailyQuota}}); absent: the defaults."""
    if value is None:
        return dict(DEFAULT_TIERS)
    if not value:
        raise ValueError(f"{CONTEXT_KEY} is empty: configure at least one tier (or remove the key)")
    return {name: Tier.model_validate({**spec, "name": name}) for name, spec in value.items()}


def load_tiers(cdk_json: Path = CDK_JSON) -> dict[str, Tier]:
    """The tiers the repository's cdk.json declares (the defaults where it declares none)."""
    return tiers_from_context(cdk_context(cdk_json).get(CONTEXT_KEY))
