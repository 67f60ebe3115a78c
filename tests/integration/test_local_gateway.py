"""The local gateway: the authorizer's rules, scopes, API keys and usage plans, the payload limit,
the client-credentials token endpoint, the proxy event the handlers get, the streaming route's
request context, and the Lambda Invoke emulator."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from ragline.local.gateway import create_gateway, create_lambda_api
from ragline.local.idp import AUDIENCE, ISSUER, LocalIdentityProvider
from ragline.local.lambda_runtime import LocalFunction
from ragline.local.usage import ApiKeys
from ragline.tiers import Tier
from ragline.topology import TOPOLOGY, FunctionSpec


def echo(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"event": event, "function": context.function_name}),
    }


async def context_echo(scope, receive, send):
    headers = dict(scope["headers"])
    await JSONResponse({"context": json.loads(headers[b"x-amzn-request-context"])})(scope, receive, send)


@pytest.fixture
def idp(tmp_path):
    return LocalIdentityProvider(tmp_path)


SCOPES = {("GET", "/v1/things/{thing_id}"): "documents:read", ("POST", "/v1/stream"): "answers"}


def gateway(idp, **options):
    function = LocalFunction(FunctionSpec(name="echo", context="test", handler="unused"), handler=echo)
    return create_gateway(
        idp,
        [("GET", "/v1/things/{thing_id}", function)],
        [("POST", "/v1/stream", context_echo)],
        scopes=SCOPES,
        **options,
    )


@pytest.fixture
def client(idp):
    return TestClient(gateway(idp))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path,method", [("/v1/things/1", "GET"), ("/v1/stream", "POST")])
def test_missing_token_is_401_with_a_json_error(client, path, method):
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path,method", [("/v1/things/1", "GET"), ("/v1/stream", "POST")])
def test_expired_or_foreign_tokens_are_401(client, idp, tmp_path, path, method):
    expired = idp.issue("alice", ["eng"], ttl_s=-5)
    foreign = LocalIdentityProvider(tmp_path / "elsewhere").issue("alice", ["eng"])
    for token in (expired, foreign, "not-a-jwt"):
        assert client.request(method, path, headers=bearer(token)).status_code == 401


def test_handler_gets_a_rest_proxy_event_with_authorizer_claims(client, idp):
    token = idp.issue("alice", ["engineering", "ops"], tenant="acme")
    response = client.get("/v1/things/42?x=1&x=2", headers=bearer(token))
    assert response.status_code == 200
    event = response.json()["event"]
    assert response.json()["function"] == "ragline-echo"
    assert event["resource"] == "/v1/things/{thing_id}"
    assert event["pathParameters"] == {"thing_id": "42"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"]}
    claims = event["requestContext"]["authorizer"]["claims"]
    # API Gateway hands Cognito claims on as strings
    assert claims["sub"] == "alice" and claims["cognito:groups"] == "engineering,ops"
    assert claims["custom:tenant"] == "acme"


def test_streaming_route_gets_claims_and_drops_a_spoofed_context(client, idp):
    spoof = json.dumps({"authorizer": {"claims": {"sub": "root", "cognito:groups": "admin"}}})
    response = client.post(
        "/v1/stream", headers={**bearer(idp.issue("alice", ["eng"])), "x-amzn-request-context": spoof}
    )
    claims = response.json()["context"]["authorizer"]["claims"]
    assert claims["sub"] == "alice" and claims["cognito:groups"] == "eng"


def test_every_route_of_an_asgi_function_reaches_its_app_behind_the_authorizer(idp):
    """Each route of an ASGI function goes to its one app (as serve_platform wires them from the
    topology), which routes the unchanged path itself: GET /v1/conversations/{id} as POST /v1/answers."""
    from fastapi import FastAPI, Request

    app = FastAPI()

    def context(request: Request) -> dict:
        return json.loads(request.headers["x-amzn-request-context"])

    @app.get("/v1/conversations/{conversation_id}")
    async def conversation(conversation_id: str, request: Request) -> dict:
        return {"conversation_id": conversation_id, "context": context(request)}

    @app.post("/v1/answers")
    async def answers(request: Request) -> dict:
        return {"context": context(request)}

    spec = TOPOLOGY.function("context-answers")
    assert spec.asgi and ("GET", "/v1/conversations/{conversation_id}") in {
        (r.method, r.path) for r in spec.routes
    }
    client = TestClient(create_gateway(idp, [], [(r.method, r.path, app) for r in spec.routes]))

    assert client.get("/v1/conversations/c-1").status_code == 401
    token = bearer(idp.issue("alice", ["eng"], tenant="acme"))
    got = client.get("/v1/conversations/c-1", headers=token).json()
    assert got["conversation_id"] == "c-1"
    assert got["context"]["resourcePath"] == "/v1/conversations/{conversation_id}"
    assert got["context"]["authorizer"]["claims"]["custom:tenant"] == "acme"
    assert client.post("/v1/answers", headers=token).json()["context"]["resourcePath"] == "/v1/answers"
    # No DELETE route: API Gateway answers an unknown method as an unknown resource.
    missing = client.delete("/v1/conversations/c-1", headers=token)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_jwks_publishes_the_verification_key(client, idp):
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert [k["kid"] for k in keys] == [idp.kid] and "d" not in keys[0]  # public part only


def test_lambda_invoke_emulator_works_with_boto3(tmp_path):
    import socket
    import threading
    import time

    import boto3
    import uvicorn

    def double(event, context):
        if "n" not in event:
            raise ValueError("n is required")
        return {"doubled": event["n"] * 2}

    api = create_lambda_api(
        {"ragline-double": LocalFunction(FunctionSpec("double", "t", "unused"), handler=double)}
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        client = boto3.client(
            "lambda",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            endpoint_url=f"http://127.0.0.1:{port}",
        )
        result = client.invoke(FunctionName="ragline-double", Payload=b'{"n": 21}')
        assert json.loads(result["Payload"].read()) == {"doubled": 42}
        failed = client.invoke(FunctionName="ragline-double", Payload=b"{}")
        assert failed["FunctionError"] == "Unhandled"
        assert json.loads(failed["Payload"].read())["errorType"] == "ValueError"
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="ragline-missing", Payload=b"{}")
    finally:
        server.should_exit = True
        thread.join(5)


# ---------------------------------------------------------------------------------------------
# Scopes, the client-credentials grant, API keys and usage plans, the payload limit
# ---------------------------------------------------------------------------------------------


def test_a_token_without_the_routes_scope_is_401_as_in_api_gateway(client, idp):
    searcher = bearer(idp.issue("alice", ["eng"], scopes=["search"]))
    for method, path in (("GET", "/v1/things/1"), ("POST", "/v1/stream")):
        response = client.request(method, path, headers=searcher)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert (
            "documents:read" in response.json()["error"]["message"]
            or "answers" in response.json()["error"]["message"]
        )
    reader = bearer(idp.issue("alice", ["eng"], scopes=["documents:read"]))
    assert client.get("/v1/things/1", headers=reader).status_code == 200
    assert client.post("/v1/stream", headers=reader).status_code == 401


def test_a_token_with_no_scope_claim_is_refused(client, idp):
    now = int(time.time())
    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60}
    unscoped = jwt.encode(claims, idp._key, algorithm="RS256", headers={"kid": idp.kid})
    assert client.get("/v1/things/1", headers=bearer(unscoped)).status_code == 401


def test_every_route_must_have_a_scope(idp):
    function = LocalFunction(FunctionSpec(name="echo", context="test", handler="unused"), handler=echo)
    with pytest.raises(ValueError, match="GET /v1/unscoped"):
        create_gateway(idp, [("GET", "/v1/unscoped", function)], [], scopes=SCOPES)


def client_token(client, client_id, secret, **form):
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", **form},
        headers={"Authorization": f"Basic {basic}"},
    )


def test_client_credentials_grant_issues_tokens_with_a_subset_of_the_clients_scopes(client, idp):
    client_id, secret = idp.register_client("reporter", ["documents:read", "search"], groups=["eng", "ops"])
    granted = client_token(client, client_id, secret, scope="ragline/documents:read")
    assert granted.status_code == 200 and granted.json()["token_type"] == "Bearer"
    token = granted.json()["access_token"]
    claims = client.get("/v1/things/1", headers=bearer(token)).json()["event"]["requestContext"]
    claims = claims["authorizer"]["claims"]
    assert claims["sub"] == client_id and claims["client_id"] == client_id
    assert claims["scope"] == "ragline/documents:read" and claims["ragline:groups"] == "eng ops"
    assert "cognito:groups" not in claims  # a machine's groups travel in their own claim, as in AWS
    # Without `scope`, every scope the client is allowed.
    everything = idp.verify(client_token(client, client_id, secret).json()["access_token"])
    assert everything["scope"] == "ragline/documents:read ragline/search"

    not_allowed = client_token(client, client_id, secret, scope="ragline/answers")
    assert not_allowed.status_code == 400 and not_allowed.json()["error"] == "invalid_scope"
    wrong_secret = client_token(client, client_id, secret + "x")
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    unknown = client_token(client, "nobody", secret)
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    password = client_token(client, client_id, secret, grant_type="password")
    assert password.status_code == 400 and password.json()["error"] == "unsupported_grant_type"
    # The form may carry the credentials instead of Basic.
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert client.post("/oauth2/token", data=form).status_code == 200


def test_a_required_api_key_must_be_sent_and_known(idp, tmp_path):
    keys = ApiKeys(tmp_path)
    client = TestClient(gateway(idp, api_keys=keys, require_api_key=True))
    token = bearer(idp.issue("alice", ["eng"]))
    for headers in (token, {**token, "x-api-key": "not-a-key"}):
        refused = client.get("/v1/things/1", headers=headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "invalid_api_key"
    key = keys.create("pro")
    assert client.get("/v1/things/1", headers={**token, "x-api-key": key}).status_code == 200
    assert client.post("/v1/stream", headers={**token, "x-api-key": key}).status_code == 200
    # The token is checked first: a key does not stand in for it.
    assert client.get("/v1/things/1", headers={"x-api-key": key}).status_code == 401


def test_an_optional_api_key_is_still_checked_when_sent(idp, tmp_path):
    client = TestClient(gateway(idp, api_keys=ApiKeys(tmp_path)))
    token = bearer(idp.issue("alice", ["eng"]))
    assert client.get("/v1/things/1", headers=token).status_code == 200
    assert client.get("/v1/things/1", headers={**token, "x-api-key": "forged"}).status_code == 403


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now.timestamp()

    def utc(self) -> datetime:
        return self.now


def test_over_the_tiers_rate_and_burst_is_429_throttled_with_retry_after(idp, tmp_path):
    clock = Clock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    tier = Tier(name="tiny", rate_per_second=0.5, burst=2, daily_quota=100)
    keys = ApiKeys(tmp_path, {"tiny": tier}, clock=clock.monotonic, now=clock.utc)
    client = TestClient(gateway(idp, api_keys=keys, require_api_key=True))
    headers = {**bearer(idp.issue("alice", ["eng"])), "x-api-key": keys.create("tiny")}

    assert [client.get("/v1/things/1", headers=headers).status_code for _ in range(2)] == [200, 200]
    throttled = client.get("/v1/things/1", headers=headers)
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "throttled"
    assert throttled.headers["retry-after"] == "2"  # one token at 0.5/s
    clock.now += timedelta(seconds=2)
    assert client.get("/v1/things/1", headers=headers).status_code == 200
    assert client.post("/v1/stream", headers=headers).status_code == 429  # one bucket per key

    other = {**headers, "x-api-key": keys.create("tiny")}
    assert client.get("/v1/things/1", headers=other).status_code == 200


def test_over_the_daily_quota_is_429_quota_exceeded_until_utc_midnight(idp, tmp_path):
    clock = Clock(datetime(2026, 1, 1, 23, 59, 0, tzinfo=UTC))
    tier = Tier(name="tiny", rate_per_second=100, burst=100, daily_quota=3)
    keys = ApiKeys(tmp_path, {"tiny": tier}, clock=clock.monotonic, now=clock.utc)
    client = TestClient(gateway(idp, api_keys=keys, require_api_key=True))
    headers = {**bearer(idp.issue("alice", ["eng"])), "x-api-key": keys.create("tiny")}

    assert {client.get("/v1/things/1", headers=headers).status_code for _ in range(3)} == {200}
    exceeded = client.get("/v1/things/1", headers=headers)
    assert exceeded.status_code == 429 and exceeded.json()["error"]["code"] == "quota_exceeded"
    assert exceeded.headers["retry-after"] == "60"
    clock.now += timedelta(seconds=60)  # a new UTC day
    assert client.get("/v1/things/1", headers=headers).status_code == 200


def test_a_body_over_the_payload_limit_is_413_before_any_function_runs(idp):
    seen = []

    async def body_echo(scope, receive, send):
        from starlette.requests import Request

        seen.append(await Request(scope, receive).body())
        await JSONResponse({"bytes": len(seen[-1])})(scope, receive, send)

    client = TestClient(
        create_gateway(idp, [], [("POST", "/v1/stream", body_echo)], scopes=SCOPES, max_body_bytes=1024)
    )
    token = bearer(idp.issue("alice", ["eng"]))
    assert client.post("/v1/stream", headers=token, content=b"x" * 1024).json() == {"bytes": 1024}
    too_large = client.post("/v1/stream", headers=token, content=b"x" * 1025)
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit holds on the bytes that arrive
        yield b"x" * 1000
        yield b"x" * 1000

    assert client.post("/v1/stream", headers=token, content=chunks()).status_code == 413
    assert seen == [b"x" * 1024]
