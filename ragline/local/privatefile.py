"""The local platform's private state files (the signing key, app clients, API keys): readable by their
owner only from the moment they exist, and replaced whole, so a reader (`ragline dev` reads clients
and keys on every request) never sees a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def secret_digest(secret: str) -> str:
    """What the files keep instead of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def read_json(path: Path) -> Any:
    """The file's JSON, or {} where there is no file yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600; os.replace swaps it in atomically.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_private_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=1).encode())
