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
    status: str = "pending"  # uploaded (waiting for the pipeline) | indexed | unchanged | failed
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

    def uploaded(self, rel: str, sha256: str) -> str | None:
        """The document id of a same-content upload an interrupted run left in the pipeline."""
        entry = self._entries.get(rel)
        if entry and entry["sha256"] == sha256 and entry["status"] == "uploaded":
            return entry["document_id"]
        return None

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
        upload_timeout_s: float = 600,
    ) -> None:
        self._http = http
        self._groups = allowed_groups
        self._collection = collection
        self._inline_limit = inline_limit_bytes
        self._timeout = upload_timeout_s

    def submit(self, file: Path, rel: str, sha256: str) -> Outcome:
        """Upload one file; the outcome is `uploaded` (in the pipeline), `unchanged` or `failed`."""
        outcome = Outcome(path=rel, sha256=sha256)
        try:
            created = self._create(file, rel)
        except httpx.HTTPError as exc:
            return _failed(outcome, f"upload failed: {exc}")
        if "error" in created:
            return _failed(outcome, f"{created['error']['code']}: {created['error']['message']}")
        outcome.document_id = created["document_id"]
        outcome.status = "unchanged" if created.get("deduplicated") else "uploaded"
        return outcome

    def check(self, outcome: Outcome) -> Outcome:
        """One look at an uploaded document: final outcomes come back `indexed` or `failed`;
        anything else stays `uploaded`."""
        document = self._http.get(f"/v1/documents/{outcome.document_id}").json()
        if document.get("status") == "indexed":
            outcome.status = "indexed"
        elif document.get("status") == "failed":
            _failed(outcome, f"{document.get('failure_code')}: {document.get('failure_reason')}")
        elif "error" in document:
            _failed(outcome, f"{document['error']['code']}: {document['error']['message']}")
        return outcome

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


def _failed(outcome: Outcome, reason: str) -> Outcome:
    outcome.status, outcome.reason = "failed", reason
    return outcome


def api_headers(token: str, api_key: str | None) -> dict[str, str]:
    """What every call to the API sends: the bearer token, and the API key where there is one."""
    return {"Authorization": f"Bearer {token}", **({"x-api-key": api_key} if api_key else {})}


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
    api_key: str | None = None,
    allowed_groups: list[str],
    collection: str,
    concurrency: int,
    manifest_path: Path,
    show_progress: bool = True,
    poll_interval_s: float = 1.0,
    index_timeout_s: float = 3600,
) -> Summary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    files = discover(paths)
    manifest = Manifest(manifest_path)
    summary = Summary()
    limits = httpx.Limits(max_connections=concurrency * 2)
    with (
        httpx.Client(base_url=api, headers=api_headers(token, api_key), timeout=120, limits=limits) as http,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} files/s"),
            TimeRemainingColumn(),
            disable=not show_progress,
        ) as progress,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        ingester = BulkIngester(http, allowed_groups=allowed_groups, collection=collection)
        # Uploads first, with bounded concurrency, so the pipeline always has work queued ...
        uploading = progress.add_task("upload", total=len(files), rate=0.0)
        in_flight: list[Outcome] = []

        def submit(file: Path, rel: str) -> Outcome:
            sha = sha256_of(file)
            if manifest.done(rel, sha):  # a resumed run: already indexed with this content
                return Outcome(path=rel, sha256=sha, status="unchanged")
            if document_id := manifest.uploaded(rel, sha):  # in the pipeline already: just wait
                return Outcome(path=rel, sha256=sha, document_id=document_id, status="uploaded")
            outcome = ingester.submit(file, rel, sha)
            manifest.record(outcome)
            return outcome

        started = time.monotonic()
        futures = [pool.submit(submit, file, rel) for file, rel in files]
        for done, future in enumerate(as_completed(futures), start=1):
            outcome = future.result()
            if outcome.status == "uploaded":
                in_flight.append(outcome)
            else:
                summary.add(outcome)
            progress.update(uploading, advance=1, rate=done / max(time.monotonic() - started, 1e-9))

        # ... then follow what is still in the pipeline until each document is indexed or failed.
        indexing = progress.add_task(
            "index", total=len(files), completed=len(files) - len(in_flight), rate=0.0
        )
        deadline = time.monotonic() + index_timeout_s
        finished = 0
        while in_flight and time.monotonic() < deadline:
            # Documents finish roughly in upload order: look at the oldest few each round, so a
            # run of thousands costs a bounded number of cheap reads per second.
            for outcome in pool.map(ingester.check, in_flight[: concurrency * 4]):
                if outcome.status != "uploaded":
                    in_flight.remove(outcome)
                    manifest.record(outcome)
                    summary.add(outcome)
                    finished += 1
            progress.update(
                indexing,
                completed=len(files) - len(in_flight),
                rate=finished / max(time.monotonic() - started, 1e-9),
            )
            if in_flight:
                time.sleep(poll_interval_s)
        for outcome in in_flight:  # still in the pipeline: a rerun picks them up where they are
            summary.add(
                _failed(outcome, f"not indexed within {index_timeout_s:.0f}s (rerun to keep waiting)")
            )
    return summary
