"""The local API Gateway: verifies bearer tokens as the Cognito authorizer does, turns HTTP requests
into REST API proxy events for the same handlers Lambda runs, and serves the streaming answers app
with the request context the Lambda Web Adapter would forward. Routes come from ragline.topology.

In front of every route, in this order: the payload limit (413), the token (401), the route's scope
(401 `unauthorized`, as API Gateway answers a token without the method's scope), the API key (403
`invalid_api_key`; required when the platform is started to require one, checked whenever one is
sent) and its tier's rate, burst and daily quota (429
`throttled` / `quota_exceeded` with Retry-After). /oauth2/token serves the client-credentials grant,
as a Cognito domain does.

A second small app emulates the Lambda Invoke API, so functions that invoke other functions with
boto3 (context → retrieve) run unchanged against it."""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import jwt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ragline.contracts import ErrorBody, ErrorResponse
from ragline.identity import scopes_from_claims
from ragline.local.idp import InvalidClient, InvalidScope, LocalIdentityProvider
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.usage import API_KEY_HEADER, ApiKeys
from ragline.topology import TOPOLOGY

STAGE = "local"
REQUEST_CONTEXT_HEADER = "x-amzn-request-context"
# API Gateway's REST payload quota (10 MB); larger requests never reach a function.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
TOKEN_PATH = "/oauth2/token"
# The lifetime of client-credentials tokens, as a Cognito app client's default access token validity.
TOKEN_TTL_S = 3600


class AuthError(Exception):
    pass


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=dict(headers or {}))


class Door:
    """What stands between a request and a route: payload limit, token, scope, API key, usage plan."""

    def __init__(
        self,
        idp: LocalIdentityProvider,
        *,
        api_keys: ApiKeys | None = None,
        require_api_key: bool = False,
        max_body_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if require_api_key and api_keys is None:
            raise ValueError("require_api_key needs the api_keys that hold the keys")
        self.idp, self.api_keys, self.require_api_key = idp, api_keys, require_api_key
        self.max_body_bytes = max_body_bytes

    async def read_body(self, request: Request) -> bytes | Response:
        """The body, or a 413 as soon as it outgrows the limit (without reading the rest)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return self._too_large()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                return self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def admit(self, request: Request, scope: str) -> dict[str, str] | Response:
        """The authorizer's claims, or the response that refuses the request."""
        try:
            claims = authorize(self.idp, request.headers)
        except AuthError as exc:
            return error(401, "unauthorized", str(exc))
        if scope not in scopes_from_claims(claims):
            # API Gateway's Cognito authorizer answers 401 when the scopes do not match: the same here,
            # with a message that says which scope (AWS's body is the generic UNAUTHORIZED one).
            return error(
                401, "unauthorized", f"The token does not grant the {scope!r} scope this route needs."
            )
        key = request.headers.get(API_KEY_HEADER)
        if key is None and not self.require_api_key:
            return claims
        tier = self.api_keys.tier_of(key) if key and self.api_keys else None
        if tier is None:
            return error(403, "invalid_api_key", f"A valid {API_KEY_HEADER} header is required.")
        admission = self.api_keys.admit(key, tier)
        if not admission.allowed:
            message = "Too many requests" if admission.code == "throttled" else "The daily quota is used up"
            return error(
                429,
                admission.code,
                f"{message} for the {tier.name} tier.",
                {"Retry-After": str(admission.retry_after_s)},
            )
        return claims

    async def check(self, request: Request, scope: str) -> tuple[bytes, dict[str, str]] | Response:
        """(body, claims), or the response that refuses the request: the body first, so an oversized
        request is refused (413) before its token is looked at."""
        body = await self.read_body(request)
        if isinstance(body, Response):
            return body
        claims = self.admit(request, scope)
        if isinstance(claims, Response):
            return claims
        return body, claims

    def _too_large(self) -> Response:
        return error(413, "payload_too_large", f"The request body exceeds {self.max_body_bytes} bytes.")


def authorize(idp: LocalIdentityProvider, headers: Mapping[str, str]) -> dict[str, str]:
    """The claims as API Gateway's Cognito authorizer hands them on: every value a string."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Missing bearer token.")
    try:
        claims = idp.verify(token)
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("The token has expired.") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"The token is not valid: {exc}.") from exc
    return {k: ",".join(v) if isinstance(v, list) else str(v) for k, v in claims.items()}


def request_context(request: Request, resource: str, claims: dict[str, str]) -> dict[str, Any]:
    return {
        "resourcePath": resource,
        "httpMethod": request.method,
        "path": f"/{STAGE}{request.url.path}",
        "stage": STAGE,
        "requestId": str(uuid.uuid4()),
        "requestTimeEpoch": int(time.time() * 1000),
        "accountId": "000000000000",
        "apiId": "local",
        "protocol": "HTTP/1.1",
        "domainName": request.url.netloc,
        "identity": {
            "sourceIp": request.client.host if request.client else "127.0.0.1",
            "userAgent": request.headers.get("user-agent"),
        },
        "authorizer": {"claims": claims},
    }


def proxy_event(request: Request, resource: str, claims: dict[str, str], body: bytes) -> dict[str, Any]:
    multi_headers: dict[str, list[str]] = {}
    for key, value in request.headers.items():
        multi_headers.setdefault(key, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        multi_query.setdefault(key, []).append(value)
    text: str | None
    try:
        text, encoded = (body.decode() if body else None), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {
        "resource": resource,
        "path": request.url.path,
        "httpMethod": request.method,
        "headers": {k: v[-1] for k, v in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(request.path_params) or None,
        "stageVariables": None,
        "requestContext": request_context(request, resource, claims),
        "body": text,
        "isBase64Encoded": encoded,
    }


def proxy_response(result: Mapping[str, Any]) -> Response:
    body = result.get("body") or ""
    content = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    headers = dict(result.get("headers") or {})
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key] = ", ".join(values)
    headers.pop("content-length", None)
    headers.pop("Content-Length", None)
    return Response(content=content, status_code=int(result["statusCode"]), headers=headers)


def lambda_route(door: Door, function: LocalFunction, method: str, resource: str, scope: str) -> Route:
    async def endpoint(request: Request) -> Response:
        admitted = await door.check(request, scope)
        if isinstance(admitted, Response):
            return admitted
        body, claims = admitted
        event = proxy_event(request, resource, claims, body)
        return proxy_response(await run_in_threadpool(function.invoke, event))

    return Route(resource, endpoint, methods=[method])


class StreamingRoute:
    """An ASGI app behind the authorizer, as the Lambda Web Adapter sees requests: the verified
    claims arrive in the request context header; a client-sent copy of that header is dropped."""

    def __init__(self, door: Door, app: ASGIApp, resource: str, required_scope: str) -> None:
        self._door, self._app, self._resource, self._scope = door, app, resource, required_scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        admitted = await self._door.check(request, self._scope)
        if isinstance(admitted, Response):
            await admitted(scope, receive, send)
            return
        body, claims = admitted
        context = json.dumps(request_context(request, self._resource, claims)).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_CONTEXT_HEADER.encode()]
        await self._app(
            {**scope, "headers": [*headers, (REQUEST_CONTEXT_HEADER.encode(), context)]},
            _replay(body, receive),
            send,
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body the door already read, then the connection's own messages (a disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def token_endpoint(idp: LocalIdentityProvider) -> Route:
    """POST /oauth2/token (grant_type=client_credentials), with Cognito's request and answer shapes:
    client credentials in HTTP Basic (or the form), `scope` space-separated, OAuth error bodies."""

    def oauth_error(status: int, code: str, description: str) -> JSONResponse:
        return JSONResponse({"error": code, "error_description": description}, status_code=status)

    async def token(request: Request) -> Response:
        if (request.headers.get("content-type") or "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return oauth_error(400, "invalid_request", "Send an application/x-www-form-urlencoded body.")
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "Only client_credentials is supported.")
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return oauth_error(401, "invalid_client", "Malformed Basic credentials.")
        requested = form["scope"].split() if form.get("scope") else None
        try:
            access_token = idp.client_credentials(client_id, secret, requested, ttl_s=TOKEN_TTL_S)
        except InvalidClient as exc:
            return oauth_error(401, "invalid_client", str(exc))
        except InvalidScope as exc:
            return oauth_error(400, "invalid_scope", str(exc))
        return JSONResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": TOKEN_TTL_S})

    return Route(TOKEN_PATH, token, methods=["POST"])


def create_gateway(
    idp: LocalIdentityProvider,
    routes: list[tuple[str, str, LocalFunction]],
    streaming: list[tuple[str, str, ASGIApp]],
    *,
    scopes: Mapping[tuple[str, str], str] | None = None,
    api_keys: ApiKeys | None = None,
    require_api_key: bool = False,
    max_body_bytes: int = MAX_PAYLOAD_BYTES,
) -> Starlette:
    """`scopes`: (method, path) -> scope, the topology's by default; a route without one is an error,
    so no route is ever served unscoped."""
    if scopes is None:
        scopes = {route: scope for route, scope in TOPOLOGY.route_scopes().items() if scope}
    if unscoped := [f"{m} {p}" for m, p, _ in [*routes, *streaming] if (m, p) not in scopes]:
        raise ValueError(f"routes without a scope: {', '.join(unscoped)}")
    door = Door(idp, api_keys=api_keys, require_api_key=require_api_key, max_body_bytes=max_body_bytes)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def jwks(_: Request) -> Response:
        return JSONResponse(idp.jwks)

    table = [
        Route("/_local/health", health, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        token_endpoint(idp),
        *(lambda_route(door, function, m, path, scopes[m, path]) for m, path, function in routes),
        *(
            Route(path, StreamingRoute(door, app, path, scopes[m, path]), methods=[m])
            for m, path, app in streaming
        ),
    ]

    async def not_found(_: Request, exc: Exception) -> Response:
        # API Gateway answers an unknown resource or method alike (MISSING_AUTHENTICATION_TOKEN, 404).
        return error(404, "not_found", "No such route.")

    return Starlette(routes=table, exception_handlers={404: not_found, 405: not_found})


def create_lambda_api(functions: Mapping[str, LocalFunction]) -> Starlette:
    """POST /2015-03-31/functions/{name}/invocations, the RequestResponse form of Lambda Invoke."""

    async def invoke(request: Request) -> Response:
        function = functions.get(request.path_params["name"])
        if function is None:
            return JSONResponse(
                {"Type": "User", "message": f"Function not found: {request.path_params['name']}"},
                status_code=404,
                headers={"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
        payload = json.loads(await request.body() or b"null")
        try:
            result = await run_in_threadpool(function.invoke, payload)
        except Exception as exc:
            return JSONResponse(
                {"errorMessage": str(exc), "errorType": type(exc).__name__},
                headers={"X-Amz-Function-Error": "Unhandled"},
            )
        return JSONResponse(result)

    return Starlette(routes=[Route("/2015-03-31/functions/{name}/invocations", invoke, methods=["POST"])])
