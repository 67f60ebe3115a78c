"""POST /v1/answers: the streaming ASGI app.

In AWS it runs behind the Lambda Web Adapter (response streaming through API Gateway); the adapter
forwards API Gateway's request context, with the Cognito authorizer's claims, in the
`x-amzn-request-context` header. The local gateway verifies tokens and sets the same header."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException

from functions.context import wiring
from functions.context.domain.errors import ConversationFull, ConversationNotFound
from functions.context.domain.service import AnswerEvent, AnswerService
from ragline.contracts import (
    AnswerRequest,
    AnswerResponse,
    CitationsEvent,
    Conversation,
    ConversationId,
    DoneEvent,
    ErrorBody,
    ErrorResponse,
    Principal,
    TokenEvent,
)
from ragline.http import UNSUPPORTED_MEDIA_TYPE, is_json
from ragline.identity import principal_from_claims
from ragline.observability import logger as make_logger

REQUEST_CONTEXT_HEADER = "x-amzn-request-context"
logger = make_logger("context")

# The stream's contract, published in the OpenAPI document (docs/openapi.json).
STREAM_DESCRIPTION = """\
Server-Sent Events by default (`Accept: application/json` gets one `AnswerResponse` body instead):
`token` events (`{"text"}`) as the model writes, then one `citations` event (`{"citations": [Citation]}`),
then `done` (`{"usage", "finish_reason", "degraded", "degraded_reason"}`).

A failing LLM never turns into an error. Before the first token, the secondary LLM endpoint answers if one
is configured (`degraded_reason: "secondary_llm"`), else the answer quotes the top retrieved chunks with
their citations (`finish_reason` and `degraded_reason`: `"extractive"`). After tokens were sent they are
kept: the answer ends with its citations and `finish_reason`/`degraded_reason`: `"interrupted"`. In every
such case `done.degraded` is true. An `error` event (`{"code", "message"}`) ends the stream instead of
`citations` and `done` only when something other than the LLM fails, retrieval included."""
STREAM_EXAMPLE = """\
event: token
data: {"text":"The language model is unavailable right now, so here are the most relevant passages \
from your documents."}

event: token
data: {"text":"\\n\\n[1] Heliotrope runbook > Credential rotation: Database credentials rotate every 90 days."}

event: citations
data: {"citations":[{"marker":1,"chunk_id":"9f2c…:v1:0","document_id":"9f2c…","version":1,"ordinal":0,\
"title":"Heliotrope runbook","heading_path":["Heliotrope runbook","Credential rotation"]}]}

event: done
data: {"usage":{"prompt_tokens":0,"completion_tokens":0},"finish_reason":"extractive","degraded":true,\
"degraded_reason":"extractive"}
"""


class Unauthorized(Exception):
    pass


def error(status: int, code: str, message: str, details: list | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details or []))
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def principal_of(request: Request) -> Principal:
    try:
        context = json.loads(request.headers[REQUEST_CONTEXT_HEADER])
        return principal_from_claims(context["authorizer"]["claims"])
    except (KeyError, TypeError, ValueError) as exc:
        raise Unauthorized from exc


async def _in_thread(events: Iterator[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    """Drive the blocking model stream from a worker thread; closing it on disconnect closes the
    model connection, so an abandoned answer stops generating."""
    try:
        while (item := await anyio.to_thread.run_sync(next, events, None)) is not None:
            yield item
    finally:
        # On a disconnect this runs in a cancelled scope: unshielded, the close would be cancelled
        # before it started, and generation would stop only when the generator was collected.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(events.close)


async def _sse(events: Iterator[AnswerEvent]) -> AsyncIterator[dict[str, str]]:
    try:
        async for name, payload in _in_thread(events):
            yield {"event": name, "data": payload.model_dump_json()}
    except Exception as exc:  # the status line is already sent: report in-band
        logger.exception("answer stream failed")
        body = ErrorBody(
            code=getattr(exc, "code", "answer_failed"), message="The answer could not be completed."
        )
        yield {"event": "error", "data": body.model_dump_json()}


def _collect(events: Iterator[AnswerEvent]) -> AnswerResponse:
    text: list[str] = []
    citations: CitationsEvent | None = None
    done: DoneEvent | None = None
    for _, payload in events:
        if isinstance(payload, TokenEvent):
            text.append(payload.text)
        elif isinstance(payload, CitationsEvent):
            citations = payload
        elif isinstance(payload, DoneEvent):
            done = payload
    assert citations is not None and done is not None, (
        "the answer service always ends with citations and done"
    )
    return AnswerResponse(answer="".join(text), citations=citations.citations, **done.model_dump())


def create_app(service: Callable[[], AnswerService] = wiring.service) -> FastAPI:
    app = FastAPI(title="Ragline answers", version="1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if await request.body() and not is_json(request.headers.get("content-type")):
            return error(415, *UNSUPPORTED_MEDIA_TYPE)
        details = json.loads(json.dumps(exc.errors(), default=str))
        return error(422, "validation_error", "The request body is not valid.", details)

    @app.exception_handler(Exception)
    async def _failed(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("answer failed")
        return error(500, getattr(exc, "code", "internal_error"), "The answer could not be produced.")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own refusals (no such route, wrong method) in the platform's error shape.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, __: Unauthorized) -> JSONResponse:
        return error(401, "unauthorized", "Missing or invalid credentials.")

    @app.exception_handler(ConversationNotFound)
    async def _no_conversation(_: Request, exc: ConversationNotFound) -> JSONResponse:
        return error(404, exc.code, "No conversation with this id belongs to you (it may have expired).")

    @app.exception_handler(ConversationFull)
    async def _full(_: Request, exc: ConversationFull) -> JSONResponse:
        return error(409, exc.code, "This conversation has as many turns as it may hold: start a new one.")

    @app.post(
        "/v1/answers",
        response_model=AnswerResponse,
        responses={
            200: {
                "description": STREAM_DESCRIPTION,
                "content": {"text/event-stream": {"example": STREAM_EXAMPLE}},
            },
            401: {"model": ErrorResponse},
            404: {"model": ErrorResponse, "description": "`conversation_not_found`"},
            409: {"model": ErrorResponse, "description": "`conversation_full`"},
            422: {"model": ErrorResponse},
        },
    )
    async def answers(body: AnswerRequest, request: Request):  # noqa: ANN202 (SSE or JSON)
        principal = principal_of(request)
        # Reads the conversation (a table call): refusals become 4xx before the stream starts.
        events = await anyio.to_thread.run_sync(service().answer, principal, body)
        accept = request.headers.get("accept", "")
        if "application/json" in accept and "text/event-stream" not in accept:
            return await anyio.to_thread.run_sync(_collect, events)
        return EventSourceResponse(_sse(events), ping=15)

    @app.get(
        "/v1/conversations/{conversation_id}",
        response_model=Conversation,
        responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    )
    async def conversation(conversation_id: ConversationId, request: Request) -> Conversation:
        """A conversation's turns with their citations, to its owner; 404 to anyone else."""
        principal = principal_of(request)
        return await anyio.to_thread.run_sync(service().conversation, principal, conversation_id)

    return app


app = create_app()
