"""`ragline ingest` against the running local platform, as a person runs it: a folder tree in,
a summary out; a rerun uploads nothing that is already indexed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def ingest(platform, *paths) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ragline.cli",
            "--state-dir",
            str(platform.state_dir),
            "ingest",
            "--api",
            platform.base_url,
            "--groups",
            "research",
            "--concurrency",
            "3",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_folder_is_indexed_then_a_rerun_resumes_without_uploading(platform, tmp_path):
    folder = tmp_path / "notes"
    (folder / "deep" / "er").mkdir(parents=True)
    for n in range(5):
        (folder / ("deep" if n % 2 else "deep/er") / f"note-{n}.md").write_text(
            f"# Note {n}\n\nObservation number {n} about tidal turbines and kelp forests.\n"
        )
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n this is not really a pdf")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")  # not a supported extension: never sent

    first = ingest(platform, folder)
    assert first.returncode == 1, first.stdout + first.stderr  # one file failed
    assert first.stdout.splitlines()[0] == "indexed 5, unchanged 0, failed 1", first.stdout
    assert "broken.pdf" in first.stdout

    manifest = json.loads((platform.state_dir / "ingest-manifest.json").read_text())
    assert {entry["status"] for entry in manifest.values()} == {"indexed", "failed"}

    second = ingest(platform, folder)
    assert second.stdout.splitlines()[0] == "indexed 0, unchanged 5, failed 1", second.stdout
