"""Builds the answer service once per process from settings; tests call `build` with their own parts.

Each LLM endpoint gets its client, and so its circuit breaker, here: once per process."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache

from functions.context.adapters.answer_cache import DynamoAnswerCache
from functions.context.adapters.conversations import DynamoConversationStore
from functions.context.adapters.llm import EndpointLlm
from functions.context.adapters.retriever import LambdaRetriever
from functions.context.domain.ports import AnswerCache, ConversationStore
from functions.context.domain.prompt import estimate_tokens
from functions.context.domain.service import AnswerService, LlmStream, Retriever
from ragline import aws
from ragline.endpoints.llm import llm_client
from ragline.settings import Settings, get_settings


def build(
    settings: Settings,
    *,
    retriever: Retriever | None = None,
    llm: LlmStream | None = None,
    secondary_llm: LlmStream | None = None,
    conversations: ConversationStore | None = None,
    cache: AnswerCache | None = None,
) -> AnswerService:
    if conversations is None:
        conversations = DynamoConversationStore(
            aws.client("dynamodb", settings), settings.conversations_table
        )
    if cache is None and settings.answer_cache_ttl_s:
        cache = DynamoAnswerCache(
            aws.client("dynamodb", settings), settings.answer_cache_table, settings.answer_cache_ttl_s
        )
    if retriever is None:
        lambda_client = aws.client("lambda", settings, endpoint_url=settings.lambda_endpoint_url)
        retriever = LambdaRetriever(lambda_client, settings.retrieve_function)
    if secondary_llm is None and settings.llm_secondary_endpoint:
        secondary_llm = EndpointLlm(llm_client(settings, endpoint=settings.llm_secondary_endpoint))
    return AnswerService(
        retriever,
        llm or EndpointLlm(llm_client(settings)),
        secondary_llm=secondary_llm,
        context_window_tokens=settings.context_window_tokens,
        min_score=settings.answer_min_score,
        on_invented_citations=count_invented_citations,
        count_tokens=llm_token_counter(settings),
        conversations=conversations,
        conversation_ttl=timedelta(days=settings.conversation_ttl_days),
        max_turns=settings.conversation_max_turns,
        cache=cache,
        # A different model behind the endpoint deserves new answers: name the endpoint in the keys.
        model_id=f"{settings.llm_backend}:{settings.llm_endpoint}",
    )


def llm_token_counter(settings: Settings) -> Callable[[str], int]:
    if settings.llm_tokenizer is None:
        return estimate_tokens
    from ragline.tokenizer import HfTokenCounter

    return HfTokenCounter.from_file(settings.llm_tokenizer).count


def count_invented_citations(count: int) -> None:
    """The InventedCitations metric (EMF): markers models cite without a source, removed from answers."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    from ragline.observability import NAMESPACE

    with single_metric(name="InventedCitations", unit=MetricUnit.Count, value=count, namespace=NAMESPACE):
        pass


@lru_cache(maxsize=1)
def service() -> AnswerService:
    return build(get_settings())


@lru_cache(maxsize=1)
def conversation_store() -> ConversationStore:
    settings = get_settings()
    return DynamoConversationStore(aws.client("dynamodb", settings), settings.conversations_table)


@lru_cache(maxsize=1)
def answer_cache() -> AnswerCache | None:
    """None when the cache is off (`answer_cache_ttl_s` 0)."""
    settings = get_settings()
    if not settings.answer_cache_ttl_s:
        return None
    return DynamoAnswerCache(
        aws.client("dynamodb", settings), settings.answer_cache_table, settings.answer_cache_ttl_s
    )
