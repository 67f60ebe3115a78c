"""The documents API use cases: accept a document, show it, list them.

Content dedupe: a document claims its `content_key` (tenant, collection, sha256 of the bytes, the
set of allowed groups) in the same conditional transaction that creates its record, so two
identical uploads racing each other make one document. Re-uploading identical content returns the
holder of the key (`deduplicated`) when it is live (not failed or being deleted, not superseded)
and the caller may see it; a failed, deleting or superseded holder is replaced by the new document;
a holder the caller may not see is never revealed: the upload makes a new document, which does not
take the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ragline.contracts import (
    DEFAULT_COLLECTION,
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
from ragline.search.fields import FilterableFields

from .collections import CollectionCatalog
from .detect import detect_content_type
from .errors import (
    CollectionNotFound,
    DocumentNotFound,
    DocumentTooLarge,
    EventPublishFailed,
    InvalidBase64,
    InvalidCursor,
    InvalidMetadata,
    UnsupportedBody,
)
from .ports import (
    BlobStore,
    ContentClaim,
    ContentClaimed,
    DocumentRepository,
    EventPublisher,
    content_key,
    event_metadata,
    raw_key,
)

# A listing request reads at most this many records (visible or not) before it returns what it
# found with a cursor: a caller who sees little of a large tenant gets short pages, never a slow one.
LIST_READ_BUDGET = 1000
# A content claim whose document is in one of these may be taken over by a new upload.
_NOT_LIVE = frozenset({DocumentStatus.FAILED, DocumentStatus.DELETING})
_POSITION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z#[0-9A-Za-z_-]{1,128}$")


@dataclass(frozen=True)
class Accepted:
    """What POST /v1/documents did: a new document, or the existing one with identical content."""

    document: Document
    deduplicated: bool = False


@dataclass(frozen=True)
class Listing:
    documents: list[Document]
    next_cursor: str | None


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
        collections: CollectionCatalog | None = None,
        metadata_fields: FilterableFields | None = None,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        """`collections` None: only `default` exists (tests of other concerns)."""
        self._documents = documents
        self._collections = collections
        self._metadata_fields = metadata_fields or FilterableFields({})
        self._raw = raw
        self._publisher = publisher
        self._max_inline_bytes = max_inline_bytes
        self._clock = clock
        self._ids = ids

    def create(self, request: CreateDocumentRequest, principal: Principal, correlation_id: str) -> Accepted:
        """Store the original, then the record, then announce it: a record never points at a
        missing object, and an event never at a missing record. Identical content already in the
        collection comes back as it is (see the module's docstring) and nothing is stored."""
        if problems := self._metadata_fields.document_errors(request.metadata):
            raise InvalidMetadata(problems)
        data = inline_bytes(request)
        if len(data) > self._max_inline_bytes:
            raise DocumentTooLarge(len(data), self._max_inline_bytes)
        # What the bytes are, checked now so a mismatch is a 415 rather than a failed document later.
        content_type = detect_content_type(data, request.content_type)
        self._require_collection(request.collection, principal)
        key: str | None = content_key(
            principal.tenant, request.collection, hashlib.sha256(data).hexdigest(), request.allowed_groups
        )
        claim, existing = self._holder(key)
        if existing is not None:
            if _visible(existing, principal):
                return Accepted(existing, deduplicated=True)
            key, claim = None, None  # never reveal it; this upload is a document of its own
        now = self._clock()
        document = Document(
            id=self._ids(),
            version=1,
            collection=request.collection,
            title=request.title,
            content_type=content_type,
            content_hash=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            allowed_groups=list(request.allowed_groups),
            tenant=principal.tenant,
            owner=principal.user_id,
            metadata=dict(request.metadata),
            status=DocumentStatus.RECEIVED,
            stage_times={DocumentStatus.RECEIVED.value: now},
            correlation_id=correlation_id,
            created_at=now,
            updated_at=now,
        )
        original = raw_key(document.id, document.version)
        self._raw.put(original, data, media_type(document.content_type))
        try:
            self._documents.create(document, content_key=key, replacing=claim)
        except ContentClaimed:
            # A concurrent identical upload took the key first: answer with its document. The
            # original just written stays unreferenced under this id (no record, no event).
            _, winner = self._holder(key) if key else (None, None)
            if winner is not None and _visible(winner, principal):
                return Accepted(winner, deduplicated=True)
            self._documents.create(document)  # a document of its own, without the key
        uploaded = DocumentUploaded(
            metadata=event_metadata(
                correlation_id, document.id, document.version, "uploaded", tenant=document.tenant
            ),
            document_id=document.id,
            version=document.version,
            collection=document.collection,
            raw_key=original,
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
                failure_code=EventPublishFailed.code,
            )
            raise EventPublishFailed(
                "the document was stored but could not be queued; upload it again"
            ) from exc
        return Accepted(document)

    def _require_collection(self, name: str, principal: Principal) -> None:
        if self._collections is not None:
            self._collections.get(name, principal)  # CollectionNotFound
        elif name != DEFAULT_COLLECTION:
            raise CollectionNotFound(name)

    def _holder(self, key: str) -> tuple[ContentClaim | None, Document | None]:
        """The claim on `key`, and its document while that still counts: not failed or being
        deleted, not superseded by a newer version. A claim without a live document may be taken over."""
        claim = self._documents.find_by_content(key)
        if claim is None:
            return None, None
        holder = self._documents.get(claim.document_id)
        if holder is None or holder.version != claim.version or holder.status in _NOT_LIVE:
            return claim, None
        return claim, holder

    def get(self, document_id: str, principal: Principal) -> Document:
        document = self._documents.get(document_id)
        if document is None or not _visible(document, principal):
            raise DocumentNotFound(document_id)
        return document

    def list(
        self,
        principal: Principal,
        *,
        collection: str | None = None,
        status: DocumentStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Listing:
        """The caller's tenant's documents the caller may see, newest first, `limit` at most.
        Reads the tenant's (or the collection's) index in order and drops what the caller may not
        see; after LIST_READ_BUDGET records it stops early and returns a cursor (a short page)."""
        position = _decode_cursor(cursor, collection, status) if cursor else None
        found: list[Document] = []
        budget = LIST_READ_BUDGET
        while len(found) < limit and budget > 0:
            want = min(limit - len(found), budget)
            page = self._documents.list_page(
                tenant=principal.tenant, collection=collection, status=status, after=position, limit=want
            )
            budget -= want
            found += [d for d in page.documents if _visible(d, principal)]
            position = page.last_position
            if position is None:
                break
        next_cursor = _encode_cursor(position, collection, status) if position else None
        return Listing(found, next_cursor)


def _encode_cursor(position: str, collection: str | None, status: DocumentStatus | None) -> str:
    data = json.dumps({"p": position, "c": collection, "s": status}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, collection: str | None, status: DocumentStatus | None) -> str:
    """The position a cursor holds, if this listing (same filters) handed it out."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        position = data["p"]
        same_filters = (data["c"], data["s"]) == (collection, status)
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor("the cursor is not one this listing handed out") from exc
    if not same_filters:
        raise InvalidCursor("the cursor belongs to a listing with other filters")
    if not isinstance(position, str) or not _POSITION.match(position):
        raise InvalidCursor("the cursor is not one this listing handed out")
    return position


def _visible(document: Document, principal: Principal) -> bool:
    if document.owner == principal.user_id and document.tenant == principal.tenant:
        return True
    return can_see(principal, document.allowed_groups, document.tenant)


def inline_bytes(request: CreateDocumentRequest) -> bytes:
    """The body of an inline upload: `text` as UTF-8, or `content_base64` decoded strictly."""
    if request.text is not None:
        return request.text.encode("utf-8")
    if request.content_base64 is None:
        raise UnsupportedBody("`upload: true` requests go through the upload service")
    try:
        return base64.b64decode(request.content_base64, validate=True)
    except binascii.Error as exc:
        raise InvalidBase64(f"`content_base64` is not valid base64: {exc}") from exc


def media_type(content_type: ContentType) -> str:
    """The stored object's Content-Type: text formats say their charset (always UTF-8 here)."""
    text = content_type.value.startswith("text/") or content_type is ContentType.JSON
    return f"{content_type.value}; charset=utf-8" if text else content_type.value
