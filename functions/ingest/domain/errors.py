"""What can go wrong in ingest, as types. Handlers map these to HTTP statuses or to retry decisions;
nothing here knows about either."""

from __future__ import annotations

from datetime import datetime


class IngestError(Exception):
    """Base class; `code` is the stable machine-readable name clients and events carry."""

    code = "ingest_error"


class DocumentTooLarge(IngestError):
    """An inline body over the inline limit (larger documents go by presigned upload)."""

    code = "document_too_large"

    def __init__(self, size_bytes: int, limit_bytes: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"document is {size_bytes} bytes; the limit for inline bodies is {limit_bytes} "
            "(send larger documents with `upload: true`)"
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class UploadTooLarge(DocumentTooLarge):
    """A presigned upload (as declared, or as it arrived) over the maximum for any document."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            size_bytes,
            limit_bytes,
            f"document is {size_bytes} bytes; the largest document accepted is {limit_bytes} bytes",
        )


class InvalidMetadata(IngestError):
    """A declared filterable metadata field (RAGLINE_METADATA_FIELDS) holds a value of another type:
    refused now, since search could never filter on it."""

    code = "invalid_metadata"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ContentTypeRequired(IngestError):
    """A presigned upload binds its Content-Type into the signature, so it must be declared."""

    code = "content_type_required"


class SizeMismatch(IngestError):
    """The uploaded object's size is not the `size_bytes` the upload declared."""

    code = "size_mismatch"

    def __init__(self, declared: int, actual: int) -> None:
        super().__init__(f"the upload declared {declared} bytes but {actual} arrived")
        self.declared = declared
        self.actual = actual


class UploadExpired(IngestError):
    """No bytes arrived for a presigned upload by its deadline (URL expiry plus grace)."""

    code = "upload_expired"

    def __init__(self, deadline: datetime) -> None:
        super().__init__(
            f"no bytes arrived by {deadline.isoformat()} (the upload URL's expiry plus grace); "
            "start a new upload"
        )
        self.deadline = deadline


class UploadNotScheduled(IngestError):
    """A presigned upload's deadline could not be scheduled, so no URL was handed out (a record
    nothing would ever expire must not exist) and nothing was stored. The client may try again."""

    code = "upload_not_scheduled"


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


class UnsupportedContentType(ParseError):
    """The bytes are in no format Ragline reads (or the declared type is not one it knows).
    At upload: 415."""

    code = "unsupported_content_type"


class ContentTypeMismatch(ParseError):
    """The declared content type and the bytes disagree (declared PDF, the bytes are a DOCX).
    At upload: 415."""

    code = "content_type_mismatch"

    def __init__(self, declared: str, detected: str) -> None:
        super().__init__(f"declared {declared} but the bytes are {detected}")
        self.declared = declared
        self.detected = detected


class EncryptedDocument(ParseError):
    """Password-protected: there is no text to read without the password."""

    code = "encrypted_document"


class CorruptDocument(ParseError):
    """The bytes claim a format but cannot be read as it (a truncated PDF, a broken DOCX)."""

    code = "corrupt_document"


class ParsedDocumentTooLarge(ParseError):
    """The original, or what it expands to (a DOCX is a zip), is over the parser's limit."""

    code = "document_too_large"

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes; the limit is {limit}")
        self.size = size
        self.limit = limit


class CollectionNotFound(IngestError):
    """Also raised for another tenant's collections, so their names do not leak."""

    code = "collection_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} not found")
        self.name = name


class CollectionAlreadyExists(IngestError):
    code = "collection_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} already exists")
        self.name = name


class UnsupportedEmbeddingModel(IngestError):
    """A collection named an embedding model this deployment's endpoint does not serve."""

    code = "unsupported_embedding_model"

    def __init__(self, requested: str, supported: str) -> None:
        super().__init__(f"embedding model {requested!r} is not served here; use {supported!r}")
        self.requested = requested
        self.supported = supported


class ChunkTooLarge(IngestError):
    """A collection's chunks would be longer than its embedding model takes."""

    code = "chunk_too_large"

    def __init__(self, requested: int, limit: int, model: str) -> None:
        super().__init__(f"chunk_max_tokens {requested} is over {limit}, the most {model!r} embeds")


class InvalidCursor(IngestError):
    """A `cursor` that this listing did not hand out (tampered, or from other filters)."""

    code = "invalid_cursor"


class IdempotencyKeyReused(IngestError):
    """The Idempotency-Key was first used with a different request body."""

    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(IngestError):
    """A request with this Idempotency-Key is still being handled; retry once it has finished."""

    code = "idempotency_key_in_progress"


class RetriesExhausted(IngestError):
    """A transient failure outlived the queue's last delivery: the document is failed, the message
    goes to the dead-letter queue."""

    code = "retries_exhausted"


class InvalidBase64(IngestError):
    code = "invalid_base64"


class OperationNotFound(IngestError):
    """Also raised for operations of another requester, so existence does not leak."""

    code = "operation_not_found"

    def __init__(self, operation_id: str) -> None:
        super().__init__(f"operation {operation_id} not found")


class OperationNotStarted(IngestError):
    """No state machine is configured (nothing is written), or it could not be started (the operation
    is recorded failed): a new request (without the Idempotency-Key, or with a new one) tries again."""

    code = "operation_not_started"


class VersionConflict(IngestError):
    """The document is not at the version the update saga reserved from (a definition/handler
    mismatch, or a record changed by hand): permanent, the update is compensated."""

    code = "version_conflict"


class DocumentBusy(IngestError):
    """Another operation holds the document, or it is still being ingested: the saga retries the
    step with backoff (deletes wait their turn; they are never rejected for it)."""

    code = "document_busy"


class VectorsLost(IngestError):
    """The reconciler found a searchable document's version missing from the index and its chunk
    file gone too, so it cannot be restored: the document is marked failed rather than left a
    phantom. Uploading it again indexes it."""

    code = "vectors_lost"
