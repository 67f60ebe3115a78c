"""Retrieve: the search API and the function the context context invokes. Read-only everywhere.

Their roles come from IndexStack (see stacks/index.py: the domain policy names them); this stack
adds only what is not about the domain.
"""

from __future__ import annotations

from aws_cdk import Stack
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, context_functions
from infra.cdk.stacks.index import IndexStack
from infra.cdk.stacks.models import ModelsStack
from infra.cdk.stacks.platform import PlatformStack

CONTEXT = "retrieve"


class RetrieveStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        platform: PlatformStack,
        index: IndexStack,
        models: ModelsStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.functions: dict[str, RaglineFunction] = context_functions(
            self,
            CONTEXT,
            config=config,
            environment=index.search_environment,
            queues=platform.queues,
            roles=index.search_roles,
        )
        for fn in self.functions.values():
            models.grant_invoke("embedding", fn.role)
