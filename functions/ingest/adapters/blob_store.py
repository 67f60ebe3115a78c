"""One S3 bucket as a `BlobStore` (ingest has two: raw originals and parsed output)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from functions.ingest.domain.errors import BlobNotFound

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3BlobStore:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._client = s3_client
        self.bucket = bucket

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise BlobNotFound(key) from exc
            raise
        return response["Body"].read()
