"""What the producers really publish validates against the committed schemas (docs/events/): a
document goes through the real ingest API, ingest worker, index worker and status handler, then the
delete saga's own steps delete one document and fail (compensated) on another, and every event that
reached the bus, and every message sent point to point, is checked against its event's schema and
carries the document's tenant."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
from moto import mock_aws

from functions.index.handlers import worker as index_worker
from functions.ingest import wiring
from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.adapters.operations_table import DynamoOperationRepository
from functions.ingest.domain.deletion import DeletionRequests
from functions.ingest.handlers import api, status
from functions.ingest.handlers import worker as ingest_worker
from ragline.contracts import DocumentIndexed, Principal
from ragline.eventcatalog import example_path
from ragline.topology import BUS_NAME
from tests.support.event_contracts import DOCS, PublishedEvents, validators

from .conftest import OBSERVER_QUEUE, AwsPlatform
from .test_index_worker import service
from .test_ingest_handlers import ENGINEER, new_document, rest_event
from .test_ingest_handlers import services as services  # noqa: F401 (the fixture)
from .test_ingest_lifecycle import search as search  # noqa: F401 (the fixture)

TENANT = "acme"
CLAIMS = {**ENGINEER, "custom:tenant": TENANT}
ADA = Principal(user_id=ENGINEER["sub"], groups=frozenset({"engineering"}), tenant=TENANT)


class Executions:
    """Records the saga executions the API starts; the test runs the saga's steps itself."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def start(self, name: str, payload: dict[str, Any]) -> None:
        self.started.append(payload)


def indexed_document(
    p: AwsPlatform, services, search, lambda_context, text: str
) -> tuple[str, list[dict[str, Any]]]:
    """A document through the API and the pipeline to indexed; its id and the index queue's messages."""
    app = api.create_app(lambda: services.documents)
    response = app.resolve(
        rest_event("POST", "/v1/documents", body=new_document(text=text), claims=CLAIMS), lambda_context
    )
    document_id = json.loads(response["body"])["document_id"]
    ingest_worker.make_handler(lambda: services.chunking)(
        p.sqs_event("ingest", p.receive("ingest")), lambda_context
    )
    index_messages = p.receive("index")
    index_worker.make_handler(lambda svc=service(p, search): svc)(
        p.sqs_event("index", index_messages), lambda_context
    )
    status.make_handler(lambda: services.status)(
        p.sqs_event("ingest-status", p.receive("ingest-status", expected=2)), lambda_context
    )
    return document_id, index_messages


def test_every_published_event_matches_its_committed_schema(
    aws_platform: AwsPlatform, services, search, lambda_context
) -> None:
    p = aws_platform
    kept, point_to_point = indexed_document(
        p, services, search, lambda_context, "# Keep\n\nRotate keys yearly."
    )
    gone, more = indexed_document(p, services, search, lambda_context, "# Gone\n\nRotate keys monthly.")
    point_to_point += more

    executions = Executions()
    deletions = DeletionRequests(
        DynamoDocumentRepository(p.dynamodb, p.settings.documents_table),
        DynamoOperationRepository(p.dynamodb, p.settings.operations_table),
        executions,
        ttl=timedelta(days=1),
    )
    saga = wiring.build_delete_saga(p.settings, s3=p.s3, dynamodb=p.dynamodb, events=p.events)
    deletions.delete(gone, ADA, "corr-delete")
    deletions.delete(kept, ADA, "corr-failed-delete")
    done, failed = executions.started

    done["document"] = saga.mark_deleting(done)
    for step in (saga.delete_objects, saga.delete_record, saga.publish_deleted, saga.complete):
        step(done)
    failed["document"] = saga.mark_deleting(failed)
    failed["compensated"] = saga.unmark_deleting(failed)
    failed["error"] = {"Error": "VectorsUnavailable", "Cause": "the index did not answer"}
    saga.fail(failed)

    bodies = [json.loads(m["Body"]) for m in p.receive(OBSERVER_QUEUE, expected=20, attempts=20)]
    bodies += [json.loads(m["Body"]) for m in point_to_point]
    for body in bodies:
        validators()[body["detail-type"]].validate(body)
    # The document's tenant travels with every event about it (notify matches subscriptions by it).
    assert {b["detail"]["metadata"]["tenant"] for b in bodies} == {TENANT}
    published = sorted({b["detail-type"] for b in bodies})
    assert published == sorted(
        {
            "DocumentUploaded",
            "ChunksReady",
            "IndexingStarted",
            "DocumentIndexed",
            "DocumentDeleted",
            "DocumentFailed",
            "OperationCompleted",
        }
    )
    completed = [b["detail"] for b in bodies if b["detail-type"] == "OperationCompleted"]
    assert sorted((c["document_id"], c["status"], c["kind"]) for c in completed) == sorted(
        [(gone, "succeeded", "delete"), (kept, "failed", "delete")]
    )


def test_the_watch_on_every_integration_test_catches_an_event_off_its_schema() -> None:
    """tests/support/event_contracts.py, which the `aws_platform` fixture runs around every test."""
    with mock_aws():
        sqs, events = (boto3.client(name, region_name="us-east-1") for name in ("sqs", "events"))
        events.create_event_bus(Name=BUS_NAME)
        watch = PublishedEvents(sqs, events)
        good = json.loads((DOCS / example_path(DocumentIndexed)).read_text())
        bad = {**good["detail"], "indexed_count": "all"}
        entries = [
            {
                "EventBusName": BUS_NAME,
                "Source": "ragline.index",
                "DetailType": "DocumentIndexed",
                "Detail": json.dumps(d),
            }
            for d in (good["detail"], bad)
        ]
        events.put_events(Entries=entries)
        assert watch.violations() == ["DocumentIndexed: 'all' is not of type 'integer'"]
        assert watch.checked == 2
