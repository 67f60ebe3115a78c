"""Construct ids derived from topology names (kebab-case -> PascalCase)."""

from __future__ import annotations


def pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
