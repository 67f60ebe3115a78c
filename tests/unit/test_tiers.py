"""API tiers from cdk.json, and the scope every route of the topology declares."""

import json

import pytest
from pydantic import ValidationError

from ragline.tiers import CONTEXT_KEY, DEFAULT_TIERS, load_tiers, tiers_from_context
from ragline.topology import SCOPES, TOPOLOGY, RouteSpec


def test_tiers_are_read_from_the_cdk_json_context(tmp_path):
    cdk_json = tmp_path / "cdk.json"
    tiers = {"gold": {"ratePerSecond": 7.5, "burst": 9, "dailyQuota": 1234}}
    cdk_json.write_text(json.dumps({"context": {CONTEXT_KEY: tiers}}))
    (gold,) = load_tiers(cdk_json).values()
    assert (gold.name, gold.rate_per_second, gold.burst, gold.daily_quota) == ("gold", 7.5, 9, 1234)


def test_without_the_key_the_defaults_apply(tmp_path):
    (tmp_path / "cdk.json").write_text(json.dumps({"context": {}}))
    assert load_tiers(tmp_path / "cdk.json") == DEFAULT_TIERS
    assert set(DEFAULT_TIERS) == {"free", "pro", "enterprise"}


@pytest.mark.parametrize(
    "spec",
    [
        {"ratePerSecond": 0, "burst": 1, "dailyQuota": 1},
        {"ratePerSecond": 1, "burst": 0, "dailyQuota": 1},
        {"ratePerSecond": 1, "burst": 1},
        {"ratePerSecond": 1, "burst": 1, "dailyQuota": 1, "period": "WEEK"},
    ],
)
def test_invalid_tiers_are_refused(spec):
    with pytest.raises(ValidationError):
        tiers_from_context({"t": spec})


def test_an_empty_tier_list_is_refused():
    with pytest.raises(ValueError, match="at least one tier"):
        tiers_from_context({})


def test_the_repositorys_cdk_json_declares_valid_tiers():
    assert load_tiers()  # raises on a malformed apiTiers


def test_every_route_declares_one_of_the_platforms_scopes():
    routes = [r for f in TOPOLOGY.functions for r in f.routes]
    assert routes and all(r.scope in SCOPES for r in routes)
    # Reading documents never needs the grant to write them.
    assert "documents:write" not in {r.scope for r in routes if r.method == "GET"}


def test_a_route_is_found_by_method_and_path_whatever_its_scope():
    assert RouteSpec("POST", "/v1/documents") in TOPOLOGY.function("ingest-api").routes
    with pytest.raises(ValueError, match="unknown scope"):
        RouteSpec("GET", "/v1/x", "admin")
