"""The local gateway: the authorizer's rules, the proxy event the handlers get, the streaming
route's request context, and the Lambda Invoke emulator."""

import json

import pytest
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from ragline.local.gateway import create_gateway, create_lambda_api
from ragline.local.idp import LocalIdentityProvider
from ragline.local.lambda_runtime import LocalFunction
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


@pytest.fixture
def client(idp):
    function = LocalFunction(FunctionSpec(name="echo", context="test", handler="unused"), handler=echo)
    app = create_gateway(
        idp, [("GET", "/v1/things/{thing_id}", function)], [("POST", "/v1/stream", context_echo)]
    )
    return TestClient(app)


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
    assert client.delete("/v1/conversations/c-1", headers=token).status_code == 405  # no DELETE route


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
