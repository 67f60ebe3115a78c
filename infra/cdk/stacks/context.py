"""Context: the streaming answers app (ASGI behind the Lambda Web Adapter).

It calls retrieve through one function (Lambda Invoke) and streams from the LLM endpoint.
"""

from __future__ import annotations

from aws_cdk import Stack
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, context_functions
from infra.cdk.environment import env
from infra.cdk.stacks.models import ModelsStack
from infra.cdk.stacks.platform import PlatformStack
from infra.cdk.stacks.retrieve import RetrieveStack

CONTEXT = "context"
RETRIEVE_FUNCTION = "retrieve-invoke"


class ContextStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        platform: PlatformStack,
        retrieve: RetrieveStack,
        models: ModelsStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retrieve_fn = retrieve.functions[RETRIEVE_FUNCTION].function
        self.functions: dict[str, RaglineFunction] = context_functions(
            self,
            CONTEXT,
            config=config,
            environment=env(
                retrieve_function=retrieve_fn.function_name,
                llm_backend="sagemaker",
                llm_endpoint=models.endpoints["llm"].endpoint_name,
            ),
            queues=platform.queues,
        )
        for fn in self.functions.values():
            retrieve_fn.grant_invoke(fn.role)
            models.grant_invoke_stream("llm", fn.role)
