"""Usage plans of local API keys: a token bucket per key and a daily quota, as API Gateway's."""

from datetime import UTC, datetime, timedelta

import pytest

from ragline.local.usage import KEYS_FILE, ApiKeys, UnknownTier
from ragline.tiers import Tier

TIER = Tier(name="t", rate_per_second=1, burst=3, daily_quota=5)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def keys(tmp_path, clock):
    return ApiKeys(tmp_path, {"t": TIER}, clock=clock.monotonic, now=lambda: clock.now)


def test_the_bucket_allows_a_burst_then_refills_at_the_rate(keys, clock):
    key = keys.create("t")
    assert [keys.admit(key, TIER).allowed for _ in range(4)] == [True, True, True, False]
    clock.now += timedelta(seconds=1)
    assert [keys.admit(key, TIER).allowed for _ in range(2)] == [True, False]


def test_throttled_calls_do_not_count_against_the_quota(keys, clock):
    key = keys.create("t")
    for _ in range(10):  # 3 admitted, 7 throttled
        keys.admit(key, TIER)
    clock.now += timedelta(seconds=2)
    assert [keys.admit(key, TIER).code for _ in range(3)] == [None, None, "quota_exceeded"]


def test_keys_are_stored_hashed_and_bound_to_a_configured_tier(keys, tmp_path):
    key = keys.create("t", name="ci")
    assert key not in (tmp_path / KEYS_FILE).read_text() and len(key) >= 20
    assert keys.tier_of(key) == TIER and keys.tier_of(key + "x") is None
    with pytest.raises(UnknownTier):
        keys.create("gold")
