"""Tags that name a deployed resource by its topology name (`ragline.topology.FUNCTION_TAG`,
`STATE_MACHINE_TAG`), so a synthesized template maps back to the specs: the local platform runs a
synthesized state machine with each Lambda ARN resolved to the function it runs locally
(`ragline.local.stepfunctions.local_definition`), found by these tags rather than by logical ids,
which CDK derives from construct paths and hashes."""

from __future__ import annotations

from aws_cdk import Tags
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn

from ragline.topology import FUNCTION_TAG, STATE_MACHINE_TAG


def tag_function(function: lambda_.Function, name: str) -> None:
    """`name` is the topology FunctionSpec name (RaglineFunction tags every function it builds)."""
    Tags.of(function).add(FUNCTION_TAG, name, include_resource_types=["AWS::Lambda::Function"])


def tag_state_machine(state_machine: sfn.StateMachine, name: str) -> None:
    Tags.of(state_machine).add(
        STATE_MACHINE_TAG, name, include_resource_types=["AWS::StepFunctions::StateMachine"]
    )
