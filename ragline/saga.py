"""The sagas' shared vocabulary (docs/saga.md): step names, the errors a state machine retries, and
the one way a context's saga function dispatches a task to its step.

A saga function is one Lambda function per bounded context (`ingest-saga`, `index-saga`) that the
state machine invokes with `{"step": <name>, "saga": <the execution's state>}`; the handler runs the
named step over the context's domain code and returns what the state machine keeps (ResultPath).
Step Functions matches errors by name (Lambda reports the exception's class name), so a step's
transient failures are raised as `TransientError`, which every task retries with backoff, and a
permanent one keeps its own name (e.g. `DocumentBusy`, `DocumentNotFound`, `ChunksNotFound`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

# The document-delete state machine's task states, in order (the pivot is DeleteVectors).
MARK_DELETING = "MarkDeleting"
DELETE_VECTORS = "DeleteVectors"
DELETE_OBJECTS = "DeleteObjects"
DELETE_RECORD = "DeleteRecord"
PUBLISH_DELETED = "PublishDeleted"
COMPLETE = "Complete"
DELETE_STEPS = (MARK_DELETING, DELETE_VECTORS, DELETE_OBJECTS, DELETE_RECORD, PUBLISH_DELETED, COMPLETE)
# Compensation (before the pivot) and the end of a failed run.
REINDEX = "Reindex"
UNMARK_DELETING = "UnmarkDeleting"
FAIL_OPERATION = "FailOperation"

# The document-update state machine's task states, in order (the pivot is SwitchVersion).
RESERVE_VERSION = "ReserveVersion"
PARSE_AND_CHUNK = "ParseAndChunk"
INDEX_VERSION = "IndexVersion"
ACTIVATE = "Activate"
SWITCH_VERSION = "SwitchVersion"
DELETE_OLD_VECTORS = "DeleteOldVectors"
INVALIDATE_CACHE = "InvalidateCache"
UPDATE_STEPS = (
    RESERVE_VERSION,
    PARSE_AND_CHUNK,
    INDEX_VERSION,
    ACTIVATE,
    SWITCH_VERSION,
    DELETE_OLD_VECTORS,
    INVALIDATE_CACHE,
    COMPLETE,
)
# Its compensation (before the pivot), in reverse: the new version's vectors, then the reservation.
# CheckSwitched decides, when SwitchVersion failed, whether its write happened (its answer was lost).
CHECK_SWITCHED = "CheckSwitched"
REMOVE_NEW_VERSION = "RemoveNewVersion"
RELEASE_VERSION = "ReleaseVersion"

# What every task retries with backoff: Lambda's own service errors and our transient family.
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
TRANSIENT = "TransientError"
TRANSIENT_ERRORS = (*LAMBDA_SERVICE_ERRORS, TRANSIENT)


class TransientError(Exception):
    """Retrying may help (a throttled or unreachable service): the state machine retries it."""


class UnknownStep(ValueError):
    """The task named a step this function does not have (a definition/handler mismatch)."""


Step = Callable[[dict[str, Any]], dict[str, Any] | None]


def step_handler(
    steps: Mapping[str, Callable[[], Step]],
    *,
    is_transient: Callable[[Exception], bool],
    log: Callable[[str, dict[str, Any]], None] | None = None,
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler that runs `steps[event["step"]]()(event["saga"])` (each entry builds its step
    lazily, so a cold start wires only what the step needs). Exceptions `is_transient` accepts are
    raised again as TransientError (the cause is kept in the message); others keep their name."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        name = event.get("step")
        if name not in steps:
            raise UnknownStep(f"no step {name!r} here (have {', '.join(sorted(steps))})")
        state = event.get("saga") or {}
        try:
            return steps[name]()(state) or {}
        except Exception as exc:
            if log is not None:
                log(
                    f"{name} failed",
                    {"error": type(exc).__name__, "operation_id": state.get("operation_id")},
                )
            if is_transient(exc):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            raise

    return handler


def failure_message(error: Mapping[str, Any] | None) -> tuple[str, str]:
    """(code, message) of a Catch's error output ({"Error": name, "Cause": ...}); a Lambda error's
    Cause is the runtime's JSON payload, whose errorMessage is the message."""
    if not error:
        return "unknown", "the step failed without an error"
    code = str(error.get("Error") or "unknown")
    cause = error.get("Cause") or ""
    try:
        parsed = json.loads(cause)
        message = parsed.get("errorMessage", cause) if isinstance(parsed, dict) else cause
    except (TypeError, ValueError):
        message = cause
    return code, str(message)[:1000]
