import time

import jwt
import pytest

from ragline.local.idp import AUDIENCE, ISSUER, LocalIdentityProvider


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
