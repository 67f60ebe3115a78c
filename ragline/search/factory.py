"""Picks the search index adapter from settings: OpenSearch in AWS, LanceDB on the local platform.

Each engine's library is imported only when chosen: the Lambda layer ships opensearch-py, not lancedb."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ragline.search.fields import FilterableFields
from ragline.search.port import SearchIndex
from ragline.settings import Settings


def search_index(settings: Settings, *, opensearch: Any = None, lance_db: Any = None) -> SearchIndex:
    """`opensearch` (an `opensearchpy.OpenSearch`) or `lance_db` (a `lancedb` connection) replace the
    clients built from settings, e.g. in tests."""
    fields = FilterableFields(settings.metadata_fields)
    if settings.search_backend == "opensearch":
        from ragline.search.opensearch import HnswParams, OpenSearchIndex, opensearch_client

        if opensearch is None:
            if not settings.opensearch_endpoint:
                raise ValueError("RAGLINE_OPENSEARCH_ENDPOINT is required when search_backend is opensearch")
            import boto3

            credentials = boto3.Session().get_credentials()
            opensearch = opensearch_client(settings.opensearch_endpoint, settings.aws_region, credentials)
        return OpenSearchIndex(
            opensearch,
            settings.search_index,
            dimension=settings.embedding_dimension,
            fields=fields,
            hnsw=HnswParams(
                engine=settings.knn_engine,
                space_type=settings.knn_space_type,
                m=settings.knn_m,
                ef_construction=settings.knn_ef_construction,
                ef_search=settings.knn_ef_search,
            ),
            title_boost=settings.title_boost,
            heading_boost=settings.heading_boost,
        )

    import lancedb

    from ragline.search.lance import LanceIndex

    if lance_db is None:
        # Consistency interval 0: every read sees writes made by other connections or processes.
        lance_db = lancedb.connect(settings.lance_path, read_consistency_interval=timedelta(0))
    return LanceIndex(
        lance_db,
        settings.search_index,
        dimension=settings.embedding_dimension,
        fields=fields,
        title_boost=settings.title_boost,
        heading_boost=settings.heading_boost,
    )
