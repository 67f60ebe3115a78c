"""The shared LLM client as the answer service's `LlmStream`: endpoint errors become `LlmFailed`, the
domain's word for "this model did not answer", so the service can fall back without importing the client."""

from __future__ import annotations

from collections.abc import Iterator

from functions.context.domain.errors import LlmFailed
from ragline.endpoints.errors import EndpointError
from ragline.endpoints.llm import LlmClient, LlmEvent


class EndpointLlm:
    def __init__(self, client: LlmClient) -> None:
        self.client = client

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[LlmEvent]:
        events = self.client.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
        try:
            yield from events
        except EndpointError as exc:
            raise LlmFailed(exc.code, exc.message, retryable=exc.retryable) from exc
        finally:
            events.close()  # an abandoned answer closes the model connection
