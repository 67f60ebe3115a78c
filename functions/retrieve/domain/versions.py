"""One version of each document per response.

The index only returns active chunks, and while the update saga switches a document to a new version
there is a moment when both versions are active: it activates the new one before it deletes the old
one, so the document is never missing from search. Within that moment one query could fetch chunks of
both; the search keeps only those of the newest version among its candidates, so a response shows
the old version or the new one, never a mix (docs/search.md, "Versions and the active flag")."""

from __future__ import annotations

from collections.abc import Sequence

from ragline.search.port import ScoredChunk


def newest_versions(*lists: Sequence[ScoredChunk]) -> dict[str, int]:
    """The highest version of each document found in any of `lists`."""
    newest: dict[str, int] = {}
    for ranked in lists:
        for item in ranked:
            chunk = item.chunk
            newest[chunk.document_id] = max(chunk.version, newest.get(chunk.document_id, chunk.version))
    return newest


def latest_versions(ranked: Sequence[ScoredChunk], newest: dict[str, int] | None = None) -> list[ScoredChunk]:
    """`ranked` without the chunks of a document version older than `newest` has for that document
    (default: the newest in `ranked`); order kept."""
    newest = newest if newest is not None else newest_versions(ranked)
    return [item for item in ranked if item.chunk.version >= newest.get(item.chunk.document_id, 0)]
