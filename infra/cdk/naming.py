"""Construct ids derived from topology names (kebab-case -> PascalCase), and the explicit names of
resources (`ragline-<stage>-...`)."""

from __future__ import annotations

from ragline.topology import pascal

__all__ = ["function_name", "pascal", "resource_name", "rule_name", "state_machine_name"]


def resource_name(stage: str, *parts: str) -> str:
    """`ragline-<stage>[-<part>...]`: the name of a resource of the stage's deployment."""
    return "-".join(("ragline", stage, *parts))


def rule_name(stage: str, rule: str) -> str:
    """The explicit name of a rule another stack must know the ARN of before the rule exists."""
    return resource_name(stage, rule)


def state_machine_name(stage: str, name: str) -> str:
    """The explicit name of a state machine: the ingest API starts executions of it, and its stack
    comes after the API's (it needs functions of later stacks), so the API knows it by name."""
    return resource_name(stage, name)


def function_name(stage: str, name: str) -> str:
    """The explicit name of a function a stack deployed before its own invokes (FunctionSpec.named)."""
    return resource_name(stage, name)
