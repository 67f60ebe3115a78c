"""Reads the JSON Lines chunk files ingest writes to the parsed bucket (index only reads them)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from functions.index.domain.errors import ChunksInvalid, ChunksNotFound
from ragline.contracts import Chunk

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3ChunkSource:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._client = s3_client
        self._bucket = bucket

    def read(self, key: str) -> list[Chunk]:
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ChunksNotFound(f"s3://{self._bucket}/{key} does not exist") from exc
            raise
        try:
            return [
                Chunk.model_validate_json(line) for line in body.decode("utf-8").splitlines() if line.strip()
            ]
        except (UnicodeDecodeError, ValidationError) as exc:
            raise ChunksInvalid(f"s3://{self._bucket}/{key} is not JSON Lines of Chunk: {exc}") from exc
