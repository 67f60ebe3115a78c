"""`ragline ingest PATH...`: upload a folder tree through the public API.

Bounded concurrency, a progress bar with rate and ETA, resumable (a manifest next to the local state
remembers what was indexed, by content hash, so a rerun uploads only what changed or failed), and a
summary at the end. It is a plain API client: it works against the local platform and a deployment.
Small files go inline (base64); larger ones through a presigned upload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from ragline.contracts import ContentType

# What each extension is, when the bytes alone cannot tell (text formats); the server detects the rest.
EXTENSIONS: dict[str, ContentType] = {
    ".txt": ContentType.TEXT,
    ".md": ContentType.MARKDOWN,
    ".markdown": ContentType.MARKDOWN,
    ".html": ContentType.HTML,
    ".htm": ContentType.HTML,
    ".pdf": ContentType.PDF,
    ".docx": ContentType.DOCX,
    ".csv": ContentType.CSV,
    ".json": ContentType.JSON,
}
FINAL = ("indexed", "failed")


@dataclass
class Outcome:
    path: str
    sha256: str
    document_id: str | None = None
    status: str = "pending"  # indexed | unchanged | failed
    reason: str | None = None


@dataclass
class Summary:
    indexed: list[Outcome] = field(default_factory=list)
    unchanged: list[Outcome] = field(default_factory=list)
    failed: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        getattr(self, outcome.status).append(outcome)

    def lines(self) -> Iterator[str]:
        yield f"indexed {len(self.indexed)}, unchanged {len(self.unchanged)}, failed {len(self.failed)}"
        for outcome in self.failed:
            yield f"  failed  {outcome.path}: {outcome.reason}"


class Manifest:
    """path → the hash and outcome of its last run; rewritten atomically after every file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def done(self, rel: str, sha256: str) -> bool:
        entry = self._entries.get(rel)
        return bool(entry and entry["sha256"] == sha256 and entry["status"] in ("indexed", "unchanged"))

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            self._entries[outcome.path] = asdict(outcome)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            tmp.replace(self._path)


def discover(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, path relative to the argument it was found under), supported extensions only."""
    found = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            if file.suffix.lower() in EXTENSIONS and not any(part.startswith(".") for part in file.parts):
                found.append((file, str(file.relative_to(root.parent if root.is_file() else root))))
    return found


class BulkIngester:
    def __init__(
        self,
        http: httpx.Client,
        *,
        allowed_groups: list[str],
        collection: str = "default",
        inline_limit_bytes: int = 4 * 1024 * 1024,
        poll_interval_s: float = 0.25,
        index_timeout_s: float = 600,
    ) -> None:
        self._http = http
        self._groups = allowed_groups
        self._collection = collection
        self._inline_limit = inline_limit_bytes
        self._poll = poll_interval_s
        self._timeout = index_timeout_s

    def ingest(self, file: Path, rel: str, sha256: str) -> Outcome:
        outcome = Outcome(path=rel, sha256=sha256)
        try:
            created = self._create(file, rel)
        except httpx.HTTPError as exc:
            return _failed(outcome, f"upload failed: {exc}")
        if "error" in created:
            return _failed(outcome, f"{created['error']['code']}: {created['error']['message']}")
        outcome.document_id = created["document_id"]
        if created.get("deduplicated"):
            outcome.status = "unchanged"
            return outcome
        return self._wait(outcome)

    def _create(self, file: Path, rel: str) -> dict:
        data = file.read_bytes()
        declared = EXTENSIONS.get(file.suffix.lower())
        body: dict = {
            "title": file.stem,
            "allowed_groups": self._groups,
            "collection": self._collection,
            "metadata": {"source_path": rel},
            "content_type": declared.value if declared else mimetypes.guess_type(file.name)[0],
        }
        if len(data) <= self._inline_limit:
            response = self._http.post(
                "/v1/documents", json={**body, "content_base64": base64.b64encode(data).decode()}
            )
            return response.json()
        response = self._http.post("/v1/documents", json={**body, "upload": True, "size_bytes": len(data)})
        created = response.json()
        if response.status_code >= 400 or created.get("deduplicated"):
            return created
        target = created["upload"]
        put = httpx.put(target["url"], content=data, headers=target["headers"], timeout=self._timeout)
        if put.status_code >= 300:
            return {"error": {"code": "upload_rejected", "message": f"S3 answered {put.status_code}"}}
        return created

    def _wait(self, outcome: Outcome) -> Outcome:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            document = self._http.get(f"/v1/documents/{outcome.document_id}").json()
            if document.get("status") == "indexed":
                outcome.status = "indexed"
                return outcome
            if document.get("status") == "failed":
                return _failed(outcome, f"{document.get('failure_code')}: {document.get('failure_reason')}")
            time.sleep(self._poll)
        return _failed(outcome, f"not indexed within {self._timeout:.0f}s")


def _failed(outcome: Outcome, reason: str) -> Outcome:
    outcome.status, outcome.reason = "failed", reason
    return outcome


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(
    paths: list[Path],
    *,
    api: str,
    token: str,
    allowed_groups: list[str],
    collection: str,
    concurrency: int,
    manifest_path: Path,
    show_progress: bool = True,
) -> Summary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    files = discover(paths)
    manifest = Manifest(manifest_path)
    summary = Summary()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency * 2)
    with (
        httpx.Client(base_url=api, headers=headers, timeout=120, limits=limits) as http,
        Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} files/s"),
            TimeRemainingColumn(),
            disable=not show_progress,
        ) as progress,
    ):
        task = progress.add_task("ingest", total=len(files), rate=0.0)
        started = time.monotonic()
        ingester = BulkIngester(http, allowed_groups=allowed_groups, collection=collection)

        def one(file: Path, rel: str) -> Outcome:
            sha = sha256_of(file)
            if manifest.done(rel, sha):  # resumed run: already indexed with this content
                return Outcome(path=rel, sha256=sha, status="unchanged")
            outcome = ingester.ingest(file, rel, sha)
            manifest.record(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(one, file, rel) for file, rel in files]
            for done, future in enumerate(as_completed(futures), start=1):
                summary.add(future.result())
                progress.update(task, advance=1, rate=done / max(time.monotonic() - started, 1e-9))
    return summary
