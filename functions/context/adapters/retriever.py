"""Retrieval through the retrieve context's own entry point: a direct Lambda invocation.

Locally the same boto3 call reaches the local platform's Lambda Invoke emulator."""

from __future__ import annotations

import json
from typing import Any

from ragline.contracts import Principal, SearchRequest, SearchResponse


class RetrieveError(RuntimeError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class LambdaRetriever:
    def __init__(self, lambda_client: Any, function_name: str) -> None:
        self._client = lambda_client
        self._function = function_name

    def search(self, principal: Principal, request: SearchRequest) -> SearchResponse:
        payload = {"principal": principal.model_dump(mode="json"), "request": request.model_dump(mode="json")}
        response = self._client.invoke(FunctionName=self._function, Payload=json.dumps(payload).encode())
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RetrieveError("retrieve_failed", str(body))
        if isinstance(body, dict) and "error" in body:
            raise RetrieveError(
                body["error"].get("code", "retrieve_failed"), body["error"].get("message", "")
            )
        return SearchResponse.model_validate(body)
