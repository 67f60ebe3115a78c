"""The local API Gateway: verifies bearer tokens as the Cognito authorizer does, turns HTTP requests
into REST API proxy events for the same handlers Lambda runs, and serves the streaming answers app
with the request context the Lambda Web Adapter would forward. Routes come from ragline.topology.

A second small app emulates the Lambda Invoke API, so functions that invoke other functions with
boto3 (context → retrieve) run unchanged against it."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ragline.contracts import ErrorBody, ErrorResponse
from ragline.local.idp import LocalIdentityProvider
from ragline.local.lambda_runtime import LocalFunction

STAGE = "local"
REQUEST_CONTEXT_HEADER = "x-amzn-request-context"


class AuthError(Exception):
    pass


def error(status: int, code: str, message: str) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


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


def lambda_route(idp: LocalIdentityProvider, function: LocalFunction, method: str, resource: str) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            claims = authorize(idp, request.headers)
        except AuthError as exc:
            return error(401, "unauthorized", str(exc))
        event = proxy_event(request, resource, claims, await request.body())
        return proxy_response(await run_in_threadpool(function.invoke, event))

    return Route(resource, endpoint, methods=[method])


class StreamingRoute:
    """An ASGI app behind the authorizer, as the Lambda Web Adapter sees requests: the verified
    claims arrive in the request context header; a client-sent copy of that header is dropped."""

    def __init__(self, idp: LocalIdentityProvider, app: ASGIApp, resource: str) -> None:
        self._idp, self._app, self._resource = idp, app, resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            claims = authorize(self._idp, request.headers)
        except AuthError as exc:
            await error(401, "unauthorized", str(exc))(scope, receive, send)
            return
        context = json.dumps(request_context(request, self._resource, claims)).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_CONTEXT_HEADER.encode()]
        await self._app(
            {**scope, "headers": [*headers, (REQUEST_CONTEXT_HEADER.encode(), context)]}, receive, send
        )


def create_gateway(
    idp: LocalIdentityProvider,
    routes: list[tuple[str, str, LocalFunction]],
    streaming: list[tuple[str, str, ASGIApp]],
) -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def jwks(_: Request) -> Response:
        return JSONResponse(idp.jwks)

    table = [
        Route("/_local/health", health, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        *(lambda_route(idp, function, method, path) for method, path, function in routes),
        *(Route(path, StreamingRoute(idp, app, path), methods=[method]) for method, path, app in streaming),
    ]
    return Starlette(routes=table)


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
