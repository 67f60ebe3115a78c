"""Context: the answers app (ASGI behind the Lambda Web Adapter), its conversations and answer cache,
and the function that invalidates cached answers when documents change.

The answers function calls retrieve through one function (Lambda Invoke) and streams from the LLM
endpoint; it packs prompts with the LLM's tokenizer when one is staged (models.llm.tokenizer).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, context_functions
from infra.cdk.constructs.table import context_tables, grant_table_access
from infra.cdk.environment import env, var
from infra.cdk.packaging import LLM_TOKENIZER_PATH
from infra.cdk.stacks.models import ModelsStack
from infra.cdk.stacks.platform import PlatformStack
from infra.cdk.stacks.retrieve import RetrieveStack

CONTEXT = "context"
RETRIEVE_FUNCTION = "retrieve-invoke"
ANSWERS_FUNCTION = "context-answers"
# Least privilege on the context's own tables (function -> table -> actions): conversations are read
# and appended to with one conditional update; cached answers are read and written whole; invalidation
# only moves a collection's generation forward. Nobody queries, scans or deletes (TTL does).
TABLE_ACCESS: dict[str, dict[str, tuple[str, ...]]] = {
    ANSWERS_FUNCTION: {
        "conversations": ("dynamodb:GetItem", "dynamodb:UpdateItem"),
        "answer-cache": ("dynamodb:GetItem", "dynamodb:PutItem"),
    },
    "context-cache-invalidation": {"answer-cache": ("dynamodb:UpdateItem",)},
}


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
        self.tables: dict[str, dynamodb.Table] = context_tables(self, CONTEXT, config, platform.key)
        retrieve_fn = retrieve.functions[RETRIEVE_FUNCTION].function
        self.functions: dict[str, RaglineFunction] = context_functions(
            self,
            CONTEXT,
            config=config,
            environment={
                var(f"{name.replace('-', '_')}_table"): table.table_name
                for name, table in self.tables.items()
            },
            queues=platform.queues,
        )
        grant_table_access(self.tables, self.functions, TABLE_ACCESS)

        # Only the answers function retrieves and generates.
        answers = self.functions[ANSWERS_FUNCTION]
        generation = env(
            retrieve_function=retrieve_fn.function_name,
            llm_backend="sagemaker",
            llm_endpoint=models.endpoints["llm"].endpoint_name,
            context_window_tokens=str(config.llm_context_window_tokens),
        )
        if config.llm_tokenizer is not None:
            # Staged by infra.cdk.packaging (config.check_assets refuses to synthesize without it).
            generation |= env(llm_tokenizer=LLM_TOKENIZER_PATH)
        for key, value in generation.items():
            answers.function.add_environment(key, value)
        retrieve_fn.grant_invoke(answers.role)
        models.grant_invoke_stream("llm", answers.role)
