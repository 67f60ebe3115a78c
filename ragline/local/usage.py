"""API keys and usage plans for the local gateway, with API Gateway's semantics: each key is bound to
a tier (ragline.tiers); a token bucket per key (refilled at the tier's rate, `burst` deep) answers
`throttled`, and a count per key and UTC day answers `quota_exceeded`. Throttled calls do not count
against the quota.

Hand-written, not the `limits` package: `limits` offers fixed and moving windows, whose admissions
differ from a token bucket's (a burst at a window's edge, no steady refill), and the point of the
local gateway is that clients meet the limits API Gateway enforces."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ragline.local.privatefile import read_json, secret_digest, write_private_json
from ragline.tiers import DEFAULT_TIER, Tier, load_tiers

KEYS_FILE = "api-keys.json"
API_KEY_HEADER = "x-api-key"


class UnknownTier(ValueError):
    pass


@dataclass(frozen=True)
class Admission:
    allowed: bool
    code: str | None = None  # "throttled" or "quota_exceeded" when refused
    retry_after_s: int = 0


@dataclass
class _Usage:
    tokens: float
    refilled_at: float
    day: str
    used_today: int = 0


class ApiKeys:
    """Keys (stored hashed under the state directory) and each key's usage, in this process."""

    def __init__(
        self,
        state_dir: Path,
        tiers: Mapping[str, Tier] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._path = Path(state_dir) / KEYS_FILE
        self.tiers = dict(tiers if tiers is not None else load_tiers())
        self._clock, self._now = clock, now
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def create(self, tier: str = DEFAULT_TIER, *, name: str = "") -> str:
        """A new key bound to `tier`; only its hash is stored, so it is shown once."""
        if tier not in self.tiers:
            raise UnknownTier(f"unknown tier {tier!r}; the tiers are {', '.join(self.tiers)}")
        key = secrets.token_urlsafe(30)  # API Gateway keys are at least 20 characters
        keys = self._keys()
        keys[secret_digest(key)] = {"tier": tier, "name": name, "created": self._now().isoformat()}
        write_private_json(self._path, keys)
        return key

    def tier_of(self, key: str) -> Tier | None:
        """The key's tier, or None for an unknown key (or one whose tier is no longer configured)."""
        entry = self._keys().get(secret_digest(key))
        return self.tiers.get(entry["tier"]) if entry else None

    def admit(self, key: str, tier: Tier) -> Admission:
        """Take one request from the key's quota and bucket, or say why not and for how long."""
        digest, now, today = secret_digest(key), self._clock(), self._now()
        day = today.date().isoformat()
        with self._lock:
            usage = self._usage.get(digest)
            if usage is None:
                usage = self._usage[digest] = _Usage(tokens=tier.burst, refilled_at=now, day=day)
            if usage.day != day:
                usage.day, usage.used_today = day, 0
            usage.tokens = min(tier.burst, usage.tokens + (now - usage.refilled_at) * tier.rate_per_second)
            usage.refilled_at = now
            if usage.used_today >= tier.daily_quota:
                midnight = datetime.combine(today.date() + timedelta(days=1), datetime.min.time(), UTC)
                return Admission(
                    False, "quota_exceeded", max(1, math.ceil((midnight - today).total_seconds()))
                )
            if usage.tokens < 1:
                wait = (1 - usage.tokens) / tier.rate_per_second
                return Admission(False, "throttled", max(1, math.ceil(wait)))
            usage.tokens -= 1
            usage.used_today += 1
            return Admission(True)

    def _keys(self) -> dict[str, dict[str, str]]:
        # Read on every call: `ragline api-key` adds keys while `ragline dev` runs.
        return read_json(self._path)
