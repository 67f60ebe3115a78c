"""The local identity provider: an RSA key under the state directory, tokens shaped like Cognito
ID tokens, and the JWKS the local gateway verifies them against (as the Cognito authorizer does)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ragline.identity import GROUPS_CLAIM, TENANT_CLAIM

ISSUER = "urn:ragline:local-idp"
AUDIENCE = "ragline-local"
KEY_FILE = "signing-key.pem"
ALGORITHM = "RS256"


class LocalIdentityProvider:
    def __init__(self, state_dir: Path) -> None:
        path = Path(state_dir) / KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            path.write_bytes(pem)
            path.chmod(0o600)
        self._key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        public = self._key.public_key()
        self.kid = uuid.uuid5(uuid.NAMESPACE_OID, public.public_numbers().n.to_bytes(256, "big").hex()).hex
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        self.jwks: dict[str, Any] = {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}
        self._keyset = jwt.PyJWKSet.from_dict(self.jwks)

    def issue(
        self, user: str, groups: Iterable[str] = (), *, tenant: str | None = None, ttl_s: int = 3600
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user,
            "cognito:username": user,
            GROUPS_CLAIM: sorted(groups),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "token_use": "id",
            "iat": now,
            "exp": now + ttl_s,
        }
        if tenant:
            claims[TENANT_CLAIM] = tenant
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def verify(self, token: str) -> Mapping[str, Any]:
        """Signature (by kid from the JWKS), issuer, audience and expiry; raises jwt.InvalidTokenError."""
        kid = jwt.get_unverified_header(token).get("kid")
        try:
            key = self._keyset[kid]
        except KeyError as exc:
            raise jwt.InvalidTokenError("unknown signing key") from exc
        return jwt.decode(
            token,
            key.key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
