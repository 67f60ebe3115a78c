"""The search index port and its adapters (OpenSearch in AWS, LanceDB locally).

Only the index context writes through it; retrieve only reads (IAM enforces that in AWS)."""

from ragline.search.port import IndexedChunk, ScoredChunk, SearchFilter, SearchIndex

__all__ = ["IndexedChunk", "ScoredChunk", "SearchFilter", "SearchIndex"]
