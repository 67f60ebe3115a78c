"""What can go wrong in ingest, as types. Handlers map these to HTTP statuses or to retry decisions;
nothing here knows about either."""

from __future__ import annotations


class IngestError(Exception):
    """Base class; `code` is the stable machine-readable name clients and events carry."""

    code = "ingest_error"


class DocumentTooLarge(IngestError):
    code = "document_too_large"

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"document is {size_bytes} bytes; the limit for inline uploads is {limit_bytes}")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class DocumentNotFound(IngestError):
    """Also raised for documents the caller may not see, so existence does not leak."""

    code = "document_not_found"

    def __init__(self, document_id: str) -> None:
        super().__init__(f"document {document_id} not found")
        self.document_id = document_id


class DocumentAlreadyExists(IngestError):
    code = "document_exists"

    def __init__(self, document_id: str) -> None:
        super().__init__(f"document {document_id} already exists")
        self.document_id = document_id


class EventPublishFailed(IngestError):
    """The document was stored but its DocumentUploaded event could not be published; the record
    was marked failed so nothing waits for an event that never comes. The client may upload again."""

    code = "event_publish_failed"


class BlobNotFound(IngestError):
    code = "blob_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key} not found")
        self.key = key


class ParseError(IngestError):
    """The document cannot be turned into text. Permanent: retrying gives the same answer."""

    code = "parse_error"


class EmptyDocument(ParseError):
    code = "empty_document"


class UnsupportedBody(IngestError):
    """A request body form this deployment does not accept (yet)."""

    code = "unsupported_body"
