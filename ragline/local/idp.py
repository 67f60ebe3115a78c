"""The local identity provider: an RSA key under the state directory, tokens shaped like Cognito
access tokens (with the caller's groups and tenant in the claims the deployed pool's pre-token
trigger gives people and machines), and the JWKS the local gateway verifies them against (as the
Cognito authorizer does).

Every token carries OAuth scopes (topology.SCOPES): people those `api.peopleScopes` in cdk.json gives
their groups (ragline.scopes), as the deployed trigger adds them; machines register a client
(`ragline client`) with the scopes it may ask for and get tokens with the client-credentials grant
at the gateway's /oauth2/token, as from a Cognito domain."""

from __future__ import annotations

import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ragline.identity import CLIENT_ID_CLAIM, GROUPS_CLAIM, MACHINE_GROUPS_CLAIM, SCOPE_CLAIM, TENANT_CLAIM
from ragline.local.privatefile import read_json, secret_digest, write_private, write_private_json
from ragline.scopes import PeopleScopes, load_people_scopes
from ragline.topology import SCOPES, oauth_scope

ISSUER = "urn:ragline:local-idp"
AUDIENCE = "ragline-local"
KEY_FILE = "signing-key.pem"
CLIENTS_FILE = "clients.json"
ALGORITHM = "RS256"
# The user pool's app client for people (CLIs, SPAs): it may grant every scope.
USER_CLIENT_ID = "ragline-local-app"


class InvalidClient(Exception):
    """Unknown client id or wrong secret (OAuth `invalid_client`)."""


class InvalidScope(ValueError):
    """A scope the client may not have, or none of the platform's (OAuth `invalid_scope`)."""


@dataclass(frozen=True)
class AppClient:
    """A machine client: its secret is kept hashed; groups and tenant go into its tokens."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    secret_sha256: str
    groups: tuple[str, ...] = ()
    tenant: str | None = None


def _granted(
    requested: Iterable[str] | None, allowed: Iterable[str], whose: str = "this client"
) -> tuple[str, ...]:
    """Requested scopes (all allowed ones when None), each one allowed; OAuth names are accepted too."""
    allowed = tuple(allowed)
    if requested is None:
        return tuple(sorted(allowed))
    names = {scope.removeprefix(oauth_scope("")) for scope in requested}
    if unknown := sorted(names - set(SCOPES)):
        raise InvalidScope(f"unknown scope(s) {', '.join(unknown)}; the platform's are {', '.join(SCOPES)}")
    if denied := sorted(names - set(allowed)):
        raise InvalidScope(f"scope(s) {', '.join(denied)} not allowed for {whose}")
    if not names:
        raise InvalidScope("no scope requested")
    return tuple(sorted(names))


class LocalIdentityProvider:
    def __init__(self, state_dir: Path, people_scopes: PeopleScopes | None = None) -> None:
        self._people_scopes = people_scopes if people_scopes is not None else load_people_scopes()
        self._clients_path = Path(state_dir) / CLIENTS_FILE
        path = Path(state_dir) / KEY_FILE
        if not path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private(path, pem)
        self._key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        public = self._key.public_key()
        self.kid = uuid.uuid5(uuid.NAMESPACE_OID, public.public_numbers().n.to_bytes(256, "big").hex()).hex
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        self.jwks: dict[str, Any] = {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}
        self._keyset = jwt.PyJWKSet.from_dict(self.jwks)

    def issue(
        self,
        user: str,
        groups: Iterable[str] = (),
        *,
        tenant: str | None = None,
        ttl_s: int = 3600,
        scopes: Iterable[str] | None = None,
    ) -> str:
        """A person's token from the user app client: the scopes `api.peopleScopes` gives their groups,
        or those of them `scopes` names."""
        groups = tuple(groups)
        granted = _granted(scopes, self._people_scopes.for_groups(groups), f"{user}'s groups")
        claims = {"cognito:username": user, GROUPS_CLAIM: sorted(groups)}
        return self._sign(user, USER_CLIENT_ID, granted, tenant, ttl_s, claims)

    def register_client(
        self, name: str, scopes: Iterable[str], *, groups: Iterable[str] = (), tenant: str | None = None
    ) -> tuple[str, str]:
        """A machine client allowed `scopes`; returns (client id, secret). The secret is shown once."""
        allowed = _granted(scopes, SCOPES)
        client_id, secret = secrets.token_hex(13), secrets.token_urlsafe(32)
        client = AppClient(
            client_id=client_id,
            name=name,
            scopes=allowed,
            secret_sha256=secret_digest(secret),
            groups=tuple(sorted(groups)),
            tenant=tenant,
        )
        clients = self._clients()
        clients[client_id] = client
        write_private_json(self._clients_path, {k: asdict(v) for k, v in clients.items()})
        return client_id, secret

    def client_credentials(
        self, client_id: str, secret: str, scopes: Iterable[str] | None = None, *, ttl_s: int = 3600
    ) -> str:
        """The client-credentials grant: raises InvalidClient or InvalidScope."""
        client = self._clients().get(client_id)
        digest = secret_digest(secret)
        # Compare even for an unknown id, so timing does not tell which ids exist.
        expected = client.secret_sha256 if client else secret_digest("")
        if not hmac.compare_digest(digest, expected) or client is None:
            raise InvalidClient("unknown client or wrong secret")
        granted = _granted(scopes, client.scopes)
        # As the V3_0 trigger writes a machine's groups: its own claim, space-separated, absent if none.
        claims = {MACHINE_GROUPS_CLAIM: " ".join(client.groups)} if client.groups else {}
        return self._sign(client_id, client_id, granted, client.tenant, ttl_s, claims)

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

    def _sign(
        self,
        subject: str,
        client_id: str,
        scopes: Iterable[str],
        tenant: str | None,
        ttl_s: int,
        extra: Mapping[str, Any],
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            **extra,
            "sub": subject,
            SCOPE_CLAIM: " ".join(oauth_scope(scope) for scope in scopes),
            CLIENT_ID_CLAIM: client_id,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "token_use": "access",
            "iat": now,
            "exp": now + ttl_s,
        }
        if tenant:
            claims[TENANT_CLAIM] = tenant
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def _clients(self) -> dict[str, AppClient]:
        # Read on every call: `ragline client` registers clients while `ragline dev` runs.
        return {
            client_id: AppClient(**{**spec, "scopes": tuple(spec["scopes"]), "groups": tuple(spec["groups"])})
            for client_id, spec in read_json(self._clients_path).items()
        }
