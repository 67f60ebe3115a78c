"""The documents table (DynamoDB): one item per document, keyed by `id`; attributes are the
`Document` fields (datetimes as ISO 8601 strings, absent where None) plus the keys of the listing
indexes (`list_tenant`, `list_collection`, `list_order`: see ragline.topology).

Content claims live in the same table, keyed `hash#<tenant>#<collection>#<sha256>#<groups>` (see
`ports.content_key`), with `kind = content_claim`; a claim is written in one TransactWriteItems with
its document, both conditional, so racing identical uploads make one document. Claims carry no
listing keys, so the indexes hold documents only."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from functions.ingest.domain.errors import DocumentAlreadyExists
from functions.ingest.domain.ports import (
    ContentClaim,
    ContentClaimed,
    DocumentPage,
    PendingEvent,
    listing_position,
)
from ragline.contracts import Document, DocumentStatus

CLAIM_KIND = "content_claim"
# Events a saga owes (the outbox, see `delete`): items of their own kind, keyed by idempotency key.
OUTBOX_KIND = "outbox"
OUTBOX_PREFIX = "outbox#"
# The update saga's reservation (docs/saga.md): the version an operation is building, on the item
# but not part of `Document` (it is the saga's, not the API's).
RESERVED_VERSION = "reserved_version"
# What SwitchVersion writes: the new version's record, as the update saga built it.
SWITCHED_FIELDS = frozenset(
    {
        "version",
        "title",
        "content_type",
        "content_hash",
        "size_bytes",
        "allowed_groups",
        "metadata",
        "status",
        "chunk_count",
        "indexed_count",
        "stage_times",
        "updated_at",
    }
)
TENANT_INDEX = "by-tenant"
COLLECTION_INDEX = "by-collection"

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def _is_condition_failure(exc: ClientError) -> bool:
    """A condition failed: of a single write, or of a transaction's first item (its others have none)."""
    code = exc.response.get("Error", {}).get("Code")
    if code == "TransactionCanceledException":
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
        return reasons[:1] == ["ConditionalCheckFailed"]
    return code == "ConditionalCheckFailedException"


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the model wants int or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def tenant_scope(tenant: str | None) -> str:
    return f"tenant#{tenant or ''}"


def collection_scope(tenant: str | None, collection: str) -> str:
    return f"{tenant_scope(tenant)}#collection#{collection}"


def to_item(document: Document) -> dict[str, Any]:
    data = json.loads(document.model_dump_json(exclude_none=True), parse_float=Decimal)
    data |= {
        "list_tenant": tenant_scope(document.tenant),
        "list_collection": collection_scope(document.tenant, document.collection),
        "list_order": listing_position(document),
    }
    return {key: _SERIALIZER.serialize(value) for key, value in data.items()}


def from_item(item: dict[str, Any]) -> Document:
    return Document.model_validate(
        {
            key: _plain(_DESERIALIZER.deserialize(value))
            for key, value in item.items()
            if key in Document.model_fields
        }
    )


class DynamoDocumentRepository:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def create(
        self, document: Document, *, content_key: str | None = None, replacing: ContentClaim | None = None
    ) -> None:
        put_document = {
            "TableName": self._table,
            "Item": to_item(document),
            "ConditionExpression": "attribute_not_exists(id)",
        }
        if content_key is None:
            try:
                self._client.put_item(**put_document)
            except ClientError as exc:
                if _is_condition_failure(exc) and not self._written_by_us(document):
                    raise DocumentAlreadyExists(document.id) from exc
                if not _is_condition_failure(exc):
                    raise
            return
        claim: dict[str, Any] = {
            "TableName": self._table,
            "Item": {
                "id": {"S": content_key},
                "kind": {"S": CLAIM_KIND},
                "document_id": {"S": document.id},
                "version": {"N": str(document.version)},
            },
            "ConditionExpression": "attribute_not_exists(id)",
        }
        if replacing is not None:  # take over a failed or superseded holder's claim, and only that
            claim["ConditionExpression"] = "document_id = :held AND #version = :held_version"
            claim["ExpressionAttributeNames"] = {"#version": "version"}
            claim["ExpressionAttributeValues"] = {
                ":held": {"S": replacing.document_id},
                ":held_version": {"N": str(replacing.version)},
            }
        try:
            # The token makes botocore's own retries of this call idempotent in DynamoDB (10 min).
            self._client.transact_write_items(
                TransactItems=[{"Put": put_document}, {"Put": claim}],
                ClientRequestToken=f"{document.id}-v{document.version}",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                if self._written_by_us(document):
                    return
                raise DocumentAlreadyExists(document.id) from exc
            error = exc.response.get("Error", {}).get("Code")
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if error == "TransactionCanceledException" and reasons[1:2] == ["ConditionalCheckFailed"]:
                raise ContentClaimed(content_key) from exc
            raise

    def _written_by_us(self, document: Document) -> bool:
        """A retried write (botocore retries a call whose response was lost) finds the record its
        first attempt wrote: ids are fresh, so a record with this id, correlation id and content
        hash can only be that one, and the create succeeded."""
        existing = self.get(document.id)
        return existing is not None and (
            existing.correlation_id,
            existing.content_hash,
            existing.created_at,
        ) == (
            document.correlation_id,
            document.content_hash,
            document.created_at,
        )

    def find_by_content(self, content_key: str) -> ContentClaim | None:
        item = self._client.get_item(
            TableName=self._table, Key={"id": {"S": content_key}}, ConsistentRead=True
        ).get("Item")
        if not item or item.get("kind", {}).get("S") != CLAIM_KIND:
            return None
        return ContentClaim(
            key=content_key, document_id=item["document_id"]["S"], version=int(item["version"]["N"])
        )

    def get(self, document_id: str) -> Document | None:
        response = self._client.get_item(
            TableName=self._table, Key={"id": {"S": document_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item or "kind" in item:  # a content claim is not a document
            return None
        return from_item(item)

    def scan(self) -> Iterator[Document]:
        """A paginated Scan; eventually consistent, which the reconciler allows for (it re-reads
        each document before it repairs anything)."""
        for page in self._client.get_paginator("scan").paginate(TableName=self._table):
            for item in page.get("Items", []):
                if "kind" not in item:  # content claims
                    yield from_item(item)

    def list_page(
        self,
        *,
        tenant: str | None,
        collection: str | None,
        status: DocumentStatus | None,
        after: str | None,
        limit: int,
    ) -> DocumentPage:
        """One Query on an index, newest first: `by-collection` when a collection is given, else
        `by-tenant`. The status filter is applied by DynamoDB after the read (it costs the read)."""
        if collection is None:
            index, key_name, key_value = TENANT_INDEX, "list_tenant", tenant_scope(tenant)
        else:
            index, key_name, key_value = (
                COLLECTION_INDEX,
                "list_collection",
                collection_scope(tenant, collection),
            )
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": "#key = :key",
            "ExpressionAttributeNames": {"#key": key_name},
            "ExpressionAttributeValues": {":key": {"S": key_value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if status is not None:
            query["FilterExpression"] = "#status = :status"
            query["ExpressionAttributeNames"]["#status"] = "status"
            query["ExpressionAttributeValues"][":status"] = {"S": status.value}
        if after is not None:
            query["ExclusiveStartKey"] = {
                "id": {"S": after.partition("#")[2]},
                key_name: {"S": key_value},
                "list_order": {"S": after},
            }
        response = self._client.query(**query)
        last = response.get("LastEvaluatedKey")
        return DocumentPage(
            documents=[from_item(item) for item in response.get("Items", [])],
            last_position=last["list_order"]["S"] if last else None,
        )

    def update_status(
        self,
        document_id: str,
        *,
        version: int,
        expected: Collection[DocumentStatus],
        status: DocumentStatus,
        updated_at: datetime,
        chunk_count: int | None = None,
        indexed_count: int | None = None,
        failure_reason: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        fields: dict[str, Any] = {"status": status.value, "updated_at": updated_at.isoformat()}
        optional = {
            "chunk_count": chunk_count,
            "indexed_count": indexed_count,
            "failure_reason": failure_reason,
            "failure_code": failure_code,
        }
        fields.update({name: value for name, value in optional.items() if value is not None})
        names = {f"#{name}": name for name in fields} | {"#version": "version", "#id": "id"}
        values = {f":{name}": _SERIALIZER.serialize(value) for name, value in fields.items()}
        # When the record entered this status (every document is created with a stage_times map).
        names |= {"#stage_times": "stage_times", "#stage": status.value}
        values[":version"] = {"N": str(version)}
        expected_names = []
        for i, state in enumerate(sorted(expected)):
            values[f":expected{i}"] = {"S": state.value}
            expected_names.append(f":expected{i}")
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": document_id}},
                UpdateExpression="SET "
                + ", ".join(
                    [*(f"#{name} = :{name}" for name in fields), "#stage_times.#stage = :updated_at"]
                ),
                ConditionExpression=(
                    f"attribute_exists(#id) AND #version = :version AND #status IN ({', '.join(expected_names)})"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    # ------------------------------------------------------------------ sagas (docs/saga.md)

    def claim_operation(self, document_id: str, operation_id: str, *, holder: str | None) -> bool:
        names = {"#id": "id", "#op": "operation_id"}
        values: dict[str, Any] = {":op": {"S": operation_id}}
        condition = "attribute_exists(#id) AND (attribute_not_exists(#op) OR #op = :op"
        if holder is not None:
            values[":holder"] = {"S": holder}
            condition += " OR #op = :holder"
        return self._conditional_update(
            document_id,
            update="SET #op = :op",
            condition=condition + ")",
            names=names,
            values=values,
        )

    def mark_deleting(
        self, document_id: str, operation_id: str, *, expected: DocumentStatus, updated_at: datetime
    ) -> bool:
        return self._conditional_update(
            document_id,
            update="SET #status = :deleting, #updated_at = :now, #stage_times.#deleting = :now",
            condition="#op = :op AND #status = :expected",
            names={
                "#op": "operation_id",
                "#status": "status",
                "#updated_at": "updated_at",
                "#stage_times": "stage_times",
                "#deleting": DocumentStatus.DELETING.value,
            },
            values={
                ":op": {"S": operation_id},
                ":expected": {"S": expected.value},
                ":deleting": {"S": DocumentStatus.DELETING.value},
                ":now": {"S": updated_at.isoformat()},
            },
        )

    def restore_status(
        self, document_id: str, operation_id: str, *, status: DocumentStatus, updated_at: datetime
    ) -> bool:
        return self._conditional_update(
            document_id,
            update="SET #status = :status, #updated_at = :now REMOVE #op",
            condition="#op = :op AND #status = :deleting",
            names={"#op": "operation_id", "#status": "status", "#updated_at": "updated_at"},
            values={
                ":op": {"S": operation_id},
                ":status": {"S": status.value},
                ":deleting": {"S": DocumentStatus.DELETING.value},
                ":now": {"S": updated_at.isoformat()},
            },
        )

    def reserve_version(
        self, document_id: str, operation_id: str, *, version: int, reserved: int, updated_at: datetime
    ) -> bool:
        return self._conditional_update(
            document_id,
            update="SET #reserved = :reserved, #updated_at = :now",
            condition=(
                "#op = :op AND #version = :version AND #status = :indexed"
                " AND (attribute_not_exists(#reserved) OR #reserved = :reserved)"
            ),
            names={
                "#op": "operation_id",
                "#version": "version",
                "#status": "status",
                "#reserved": RESERVED_VERSION,
                "#updated_at": "updated_at",
            },
            values={
                ":op": {"S": operation_id},
                ":version": {"N": str(version)},
                ":reserved": {"N": str(reserved)},
                ":indexed": {"S": DocumentStatus.INDEXED.value},
                ":now": {"S": updated_at.isoformat()},
            },
        )

    def reserved_version(self, document_id: str) -> int | None:
        item = self._client.get_item(
            TableName=self._table, Key={"id": {"S": document_id}}, ConsistentRead=True
        ).get("Item")
        reserved = (item or {}).get(RESERVED_VERSION)
        return int(reserved["N"]) if reserved else None

    def switch_version(self, document: Document, operation_id: str, *, previous: int) -> bool:
        values = {
            key: value
            for key, value in to_item(document).items()
            if key in SWITCHED_FIELDS or (key == "source_version")
        }
        names = {f"#f{n}": key for n, key in enumerate(values)}
        update = "SET " + ", ".join(f"#f{n} = :f{n}" for n in range(len(values)))
        removed = [] if "source_version" in values else ["source_version"]
        names |= {"#op": "operation_id", "#reserved": RESERVED_VERSION, "#previous": "version"}
        names |= {f"#r{n}": key for n, key in enumerate(removed)}
        remove = " REMOVE #reserved" + "".join(f", #r{n}" for n in range(len(removed)))
        return self._conditional_update(
            document.id,
            update=update + remove,
            condition="#op = :op AND #previous = :previous AND #reserved = :reserved",
            names=names,
            values={
                **{f":f{n}": value for n, value in enumerate(values.values())},
                ":op": {"S": operation_id},
                ":previous": {"N": str(previous)},
                ":reserved": {"N": str(document.version)},
            },
        )

    def release(self, document_id: str, operation_id: str, *, version: int) -> bool:
        return self._conditional_update(
            document_id,
            update="REMOVE #op, #reserved",
            condition="#op = :op AND #version = :version",
            names={"#op": "operation_id", "#reserved": RESERVED_VERSION, "#version": "version"},
            values={":op": {"S": operation_id}, ":version": {"N": str(version)}},
        )

    def move_claim(self, document_id: str, *, version: int, old_key: str | None, new_key: str | None) -> None:
        """Best effort, idempotent: the claim `new_key` for this version if nobody holds it (or this
        document does), then `old_key` removed if this document still holds it at another version."""
        if new_key is not None:
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        "id": {"S": new_key},
                        "kind": {"S": CLAIM_KIND},
                        "document_id": {"S": document_id},
                        "version": {"N": str(version)},
                    },
                    ConditionExpression="attribute_not_exists(id) OR document_id = :id",
                    ExpressionAttributeValues={":id": {"S": document_id}},
                )
            except ClientError as exc:
                if not _is_condition_failure(exc):
                    raise
        if old_key is not None and old_key != new_key:
            try:
                self._client.delete_item(
                    TableName=self._table,
                    Key={"id": {"S": old_key}},
                    ConditionExpression="document_id = :id AND #version <> :version",
                    ExpressionAttributeNames={"#version": "version"},
                    ExpressionAttributeValues={":id": {"S": document_id}, ":version": {"N": str(version)}},
                )
            except ClientError as exc:
                if not _is_condition_failure(exc):
                    raise

    def delete(
        self,
        document_id: str,
        operation_id: str,
        *,
        content_key: str | None,
        announce: PendingEvent | None = None,
    ) -> None:
        """The claim first: once the document is gone, nothing would name its claim any more. The
        document's delete and the outbox item go in one transaction."""
        if content_key is not None:
            try:
                self._client.delete_item(
                    TableName=self._table,
                    Key={"id": {"S": content_key}},
                    ConditionExpression="document_id = :id",
                    ExpressionAttributeValues={":id": {"S": document_id}},
                )
            except ClientError as exc:
                if not _is_condition_failure(exc):  # not ours, or already gone
                    raise
        delete = {
            "TableName": self._table,
            "Key": {"id": {"S": document_id}},
            "ConditionExpression": "operation_id = :op",
            "ExpressionAttributeValues": {":op": {"S": operation_id}},
        }
        try:
            if announce is None:
                self._client.delete_item(**delete)
                return
            outbox = {
                "id": {"S": OUTBOX_PREFIX + announce.key},
                "kind": {"S": OUTBOX_KIND},
                "detail_type": {"S": announce.detail_type},
                "detail": {"S": announce.detail},
                "written_at": {"S": announce.written_at.isoformat()},
            }
            self._client.transact_write_items(
                TransactItems=[{"Delete": delete}, {"Put": {"TableName": self._table, "Item": outbox}}]
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):  # another holder's, or already gone (and announced)
                raise

    def pending_events(self) -> list[PendingEvent]:
        """A Scan filtered on the kind: the outbox is empty but for seconds at a time, and only the
        reconciler's scheduled pass reads it."""
        pending = []
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table,
            FilterExpression="#kind = :outbox",
            ExpressionAttributeNames={"#kind": "kind"},
            ExpressionAttributeValues={":outbox": {"S": OUTBOX_KIND}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                pending.append(
                    PendingEvent(
                        key=item["id"]["S"].removeprefix(OUTBOX_PREFIX),
                        detail_type=item["detail_type"]["S"],
                        detail=item["detail"]["S"],
                        written_at=datetime.fromisoformat(item["written_at"]["S"]),
                    )
                )
        return sorted(pending, key=lambda event: event.written_at)

    def settle(self, key: str) -> None:
        self._client.delete_item(TableName=self._table, Key={"id": {"S": OUTBOX_PREFIX + key}})

    def _conditional_update(
        self,
        document_id: str,
        *,
        update: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": document_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True
