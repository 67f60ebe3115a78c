"""Construct ids derived from topology names (kebab-case -> PascalCase)."""

from __future__ import annotations


def pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def rule_name(stage: str, rule: str) -> str:
    """The explicit name of a rule another stack must know the ARN of before the rule exists."""
    return f"ragline-{stage}-{rule}"
