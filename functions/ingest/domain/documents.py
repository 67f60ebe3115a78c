"""The documents API use cases: accept a document, show it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from ragline.contracts import (
    ContentType,
    CreateDocumentRequest,
    Document,
    DocumentStatus,
    DocumentUploaded,
    Principal,
    new_id,
    utcnow,
)
from ragline.identity import can_see

from .errors import (
    DocumentNotFound,
    DocumentTooLarge,
    EventPublishFailed,
    UnsupportedBody,
)
from .ports import (
    BlobStore,
    DocumentRepository,
    EventPublisher,
    event_metadata,
    raw_key,
)

# --------------------------------------------------------------------------------------------
# API: accept and show documents
# --------------------------------------------------------------------------------------------


class DocumentService:
    def __init__(
        self,
        documents: DocumentRepository,
        raw: BlobStore,
        publisher: EventPublisher,
        *,
        max_inline_bytes: int,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        self._documents = documents
        self._raw = raw
        self._publisher = publisher
        self._max_inline_bytes = max_inline_bytes
        self._clock = clock
        self._ids = ids

    def create(self, request: CreateDocumentRequest, principal: Principal, correlation_id: str) -> Document:
        """Store the original, then the record, then announce it: a record never points at a
        missing object, and an event never at a missing record."""
        if request.text is None:
            raise UnsupportedBody("only inline `text` bodies are accepted yet")
        data = request.text.encode("utf-8")
        if len(data) > self._max_inline_bytes:
            raise DocumentTooLarge(len(data), self._max_inline_bytes)
        now = self._clock()
        document = Document(
            id=self._ids(),
            version=1,
            collection=request.collection,
            title=request.title,
            content_type=request.content_type or ContentType.MARKDOWN,
            content_hash=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            allowed_groups=list(request.allowed_groups),
            tenant=principal.tenant,
            owner=principal.user_id,
            metadata=dict(request.metadata),
            status=DocumentStatus.RECEIVED,
            correlation_id=correlation_id,
            created_at=now,
            updated_at=now,
        )
        key = raw_key(document.id, document.version)
        self._raw.put(key, data, f"{document.content_type.value}; charset=utf-8")
        self._documents.create(document)
        uploaded = DocumentUploaded(
            metadata=event_metadata(correlation_id, document.id, document.version, "uploaded"),
            document_id=document.id,
            version=document.version,
            collection=document.collection,
            raw_key=key,
            content_type=document.content_type,
        )
        try:
            self._publisher.publish(uploaded)
        except Exception as exc:  # whatever the cause, no worker will hear of this document
            reason = f"{EventPublishFailed.code}: {exc}"
            self._documents.update_status(
                document.id,
                version=document.version,
                expected={DocumentStatus.RECEIVED},
                status=DocumentStatus.FAILED,
                updated_at=self._clock(),
                failure_reason=reason,
            )
            raise EventPublishFailed(
                "the document was stored but could not be queued; upload it again"
            ) from exc
        return document

    def get(self, document_id: str, principal: Principal) -> Document:
        document = self._documents.get(document_id)
        if document is None or not _visible(document, principal):
            raise DocumentNotFound(document_id)
        return document


def _visible(document: Document, principal: Principal) -> bool:
    if document.owner == principal.user_id and document.tenant == principal.tenant:
        return True
    return can_see(principal, document.allowed_groups, document.tenant)
