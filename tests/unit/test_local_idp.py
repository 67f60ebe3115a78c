import time

import jwt
import pytest

from ragline.contracts import Principal
from ragline.identity import principal_from_claims, scopes_from_claims
from ragline.local.idp import (
    AUDIENCE,
    CLIENTS_FILE,
    ISSUER,
    InvalidClient,
    InvalidScope,
    LocalIdentityProvider,
)
from ragline.topology import SCOPES, oauth_scope


@pytest.fixture
def idp(tmp_path):
    return LocalIdentityProvider(tmp_path)


def test_round_trip_and_key_persisted(idp, tmp_path):
    token = idp.issue("alice", ["engineering"], tenant="acme")
    claims = LocalIdentityProvider(tmp_path).verify(token)  # a new instance reads the same key
    assert claims["sub"] == "alice" and claims["cognito:groups"] == ["engineering"]
    assert claims["custom:tenant"] == "acme"


def test_expired_token_is_rejected(idp):
    with pytest.raises(jwt.ExpiredSignatureError):
        idp.verify(idp.issue("alice", ttl_s=-10))


def test_token_signed_by_another_key_is_rejected(idp, tmp_path):
    other = LocalIdentityProvider(tmp_path / "other")
    with pytest.raises(jwt.InvalidTokenError):
        idp.verify(other.issue("mallory", ["engineering"]))


def test_tampered_payload_is_rejected(idp):
    header, payload, signature = idp.issue("alice", ["x"]).split(".")
    forged = jwt.utils.base64url_encode(b'{"sub":"alice","cognito:groups":["admin"]}').decode()
    with pytest.raises(jwt.InvalidTokenError):
        idp.verify(f"{header}.{forged}.{signature}")


@pytest.mark.parametrize("claim,value", [("aud", "someone-else"), ("iss", "urn:elsewhere")])
def test_wrong_audience_or_issuer_is_rejected(idp, claim, value):
    now = int(time.time())
    claims = {"sub": "a", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, claim: value}
    token = jwt.encode(claims, idp._key, algorithm="RS256", headers={"kid": idp.kid})
    with pytest.raises(jwt.InvalidTokenError):
        idp.verify(token)


def test_tokens_carry_the_scopes_as_cognito_access_tokens_do(idp):
    everything = idp.verify(idp.issue("alice"))
    assert set(everything["scope"].split()) == {oauth_scope(s) for s in SCOPES}
    narrowed = idp.verify(idp.issue("alice", scopes=["search", "ragline/answers"]))
    assert narrowed["scope"] == "ragline/answers ragline/search"
    assert scopes_from_claims(narrowed) == {"answers", "search"}


@pytest.mark.parametrize("scopes", [["admin"], [], ["other/search"]])
def test_unknown_or_no_scopes_are_refused(idp, scopes):
    with pytest.raises(InvalidScope):
        idp.issue("alice", scopes=scopes)


def test_machine_clients_keep_only_a_hash_of_their_secret(idp, tmp_path):
    client_id, secret = idp.register_client("bot", ["search"], tenant="acme")
    assert secret not in (tmp_path / CLIENTS_FILE).read_text()
    claims = LocalIdentityProvider(tmp_path).verify(
        LocalIdentityProvider(tmp_path).client_credentials(client_id, secret)
    )
    assert claims["sub"] == client_id and claims["scope"] == "ragline/search"
    assert claims["custom:tenant"] == "acme"
    with pytest.raises(InvalidScope):
        idp.client_credentials(client_id, secret, ["documents:write"])
    with pytest.raises(InvalidClient):
        idp.client_credentials(client_id, "guess")


def test_a_machine_token_carries_its_groups_as_the_deployed_trigger_writes_them(idp):
    client_id, secret = idp.register_client("indexer", ["search"], groups=["ops", "eng"], tenant="acme")
    claims = idp.verify(idp.client_credentials(client_id, secret))
    assert "cognito:groups" not in claims  # Cognito gives client-credentials tokens none
    assert claims["ragline:groups"] == "eng ops"
    assert principal_from_claims(claims) == Principal(user_id=client_id, groups={"eng", "ops"}, tenant="acme")
    bare_id, bare_secret = idp.register_client("bare", ["search"])
    bare = idp.verify(idp.client_credentials(bare_id, bare_secret))
    assert "ragline:groups" not in bare and principal_from_claims(bare).groups == frozenset()
