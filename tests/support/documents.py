"""Real documents of every supported format, generated on the spot (tests and benchmarks).

Each generator is deterministic for its arguments (same text for the same `seed`; PDF and DOCX
bytes are identical run to run too, except the encrypted PDF, whose salt is random) and sized by
its arguments, so a benchmark can ask for 50 pages where a test asks for 2. The prose is drawn from
a fixed vocabulary; every paragraph starts with a marker (`P3.2` = section 3, paragraph 2) so a
test can find where a paragraph landed.
"""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from dataclasses import dataclass

_WORDS = [
    "ingestion",
    "cluster",
    "rotates",
    "database",
    "credentials",
    "every",
    "seventeen",
    "days",
    "storage",
    "team",
    "replication",
    "lag",
    "exceeds",
    "ninety",
    "seconds",
    "index",
    "vectors",
    "embedding",
    "model",
    "tokenizer",
    "budget",
    "overlap",
    "chunk",
    "section",
    "heading",
    "paragraph",
    "table",
    "header",
    "record",
    "citation",
    "page",
    "offset",
    "queue",
    "retry",
    "dead",
    "letter",
    "event",
    "bus",
    "tenant",
    "group",
    "access",
    "control",
    "search",
    "keyword",
    "hybrid",
    "fusion",
    "rank",
    "answer",
    "stream",
    "latency",
    "throughput",
    "deploy",
    "region",
    "bucket",
    "object",
    "version",
    "status",
    "failure",
    "reason",
    "parser",
    "format",
    "upload",
    "limit",
]


def sentence(rng: random.Random, words: int | None = None) -> str:
    n = words or rng.randint(8, 18)
    text = " ".join(rng.choice(_WORDS) for _ in range(n))
    return text[0].upper() + text[1:] + "."


def paragraph(rng: random.Random, marker: str, sentences: int = 4) -> str:
    return f"{marker} " + " ".join(sentence(rng) for _ in range(sentences))


@dataclass(frozen=True)
class Outline:
    """What a generated document contains, for assertions."""

    headings: tuple[str, ...]
    paragraphs: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Markdown and plain text
# ---------------------------------------------------------------------------------------------


def markdown_document(sections: int = 3, paragraphs: int = 3, *, seed: int = 0, table_rows: int = 0) -> str:
    """`# Guide` then `## Section n` sections of paragraphs, a list, and a table of `table_rows`."""
    rng = random.Random(seed)
    parts = ["# Guide", paragraph(rng, "P0.0")]
    for s in range(1, sections + 1):
        parts.append(f"## Section {s}")
        parts.extend(paragraph(rng, f"P{s}.{p}") for p in range(paragraphs))
        parts.append("\n".join(f"- item {s}.{i}: {sentence(rng, 6)}" for i in range(3)))
        if table_rows:
            rows = "\n".join(f"| k{s}.{r} | {sentence(rng, 5)} |" for r in range(table_rows))
            parts.append(f"| key | value |\n|-----|-------|\n{rows}")
    return "\n\n".join(parts) + "\n"


def markdown_of_size(target_bytes: int, *, seed: int = 0) -> str:
    """Markdown of about `target_bytes` (sections of 5 paragraphs, a table every section)."""
    one = markdown_document(1, 5, seed=seed, table_rows=4)
    sections = max(1, target_bytes // len(one.encode()))
    return markdown_document(sections, 5, seed=seed, table_rows=4)


# ---------------------------------------------------------------------------------------------
# PDF (reportlab), encrypted (pypdf), truncated, without text
# ---------------------------------------------------------------------------------------------


def pdf_document(pages: int = 3, paragraphs: int = 3, *, seed: int = 0) -> tuple[bytes, Outline]:
    """One chapter per page (`Chapter n`, an outline entry, so a bookmark), then `paragraphs`
    paragraphs (`Pn.k ...`). Keep `paragraphs` at 6 or fewer for exactly `pages` pages."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    class _Doc(SimpleDocTemplate):
        def afterFlowable(self, flowable: object) -> None:  # noqa: N802 (reportlab's hook name)
            if isinstance(flowable, Paragraph) and flowable.style.name == "Heading1":
                title = flowable.getPlainText()
                key = f"h{id(flowable)}"
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(title, key, level=0)

    rng = random.Random(seed)
    styles = getSampleStyleSheet()
    story: list[object] = []
    headings, paras = [], []
    for page in range(1, pages + 1):
        title = f"Chapter {page}"
        headings.append(title)
        story.append(Paragraph(title, styles["Heading1"]))
        for k in range(paragraphs):
            text = paragraph(rng, f"P{page}.{k}")
            paras.append(text)
            story.append(Paragraph(text, styles["BodyText"]))
        if page < pages:
            story.append(PageBreak())
    buffer = io.BytesIO()
    _Doc(buffer, pagesize=A4, invariant=1, title="Generated", author="tests").build(story)
    return buffer.getvalue(), Outline(tuple(headings), tuple(paras))


def encrypted_pdf(password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_document(1, 2)[0])))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated_pdf() -> bytes:
    data = pdf_document(2, 2)[0]
    return data[: len(data) // 2]


def textless_pdf(pages: int = 2) -> bytes:
    """A PDF with drawings and no text layer (what a scan without OCR looks like to a parser)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas

    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1)
    for page in range(pages):
        canvas.rect(72, 72 + 40 * page, 200, 300, fill=1)
        canvas.line(72, 500, 400, 700)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# DOCX (python-docx)
# ---------------------------------------------------------------------------------------------


def docx_document(
    sections: int = 2, paragraphs: int = 2, *, seed: int = 0, table_rows: int = 3
) -> tuple[bytes, Outline]:
    """Title `Handbook`; per section a `Heading 1` (`Section n`) with paragraphs, a `Heading 2`
    (`Details n`) with a bulleted and a numbered list, and a table (header `Key | Value | Notes`)."""
    import docx

    rng = random.Random(seed)
    document = docx.Document()
    document.add_heading("Handbook", level=0)
    headings, paras = ["Handbook"], []
    for s in range(1, sections + 1):
        document.add_heading(f"Section {s}", level=1)
        headings.append(f"Section {s}")
        for k in range(paragraphs):
            text = paragraph(rng, f"P{s}.{k}")
            paras.append(text)
            document.add_paragraph(text)
        document.add_heading(f"Details {s}", level=2)
        headings.append(f"Details {s}")
        for i in range(2):
            document.add_paragraph(f"bullet {s}.{i} {sentence(rng, 6)}", style="List Bullet")
        for i in range(2):
            document.add_paragraph(f"step {s}.{i} {sentence(rng, 6)}", style="List Number")
        if table_rows:
            table = document.add_table(rows=1 + table_rows, cols=3)
            for cell, name in zip(table.rows[0].cells, ("Key", "Value", "Notes"), strict=True):
                cell.text = name
            for r in range(table_rows):
                cells = table.rows[r + 1].cells
                cells[0].text, cells[1].text, cells[2].text = (
                    f"k{s}.{r}",
                    str(rng.randint(1, 999)),
                    sentence(rng, 5),
                )
    core = document.core_properties
    core.author, core.title = "tests", "Handbook"
    from datetime import datetime

    core.created = core.modified = datetime(2024, 1, 1)
    core.last_modified_by = "tests"
    buffer = io.BytesIO()
    document.save(buffer)
    return _fixed_zip(buffer.getvalue()), Outline(tuple(headings), tuple(paras))


def _fixed_zip(data: bytes) -> bytes:
    """The same archive with fixed timestamps, so the bytes do not depend on the clock."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, source.read(info.filename))
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML, CSV, JSON
# ---------------------------------------------------------------------------------------------

NAV_TEXT = "Home Products Pricing Careers Contact sales"
COOKIE_TEXT = "We use cookies to improve your experience. Accept all cookies or manage preferences."
FOOTER_TEXT = "Copyright 2024 Example Corporation. All rights reserved. Privacy policy. Terms of service."


def html_page(sections: int = 2, paragraphs: int = 3, *, seed: int = 0) -> tuple[bytes, Outline]:
    """An article (`<h1>`, `<h2>` sections of paragraphs, a list, a table) inside a page with a
    navigation bar, a cookie banner, a sidebar and a footer."""
    rng = random.Random(seed)
    headings, paras, body = ["Operations handbook"], [], []
    for s in range(1, sections + 1):
        headings.append(f"Section {s}")
        body.append(f"<h2>Section {s}</h2>")
        for k in range(paragraphs):
            text = paragraph(rng, f"P{s}.{k}")
            paras.append(text)
            body.append(f"<p>{text}</p>")
        body.append("<ul>" + "".join(f"<li>item {s}.{i} {sentence(rng, 6)}</li>" for i in range(3)) + "</ul>")
    body.append(
        "<table><tr><th>Key</th><th>Value</th></tr>"
        + "".join(f"<tr><td>k{r}</td><td>{rng.randint(1, 99)}</td></tr>" for r in range(3))
        + "</table>"
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Operations handbook | Example</title></head>
<body>
<header><nav class="menu"><ul>{"".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in NAV_TEXT.split())}</ul></nav></header>
<div id="cookie-banner" class="cookie-consent"><p>{COOKIE_TEXT}</p><button>Accept</button></div>
<main><article>
<h1>Operations handbook</h1>
{chr(10).join(body)}
</article></main>
<aside class="sidebar"><h3>Related</h3><ul><li><a href="/a">Other page</a></li></ul></aside>
<footer><p>{FOOTER_TEXT}</p></footer>
</body></html>"""
    return page.encode("utf-8"), Outline(tuple(headings), tuple(paras))


CSV_COLUMNS = ("id", "name", "region", "status", "notes")


def csv_document(rows: int = 20, *, seed: int = 0, delimiter: str = ",") -> bytes:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(rows):
        writer.writerow(
            [
                i,
                f"name {i}",
                rng.choice(["eu-west-1", "us-east-1"]),
                rng.choice(["ok", "failed"]),
                sentence(rng, 7),
            ]
        )
    return out.getvalue().encode("utf-8")


def json_records(records: int = 20, *, seed: int = 0) -> bytes:
    """An array of objects with a nested object and a list."""
    rng = random.Random(seed)
    items = [
        {
            "id": i,
            "title": f"record {i}",
            "owner": {"team": rng.choice(["storage", "search"]), "oncall": i % 2 == 0},
            "tags": [rng.choice(_WORDS) for _ in range(2)],
            "summary": sentence(rng, 8),
        }
        for i in range(records)
    ]
    return json.dumps(items, indent=2).encode("utf-8")
