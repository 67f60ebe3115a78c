from pathlib import Path

from ragline.bulk import Manifest, Outcome, Summary, discover, sha256_of


def test_discover_walks_trees_keeps_supported_files_and_skips_hidden(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    for name in ("a/x.md", "a/b/y.PDF", "a/b/z.docx", "notes.txt", "a/skip.exe", ".git/config.json"):
        (tmp_path / name).write_bytes(b"x")
    single = tmp_path / "a" / "x.md"
    found = {rel for _, rel in discover([tmp_path, single])}
    assert found == {"a/x.md", "a/b/y.PDF", "a/b/z.docx", "notes.txt", "x.md"}


def test_manifest_resumes_only_what_finished_with_the_same_content(tmp_path: Path):
    path = tmp_path / "state" / "manifest.json"
    manifest = Manifest(path)
    manifest.record(Outcome(path="a.md", sha256="1", document_id="d1", status="indexed"))
    manifest.record(Outcome(path="b.md", sha256="2", status="failed", reason="corrupt"))
    reloaded = Manifest(path)  # as after an interruption
    assert reloaded.done("a.md", "1")
    assert not reloaded.done("a.md", "changed")  # edited since: upload again
    assert not reloaded.done("b.md", "2")  # failed: try again
    assert not reloaded.done("c.md", "3")


def test_manifest_remembers_uploads_still_in_the_pipeline(tmp_path: Path):
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.record(Outcome(path="a.md", sha256="1", document_id="d1", status="uploaded"))
    reloaded = Manifest(tmp_path / "manifest.json")
    assert reloaded.uploaded("a.md", "1") == "d1"  # a rerun waits for it instead of uploading again
    assert reloaded.uploaded("a.md", "2") is None and not reloaded.done("a.md", "1")


def test_summary_lists_failures_with_reasons():
    summary = Summary()
    for status in ("indexed", "indexed", "unchanged", "failed"):
        summary.add(
            Outcome(
                path=f"{status}.md", sha256="s", status=status, reason="bad" if status == "failed" else None
            )
        )
    assert list(summary.lines()) == ["indexed 2, unchanged 1, failed 1", "  failed  failed.md: bad"]


def test_sha256_streams_large_files(tmp_path: Path):
    import hashlib

    data = b"ab" * 3_000_000
    (tmp_path / "big").write_bytes(data)
    assert sha256_of(tmp_path / "big") == hashlib.sha256(data).hexdigest()
