"""HTML: the page's main content, not its navigation, footer or cookie banner.

trafilatura (Apache-2.0) finds the main content and renders it as Markdown (headings, lists,
tables), which is then read like any Markdown document; the parsed text is that Markdown."""

from __future__ import annotations

from ragline.contracts import ContentType

from ..errors import EmptyDocument
from .base import ParsedDocument
from .markdown import parse_text


def parse(data: bytes) -> ParsedDocument:
    import trafilatura  # imported on use: the upload path never parses HTML

    options = {
        "output_format": "markdown",
        "include_tables": True,
        "include_comments": False,
        "include_images": False,
        "include_links": False,
        "with_metadata": False,
        "deduplicate": False,
    }
    # Precision first; a page trafilatura finds no main content in (a short one) gets a second
    # pass that favours recall rather than failing.
    text = trafilatura.extract(data, **options) or trafilatura.extract(data, favor_recall=True, **options)
    if not text or not text.strip():
        raise EmptyDocument("the HTML page has no main text")
    return parse_text(text.replace("\r\n", "\n"), ContentType.HTML)
