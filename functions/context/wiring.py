"""Builds the answer service once per process from settings; tests call `build` with their own parts.

Each LLM endpoint gets its client, and so its circuit breaker, here: once per process."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from functions.context.adapters.llm import EndpointLlm
from functions.context.adapters.retriever import LambdaRetriever
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
) -> AnswerService:
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
