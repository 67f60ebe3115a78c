"""Every contract that crosses a boundary: API models, stored records and events.

One module on purpose: producers and consumers in different contexts import the same class, and
`ragline schemas` exports all of them to docs/ (a test fails when the committed files drift).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

SCHEMA_VERSION = "1.0"
DEFAULT_COLLECTION = "default"

GroupName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
MetadataValue = str | int | float | bool
CollectionName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]
# Ids Ragline issues (new_id: 32 hex digits); the pattern keeps odd input out of keys and paths.
ConversationId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a request must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


class Principal(Strict):
    """Who is calling, as the authorizer saw it."""

    user_id: str
    groups: frozenset[str] = frozenset()
    tenant: str | None = None


# --------------------------------------------------------------------------------------------
# Documents and chunks (stored records)
# --------------------------------------------------------------------------------------------


class DocumentStatus(StrEnum):
    """received → parsing → chunked → embedding → indexed, or failed (with a code and a reason).
    A presigned upload starts at awaiting_upload and becomes received when its bytes arrive, or
    failed (upload_expired) when none have arrived by its URL's expiry plus a grace period.
    `deleting`: a delete saga holds it (docs/saga.md); it is no longer searchable once its vectors
    are gone, and a delete that failed past that point leaves it here until a new DELETE resumes."""

    AWAITING_UPLOAD = "awaiting_upload"
    RECEIVED = "received"
    PARSING = "parsing"
    CHUNKED = "chunked"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETING = "deleting"


class ContentType(StrEnum):
    TEXT = "text/plain"
    MARKDOWN = "text/markdown"
    HTML = "text/html"
    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    CSV = "text/csv"
    JSON = "application/json"


class Document(Strict):
    id: str
    version: int = Field(ge=1)
    collection: str = DEFAULT_COLLECTION
    title: str
    content_type: ContentType
    content_hash: str | None = Field(
        default=None,
        description="sha256 of the original bytes, hex; null until a presigned upload's bytes arrive",
    )
    size_bytes: int = Field(ge=0)
    allowed_groups: list[str]
    tenant: str | None = None
    owner: str
    metadata: dict[str, MetadataValue] = {}
    status: DocumentStatus
    chunk_count: int | None = Field(default=None, description="Chunks produced by parsing, once chunked")
    indexed_count: int | None = Field(default=None, description="Chunks written to the index so far")
    failure_code: str | None = Field(default=None, description="Machine-readable, when failed")
    failure_reason: str | None = None
    stage_times: dict[str, datetime] = Field(
        default={}, description="When the document entered each status it has been in"
    )
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    operation_id: str | None = Field(
        default=None, description="The saga operation that holds the document (docs/saga.md), if any"
    )
    source_version: int | None = Field(
        default=None,
        ge=1,
        description="The version whose original object holds this version's content (a metadata-only "
        "update reuses it); null: its own",
    )


class Collection(Strict):
    """A named set of documents with its own chunking and embedding settings."""

    name: str
    description: str = ""
    chunk_max_tokens: int = Field(ge=32, le=512)
    chunk_overlap_tokens: int = Field(ge=0, le=256)
    embedding_model: str
    created_at: datetime


class Chunk(Strict):
    document_id: str
    version: int
    ordinal: int = Field(ge=0)
    collection: str
    title: str
    text: str
    token_count: int = Field(ge=0, description="Tokens of the embedding model's tokenizer")
    heading_path: list[str] = []
    page: int | None = Field(default=None, ge=1, description="Page of the original (PDF), 1-based")
    char_start: int = Field(ge=0, description="Offset into the parsed text")
    char_end: int = Field(ge=0)
    allowed_groups: list[str]
    tenant: str | None = None
    metadata: dict[str, MetadataValue] = {}

    @property
    def chunk_id(self) -> str:
        return chunk_id(self.document_id, self.version, self.ordinal)


def chunk_id(document_id: str, version: int, ordinal: int) -> str:
    return f"{document_id}:v{version}:{ordinal}"


class OperationKind(StrEnum):
    DELETE = "delete"
    UPDATE = "update"


class OperationError(Strict):
    code: str = Field(description="Machine-readable: the error's name")
    message: str


# --------------------------------------------------------------------------------------------
# Events (EventBridge envelope; the same envelope is used on SQS so consumers parse one shape)
# --------------------------------------------------------------------------------------------


class EventMetadata(Strict):
    schema_version: str = Field(
        default=SCHEMA_VERSION,
        description="MAJOR.MINOR of the event's schema (docs/events/README.md): a minor version only adds "
        "optional fields; a new major version may break consumers",
    )
    correlation_id: str
    idempotency_key: str = Field(description="Stable for one logical event; consumers dedupe on it")
    occurred_at: datetime = Field(default_factory=utcnow)
    tenant: str | None = Field(
        default=None,
        description="The tenant whose document or subscription the event is about (null: no tenant); "
        "webhooks and emails go only to subscriptions of the same tenant",
    )


class EventDetail(Strict):
    SOURCE: ClassVar[str]
    DETAIL_TYPE: ClassVar[str]
    # MAJOR.MINOR, stamped on metadata.schema_version; `ragline schemas` freezes each major version's
    # schema in docs/events/versions/ and a test fails on a breaking change without a new major.
    SCHEMA_VERSION: ClassVar[str] = SCHEMA_VERSION
    # Published for other systems (docs/events/README.md); the rest are Ragline's own messages.
    PUBLIC: ClassVar[bool] = True

    metadata: EventMetadata

    @model_validator(mode="after")
    def _stamp_version(self) -> EventDetail:
        # Producers build the metadata before the event: the event's own version goes on it here.
        if "schema_version" not in self.metadata.model_fields_set:
            self.metadata = self.metadata.model_copy(update={"schema_version": self.SCHEMA_VERSION})
        return self


class DocumentUploaded(EventDetail):
    """A document version was stored and waits to be parsed."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "DocumentUploaded"

    document_id: str
    version: int
    collection: str
    raw_key: str = Field(description="Key of the original in the raw documents bucket")
    content_type: ContentType


class ChunksReady(EventDetail):
    """Chunks of a document version were written and wait to be embedded (claim check: the chunks
    live in the parsed bucket, the message only points at them, so size limits never bite)."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "ChunksReady"
    PUBLIC: ClassVar[bool] = False

    document_id: str
    version: int
    collection: str
    chunks_key: str = Field(description="Key of the JSON Lines chunk file in the parsed documents bucket")
    chunk_count: int


class UploadDeadline(EventDetail):
    """When a presigned upload must have arrived (its URL's expiry plus a grace period). Ingest sends
    it to its own uploads queue when it hands out the URL, delayed to arrive then (re-sent while the
    deadline is further than the queue's longest delay). A document still awaiting its upload at
    the deadline is completed if the object is there after all (its S3 event was lost), otherwise
    failed with `upload_expired`."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "UploadDeadline"
    PUBLIC: ClassVar[bool] = False

    document_id: str
    version: int
    due_at: datetime = Field(description="The deadline: the URL's expires_at plus the grace period")


class DocumentIndexed(EventDetail):
    """Every chunk of a document version is in the search index: it is searchable."""

    SOURCE: ClassVar[str] = "ragline.index"
    DETAIL_TYPE: ClassVar[str] = "DocumentIndexed"

    document_id: str
    version: int
    collection: str
    indexed_count: int


class DocumentUpdated(EventDetail):
    """A document's active version changed (the update saga switched it; issue 7 publishes it)."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "DocumentUpdated"

    document_id: str
    version: int
    previous_version: int
    collection: str


class DocumentDeleted(EventDetail):
    """A document and all its versions are gone (the delete saga finished; issue 7 publishes it)."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "DocumentDeleted"

    document_id: str
    version: int = Field(description="The version that was active when the delete began")
    collection: str


class IndexingStarted(EventDetail):
    """The index context began embedding a document version's chunks."""

    SOURCE: ClassVar[str] = "ragline.index"
    DETAIL_TYPE: ClassVar[str] = "IndexingStarted"

    document_id: str
    version: int
    chunk_count: int


class DocumentFailed(EventDetail):
    """Published by whichever context failed; the envelope's source is `ragline.<stage>`."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "DocumentFailed"

    document_id: str
    version: int
    stage: Literal["ingest", "index"]
    code: str
    reason: str

    @property
    def source(self) -> str:
        return f"ragline.{self.stage}"


class OperationCompleted(EventDetail):
    """A long-running document operation (the delete or update saga, docs/saga.md) finished, succeeded or
    failed; GET /v1/operations/{operation_id} shows the same outcome."""

    SOURCE: ClassVar[str] = "ragline.ingest"
    DETAIL_TYPE: ClassVar[str] = "OperationCompleted"

    operation_id: str
    kind: OperationKind
    document_id: str
    status: Literal["succeeded", "failed"]
    version: int | None = Field(
        default=None, description="The document's version the operation ended with (null: unknown)"
    )
    collection: str | None = None
    error: OperationError | None = Field(default=None, description="Why it failed, when failed")


class SubscriptionDisabled(EventDetail):
    """Notify stopped delivering to a subscription after sustained delivery failure; it stays disabled
    until it is deleted and created again."""

    SOURCE: ClassVar[str] = "ragline.notify"
    DETAIL_TYPE: ClassVar[str] = "SubscriptionDisabled"

    subscription_id: str
    owner: str = Field(description="The user who created the subscription")
    consecutive_failures: int = Field(ge=1)
    last_error: str = Field(description="The last delivery's failure, for humans")


class DeliveryRequested(EventDetail):
    """Notify's own message (fan-out to delivery, point to point): deliver one event to one subscription."""

    SOURCE: ClassVar[str] = "ragline.notify"
    DETAIL_TYPE: ClassVar[str] = "DeliveryRequested"
    PUBLIC: ClassVar[bool] = False

    delivery_id: str = Field(description="The same for every attempt of this event to this subscription")
    subscription_id: str
    event: dict[str, Any] = Field(description="The event as EventBridge delivered it (the webhook's body)")


D = TypeVar("D", bound=EventDetail)


class EventEnvelope(BaseModel, Generic[D]):
    """The shape EventBridge delivers to targets (and that Ragline puts on SQS directly)."""

    model_config = ConfigDict(populate_by_name=True)

    version: str = "0"
    id: str = Field(default_factory=new_id)
    detail_type: str = Field(alias="detail-type")
    source: str
    account: str = "000000000000"
    time: datetime = Field(default_factory=utcnow)
    region: str = "us-east-1"
    resources: list[str] = []
    detail: D

    @classmethod
    def wrap(cls, detail: D) -> EventEnvelope[D]:
        return cls(detail_type=detail.DETAIL_TYPE, source=event_source(detail), detail=detail)


def event_source(detail: EventDetail) -> str:
    return getattr(detail, "source", detail.SOURCE)


EVENT_TYPES: tuple[type[EventDetail], ...] = (
    DocumentUploaded,
    ChunksReady,
    UploadDeadline,
    IndexingStarted,
    DocumentIndexed,
    DocumentFailed,
    DocumentUpdated,
    DocumentDeleted,
    OperationCompleted,
    SubscriptionDisabled,
    DeliveryRequested,
)
# On the bus for other systems: the event catalogue (docs/events/README.md) and what subscriptions take.
PUBLIC_EVENT_TYPES: tuple[type[EventDetail], ...] = tuple(e for e in EVENT_TYPES if e.PUBLIC)
PublicEventType = StrEnum("PublicEventType", {e.DETAIL_TYPE: e.DETAIL_TYPE for e in PUBLIC_EVENT_TYPES})  # type: ignore[misc]
# What an email subscription may choose: the outcomes a person acts on.
EMAIL_EVENT_TYPES = frozenset({DocumentFailed.DETAIL_TYPE, OperationCompleted.DETAIL_TYPE})


# --------------------------------------------------------------------------------------------
# HTTP API
# --------------------------------------------------------------------------------------------


class ErrorBody(Strict):
    code: str = Field(
        description="Machine-readable, stable: clients branch on it", examples=["validation_error"]
    )
    message: str = Field(description="For humans")
    details: list[dict[str, Any]] = []


class ErrorResponse(Strict):
    error: ErrorBody


class UpdateDocumentRequest(Strict):
    """PUT /v1/documents/{id}: a new version with new content (`text` or `content_base64`, at most
    one) and/or a new title, allowed groups or metadata; what is left out is kept."""

    title: str | None = Field(default=None, min_length=1, max_length=512)
    text: str | None = Field(default=None, min_length=1, description="Inline text (plain or Markdown)")
    content_base64: str | None = Field(default=None, min_length=1, description="Inline bytes, base64")
    content_type: ContentType | None = Field(
        default=None, description="Declared type of new content; detected from the bytes when absent"
    )
    allowed_groups: list[GroupName] | None = Field(default=None, min_length=1, max_length=100)
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], MetadataValue] | None = Field(
        default=None, max_length=50
    )

    @model_validator(mode="after")
    def _something(self) -> UpdateDocumentRequest:
        if self.text is not None and self.content_base64 is not None:
            raise ValueError("give at most one of `text` or `content_base64`")
        if self.content_type is not None and self.text is None and self.content_base64 is None:
            raise ValueError("`content_type` goes with new content only")
        if all(
            value is None
            for value in (self.title, self.text, self.content_base64, self.allowed_groups, self.metadata)
        ):
            raise ValueError("nothing to update: give new content, title, allowed_groups or metadata")
        return self


class CreateDocumentRequest(Strict):
    """Exactly one body: `text` (inline text), `content_base64` (inline bytes of any supported
    format) or `upload: true` (a presigned S3 PUT for large files; `size_bytes` required)."""

    title: str = Field(min_length=1, max_length=512)
    text: str | None = Field(default=None, min_length=1, description="Inline text (plain or Markdown)")
    content_base64: str | None = Field(default=None, min_length=1, description="Inline bytes, base64")
    upload: bool = Field(default=False, description="Return a presigned PUT URL instead of an inline body")
    size_bytes: int | None = Field(default=None, ge=1, description="Exact size of the upload (upload: true)")
    content_type: ContentType | None = Field(
        default=None,
        description="Declared type; detected from the bytes when absent (text defaults to Markdown)",
    )
    allowed_groups: list[GroupName] = Field(min_length=1, max_length=100)
    collection: CollectionName = DEFAULT_COLLECTION
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], MetadataValue] = Field(
        default={}, max_length=50
    )

    @model_validator(mode="after")
    def _one_body(self) -> CreateDocumentRequest:
        bodies = [self.text is not None, self.content_base64 is not None, self.upload]
        if sum(bodies) != 1:
            raise ValueError("give exactly one of `text`, `content_base64` or `upload: true`")
        if self.upload and self.size_bytes is None:
            raise ValueError("`size_bytes` is required with `upload: true`")
        if not self.upload and self.size_bytes is not None:
            raise ValueError("`size_bytes` goes with `upload: true` only")
        return self


class UploadTarget(Strict):
    """Where to PUT the bytes: the size and content type are bound into the signature."""

    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="Send exactly these headers with the PUT")
    expires_at: datetime


class CreateDocumentResponse(Strict):
    document_id: str
    version: int
    status: DocumentStatus
    correlation_id: str
    deduplicated: bool = Field(
        default=False,
        description="Identical content already exists in the collection; nothing new was stored",
    )
    upload: UploadTarget | None = None


class DocumentView(Strict):
    id: str
    version: int
    collection: str
    title: str
    content_type: ContentType
    content_hash: str | None
    size_bytes: int
    allowed_groups: list[str]
    metadata: dict[str, MetadataValue]
    status: DocumentStatus
    chunk_count: int | None
    indexed_count: int | None
    failure_code: str | None
    failure_reason: str | None
    stage_times: dict[str, datetime]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, document: Document) -> DocumentView:
        return cls.model_validate(document.model_dump(include=set(cls.model_fields)))


class OperationStatus(StrEnum):
    """pending (accepted, not started) → running → succeeded or failed."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


class OperationStep(Strict):
    name: str = Field(description="A state of the operation's state machine, e.g. DeleteVectors")
    completed_at: datetime


class Operation(Strict):
    """A long-running change of a document (a saga, docs/saga.md): GET /v1/operations/{id}."""

    operation_id: str
    kind: OperationKind
    document_id: str
    status: OperationStatus
    current_step: str | None = Field(default=None, description="The step running now (null once finished)")
    steps: list[OperationStep] = Field(default=[], description="Steps done, in order, with their times")
    error: OperationError | None = Field(default=None, description="Why it failed, when failed")
    version: int | None = Field(
        default=None, ge=1, description="The version an update makes (the document's once it succeeded)"
    )
    created_at: datetime
    updated_at: datetime


class DocumentList(Strict):
    items: list[DocumentView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class CreateCollectionRequest(Strict):
    name: CollectionName
    description: str = Field(default="", max_length=1000)
    chunk_max_tokens: int = Field(default=200, ge=32, le=512)
    chunk_overlap_tokens: int = Field(default=32, ge=0, le=256)
    embedding_model: str = Field(default="sentence-transformers/all-MiniLM-L6-v2", max_length=200)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> CreateCollectionRequest:
        if self.chunk_overlap_tokens >= self.chunk_max_tokens:
            raise ValueError("`chunk_overlap_tokens` must be smaller than `chunk_max_tokens`")
        return self


class CollectionList(Strict):
    items: list[Collection]


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    KEYWORD = "keyword"
    VECTOR = "vector"


FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
FilterValue = StrictStr | StrictInt | StrictFloat | StrictBool
RangeBound = StrictStr | StrictInt | StrictFloat


class FilterableFieldType(StrEnum):
    """How a declared metadata field is indexed and compared (RAGLINE_METADATA_FIELDS)."""

    KEYWORD = "keyword"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"


class InFilter(Strict):
    """The field equals any of the values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    in_: list[FilterValue] = Field(alias="in", min_length=1, max_length=100)


class RangeFilter(Strict):
    """Bounds on a number or date field (dates as ISO 8601: `2024-05-01` or `2024-05-01T12:00:00Z`)."""

    gt: RangeBound | None = None
    gte: RangeBound | None = None
    lt: RangeBound | None = None
    lte: RangeBound | None = None

    @model_validator(mode="after")
    def _bounded(self) -> RangeFilter:
        if all(bound is None for bound in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        if self.gt is not None and self.gte is not None:
            raise ValueError("give gt or gte, not both")
        if self.lt is not None and self.lte is not None:
            raise ValueError("give lt or lte, not both")
        return self


MetadataFilter = FilterValue | InFilter | RangeFilter


class FusionParams(Strict):
    """How hybrid search merges its keyword and vector lists.

    rrf: reciprocal rank fusion, score = sum(weight / (k + rank)); ranks only, no tuning needed.
    convex: each list's scores min-max normalised to [0, 1], then the weighted mean (a chunk missing
    from a list scores 0 there); uses how far ahead a top hit is, which ranks cannot show."""

    method: Literal["rrf", "convex"] = "rrf"
    k: int = Field(default=20, ge=1, le=1000, description="rrf only: larger k flattens the lead of top ranks")
    keyword_weight: float = Field(default=1.0, ge=0, le=10)
    vector_weight: float = Field(default=1.0, ge=0, le=10)

    @model_validator(mode="after")
    def _some_weight(self) -> FusionParams:
        if self.keyword_weight == 0 and self.vector_weight == 0:
            raise ValueError("at least one of keyword_weight and vector_weight must be above 0")
        return self


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=5, ge=1, le=100)
    collection: CollectionName | None = None
    mode: SearchMode = SearchMode.HYBRID
    metadata: dict[FieldName, MetadataFilter] = Field(
        default={},
        max_length=20,
        description="Filters on declared metadata fields (RAGLINE_METADATA_FIELDS), all of which must "
        'hold: a value (equality), {"in": [values]}, or a range {"gte"|"gt": x, "lte"|"lt": y} on a '
        "number or date field",
    )
    group_by: Literal["document"] | None = Field(
        default=None, description="document: at most one hit (its best chunk) per document"
    )
    min_score: float | None = Field(
        default=None,
        description="Relevance the best candidate must reach, else no hits and `no_answer`: cosine "
        "similarity of the best vector candidate in vector and hybrid mode, BM25 score in keyword mode",
    )
    fusion: FusionParams | None = Field(
        default=None, description="Hybrid mode only; the deployment's defaults when omitted"
    )


class SearchHit(Strict):
    chunk_id: str
    document_id: str
    version: int
    ordinal: int
    title: str
    heading_path: list[str]
    page: int | None = None
    text: str
    score: float
    char_start: int
    char_end: int


class SearchResponse(Strict):
    hits: list[SearchHit]
    degraded: bool = Field(
        default=False,
        description="True when part of the search could not run and the hits come from the rest",
    )
    no_answer: bool = Field(
        default=False,
        description="True when nothing relevant was found: no visible hit, or the best candidate is below "
        "`min_score`. An answer should say so rather than be generated from these hits",
    )
    degraded_reason: Literal["embedding_unavailable"] | None = Field(
        default=None,
        description="embedding_unavailable: the query could not be embedded for now; hybrid search "
        "answered from keywords alone",
    )


class AnswerRequest(Strict):
    question: str = Field(min_length=1, max_length=4000)
    top_k: int = Field(default=5, ge=1, le=20)
    collection: CollectionName | None = None
    max_tokens: int = Field(default=256, ge=1, le=2048)
    conversation_id: ConversationId | None = Field(
        default=None,
        description="Continue this conversation (one of yours): the question is condensed with the history "
        "into a standalone question before retrieval, the history goes into the prompt, and the turn is "
        "added. Omitted: a new conversation starts; `done` carries its id",
    )
    cache: bool = Field(
        default=True,
        description="false: neither serve a cached answer nor store this one",
    )


class Citation(Strict):
    marker: int = Field(description="The [n] the answer uses for this chunk")
    chunk_id: str
    document_id: str
    version: int
    ordinal: int
    title: str
    heading_path: list[str]
    page: int | None = Field(default=None, description="Page of the original where the chunk starts (PDF)")
    char_start: int = Field(ge=0, description="Where the chunk starts in the document version's parsed text")
    char_end: int = Field(ge=0)


class Usage(Strict):
    prompt_tokens: int
    completion_tokens: int


class TokenEvent(Strict):
    text: str


class CitationsEvent(Strict):
    citations: list[Citation]


DegradedReason = Literal["secondary_llm", "extractive", "interrupted"]

FINISH_REASON = Field(
    description="`stop` or `length` from the model; `no_documents` when nothing visible matched (no model "
    "call); `extractive` when no model answered and the answer quotes the top sources; `interrupted` when "
    "the model failed after the answer began (the text so far is kept)"
)
DEGRADED = Field(
    default=False,
    description="The primary LLM did not give this answer: see `degraded_reason`. Never an empty error: "
    "a failing or circuit-broken LLM endpoint degrades the answer instead",
)
DEGRADED_REASON = Field(
    default=None,
    description="`secondary_llm`: the configured secondary endpoint answered; `extractive`: no LLM could "
    "answer, the text quotes the top retrieved chunks with their citations; `interrupted`: the LLM failed "
    "mid-answer",
)


CACHED = Field(
    default=False,
    description="This answer was generated earlier for the same question over the same sources, which "
    "this caller's own retrieval returned (so it can only cite chunks the caller may see); `usage` is 0",
)
STANDALONE_QUESTION = Field(
    default=None,
    description="A follow-up in a conversation, rewritten with its history into the question that "
    "retrieval used; null on a conversation's first turn",
)


class AnswerTimings(Strict):
    """Where the time of one answer went, in milliseconds from the request's start."""

    condense_ms: float = Field(description="Rewriting a follow-up into a standalone question (0 if none)")
    retrieval_ms: float
    assembly_ms: float = Field(description="Deduplicating, packing and numbering the sources")
    first_token_ms: float | None = Field(description="From the request's start to the first answer text")
    generation_ms: float = Field(description="From the model call (or cache read) to its last token")
    total_ms: float


class DoneEvent(Strict):
    usage: Usage
    finish_reason: str = FINISH_REASON
    degraded: bool = DEGRADED
    degraded_reason: DegradedReason | None = DEGRADED_REASON
    cached: bool = CACHED
    conversation_id: str | None = Field(
        default=None, description="Pass it as `conversation_id` to ask a follow-up"
    )
    turn: int | None = Field(default=None, description="This answer's turn in the conversation, from 1")
    standalone_question: str | None = STANDALONE_QUESTION
    timings: AnswerTimings | None = None


class AnswerResponse(Strict):
    """The non-streaming form (Accept: application/json)."""

    answer: str
    citations: list[Citation]
    usage: Usage
    finish_reason: str = FINISH_REASON
    degraded: bool = DEGRADED
    degraded_reason: DegradedReason | None = DEGRADED_REASON
    cached: bool = CACHED
    conversation_id: str | None = None
    turn: int | None = None
    standalone_question: str | None = STANDALONE_QUESTION
    timings: AnswerTimings | None = None


class ConversationTurn(Strict):
    turn: int = Field(ge=1)
    question: str
    standalone_question: str | None = STANDALONE_QUESTION
    answer: str
    citations: list[Citation]
    finish_reason: str = FINISH_REASON
    degraded: bool = DEGRADED
    cached: bool = CACHED
    created_at: datetime


class Conversation(Strict):
    """GET /v1/conversations/{id}: visible to its owner only (anyone else gets 404)."""

    conversation_id: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime = Field(description="Conversations are deleted this long after their last turn")
    turns: list[ConversationTurn]


# ------------------------------------------------- index maintenance (ingest's reconciler → index)


class IndexedVersion(Strict):
    """How many chunks of one document version the search index holds."""

    document_id: str
    version: int = Field(ge=1)
    active: int = Field(ge=0, description="Chunks searches find")
    inactive: int = Field(ge=0, description="Chunks written but hidden from searches")


class InventoryCommand(Strict):
    """List the index's (document, version) chunk counts, ordered by document id then version."""

    command: Literal["inventory"] = "inventory"
    after: tuple[str, int] | None = Field(default=None, description="The last pair of the previous page")
    size: int = Field(default=1000, ge=1, le=10_000)


class InventoryPage(Strict):
    versions: list[IndexedVersion] = Field(description="A page shorter than the size asked for is the last")


class DeleteVectorsCommand(Strict):
    """Delete a document's chunks: one version, or every version (`version` null)."""

    command: Literal["delete_vectors"] = "delete_vectors"
    document_id: str
    version: int | None = Field(default=None, ge=1)


class RestoreVersionCommand(Strict):
    """Write a version's chunks again from its chunk file and make them searchable."""

    command: Literal["restore_version"] = "restore_version"
    document_id: str
    version: int = Field(ge=1)
    chunks_key: str
    chunk_count: int = Field(ge=0)


IndexMaintenanceCommand = Annotated[
    InventoryCommand | DeleteVectorsCommand | RestoreVersionCommand, Field(discriminator="command")
]


class MaintenanceResult(Strict):
    chunks: int = Field(ge=0, description="Chunks deleted, or chunks now searchable")


ANSWER_STREAM_EVENTS: dict[str, type[BaseModel]] = {
    "token": TokenEvent,
    "citations": CitationsEvent,
    "done": DoneEvent,
    "error": ErrorBody,
}


# --------------------------------------------------------------------------------------------
# Subscriptions (notify): webhooks and emails of the public events
# --------------------------------------------------------------------------------------------

EmailAddress = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class SubscriptionStatus(StrEnum):
    """active, or disabled after sustained delivery failure (SubscriptionDisabled says so)."""

    ACTIVE = "active"
    DISABLED = "disabled"


class CreateSubscriptionRequest(Strict):
    """Exactly one target: `url` (a webhook: HTTPS, signed, docs/events/README.md) or `email` (through
    SES; DocumentFailed and OperationCompleted only)."""

    url: str | None = Field(
        default=None, min_length=1, max_length=2048, description="HTTPS URL the events are POSTed to"
    )
    email: EmailAddress | None = None
    event_types: list[PublicEventType] = Field(min_length=1, max_length=len(PUBLIC_EVENT_TYPES))
    collection: CollectionName | None = Field(
        default=None, description="Only events of this collection's documents (null: every collection)"
    )
    description: str = Field(default="", max_length=256)

    @model_validator(mode="after")
    def _one_target(self) -> CreateSubscriptionRequest:
        if (self.url is None) == (self.email is None):
            raise ValueError("give exactly one of `url` or `email`")
        if self.email is not None and not {t.value for t in self.event_types} <= EMAIL_EVENT_TYPES:
            raise ValueError(f"email subscriptions take only {sorted(EMAIL_EVENT_TYPES)}")
        return self


class Subscription(Strict):
    subscription_id: str
    url: str | None
    email: str | None
    event_types: list[str]
    collection: str | None
    description: str
    status: SubscriptionStatus
    consecutive_failures: int = Field(description="Failed delivery attempts since the last success")
    failed_attempts: int = Field(description="Failed delivery attempts, ever")
    last_error: str | None = Field(description="Why the last failed attempt failed")
    created_at: datetime
    updated_at: datetime


class CreatedSubscription(Subscription):
    secret: str | None = Field(
        description="Webhooks: the HMAC-SHA256 signing key. Shown only in this response: keep it"
    )


class SubscriptionList(Strict):
    items: list[Subscription]
