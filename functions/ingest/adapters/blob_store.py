"""One S3 bucket as a `BlobStore` (ingest has two: raw originals and parsed output)."""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError

from functions.ingest.domain.errors import BlobNotFound
from functions.ingest.domain.uploads import ObjectDigest, PresignedPut

_MISSING = {"NoSuchKey", "404", "NotFound"}
_READ_CHUNK = 1024 * 1024


class DeleteFailed(RuntimeError):
    """S3 reported per-object failures in a 200 response (transient: the step retries)."""


class S3BlobStore:
    def __init__(self, s3_client: Any, bucket: str) -> None:
        self._client = s3_client
        self.bucket = bucket

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        return self._get_object(key)["Body"].read()

    def digest(self, key: str) -> ObjectDigest:
        """sha256 and size, streamed in 1 MiB reads (an upload may be far larger than memory wants)."""
        sha256, size = hashlib.sha256(), 0
        for chunk in self._get_object(key)["Body"].iter_chunks(_READ_CHUNK):
            sha256.update(chunk)
            size += len(chunk)
        return ObjectDigest(sha256=sha256.hexdigest(), size_bytes=size)

    def size(self, key: str) -> int | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Every object under `prefix` with all its versions and delete markers (the buckets are
        versioned: a plain DeleteObject would only hide the bytes behind a delete marker)."""
        deleted = 0
        paginator = self._client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            versions = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if versions:
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": versions, "Quiet": True}
                )
                if errors := response.get("Errors"):
                    raise DeleteFailed(f"{len(errors)} objects under {prefix} not deleted: {errors[0]}")
                deleted += len(versions)
        return deleted

    def presign_put(self, key: str, *, content_type: str, size_bytes: int, expires_in_s: int) -> PresignedPut:
        """SigV4 signs the Content-Length, Content-Type and If-None-Match headers, so S3 refuses a
        PUT of another size or type (SignatureDoesNotMatch) and any PUT once the key exists (412)."""
        if self._client.meta.config.signature_version != "s3v4":
            # botocore presigns S3 with SigV2 by default, which signs the type but not the length.
            raise ValueError("presign_put needs an S3 client built with Config(signature_version='s3v4')")
        url = self._client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ContentType": content_type,
                "ContentLength": size_bytes,
                "IfNoneMatch": "*",
            },
            ExpiresIn=expires_in_s,
            HttpMethod="PUT",
        )
        headers = {"Content-Type": content_type, "Content-Length": str(size_bytes), "If-None-Match": "*"}
        return PresignedPut(url=url, headers=headers)

    def _get_object(self, key: str) -> dict[str, Any]:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise BlobNotFound(key) from exc
            raise
