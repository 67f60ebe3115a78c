"""`ragline reconcile` against the running local platform: the CLI invokes the platform's own
`ingest-reconcile` function through its Lambda Invoke emulator, which asks `index-maintenance`
the same way. A document whose vectors vanished from the index (what a phantom is) is reported by
a dry run without being touched, then restored, and search finds it again."""

from __future__ import annotations

import json

import pytest

from ragline import cli
from ragline.search.factory import search_index
from ragline.settings import Settings
from tests.e2e.test_delete_saga import hits, indexed_document
from tests.support.api import auth

pytestmark = pytest.mark.e2e


def reconcile(platform, capsys, *flags: str) -> tuple[int, dict]:
    capsys.readouterr()
    url = f"http://127.0.0.1:{platform.ports['lambda-port']}"
    code = cli.main(["reconcile", "--lambda-url", url, *flags])
    return code, json.loads(capsys.readouterr().out)


def test_a_phantom_is_reported_by_a_dry_run_then_restored(platform, http, capsys):
    dana = auth(platform.token("dana", ["maintenance"]))
    document_id = indexed_document(http, dana)
    assert hits(http, dana, document_id) > 0
    index = search_index(Settings(search_backend="lance", lance_path=str(platform.state_dir / "index")))
    assert index.delete_document(document_id) > 0
    assert hits(http, dana, document_id) == 0

    code, report = reconcile(platform, capsys, "--dry-run")
    ours = [f for f in report["findings"] if f["document_id"] == document_id]
    assert code == 1 and report["dry_run"] is True
    assert [(f["kind"], f["outcome"]) for f in ours] == [("phantom_document", "planned")]
    assert hits(http, dana, document_id) == 0

    code, report = reconcile(platform, capsys)
    ours = [f for f in report["findings"] if f["document_id"] == document_id]
    assert [(f["kind"], f["outcome"]) for f in ours] == [("phantom_document", "repaired")]
    assert code == 0, report
    assert hits(http, dana, document_id) > 0
    document = http.get(f"/v1/documents/{document_id}", headers=dana).json()
    assert document["status"] == "indexed"
