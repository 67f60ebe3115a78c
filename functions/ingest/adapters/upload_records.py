"""The one write presigned uploads add to the documents table: the content hash, known only once the
bytes have arrived (the status change after it goes through `DocumentRepository.update_status`)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ragline.contracts import DocumentStatus


class DynamoUploadRecords:
    def __init__(self, dynamodb_client: Any, table_name: str) -> None:
        self._client = dynamodb_client
        self._table = table_name

    def set_content_hash(self, document_id: str, *, version: int, content_hash: str) -> bool:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"id": {"S": document_id}},
                UpdateExpression="SET #hash = :hash",
                ConditionExpression="attribute_exists(#id) AND #version = :version AND #status = :awaiting",
                ExpressionAttributeNames={
                    "#hash": "content_hash",
                    "#id": "id",
                    "#version": "version",
                    "#status": "status",
                },
                ExpressionAttributeValues={
                    ":hash": {"S": content_hash},
                    ":version": {"N": str(version)},
                    ":awaiting": {"S": DocumentStatus.AWAITING_UPLOAD.value},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
