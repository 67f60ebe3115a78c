"""The repository's cdk.json, whose `context` declares what both the CDK app and the local platform
read (tiers, people's scopes): one file, so the two never disagree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


def cdk_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context, or {} where there is no cdk.json (an installed package)."""
    return json.loads(path.read_text()).get("context", {}) if path.is_file() else {}
