"""The documents table adapter against moto: a create retried after a lost response succeeds."""

from __future__ import annotations

import pytest

from functions.ingest.adapters.documents_table import DynamoDocumentRepository
from functions.ingest.domain.errors import DocumentAlreadyExists
from ragline.contracts import ContentType, Document, DocumentStatus, utcnow

from .conftest import AwsPlatform


def document(correlation_id: str = "corr-1") -> Document:
    now = utcnow()
    return Document(
        id="doc-1",
        version=1,
        title="Notes",
        content_type=ContentType.MARKDOWN,
        content_hash="ab" * 32,
        size_bytes=10,
        allowed_groups=["eng"],
        owner="alice",
        status=DocumentStatus.RECEIVED,
        correlation_id=correlation_id,
        created_at=now,
        updated_at=now,
    )


@pytest.mark.parametrize("content_key", [None, "hash#-#default#abab#g"])
def test_a_retried_create_finds_its_own_record_and_succeeds(aws_platform: AwsPlatform, content_key):
    repository = DynamoDocumentRepository(aws_platform.dynamodb, aws_platform.settings.documents_table)
    first = document()
    repository.create(first, content_key=content_key)
    # botocore resends a call whose response was lost: the same write arrives again
    repository.create(first, content_key=content_key)
    assert repository.get("doc-1") == first
    # a different document that happens to reuse the id is still refused
    with pytest.raises(DocumentAlreadyExists):
        repository.create(document(correlation_id="someone-else"), content_key=None)
