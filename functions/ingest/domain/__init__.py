"""Ingest's use cases: accept a document, chunk it, apply the index's outcome.

Plain Python over ports (Protocols below); adapters/ implements them over S3, DynamoDB, EventBridge
and SQS, and tests pass in-memory fakes. Ingest owns the documents table and both buckets.

Status transitions (every write is conditional on the version and the expected current status,
and only moves forwards; see the README for the full diagram):

    received --worker--> parsing --chunks--> chunked --IndexingStarted--> embedding --DocumentIndexed--> indexed
    any of them before indexed --a failure (with its failure_code)--> failed
"""
