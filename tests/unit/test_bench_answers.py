"""The pure parts of bench/answers.py: reading the two streams and summarising. No timings are asserted."""

from itertools import count

import pytest

from bench.answers import Sample, read_answer_stream, read_llm_stream, summarise
from ragline.contracts import Usage
from ragline.endpoints.llm import LlmDelta, LlmDone


def ticking(start: float = 0.0, step: float = 0.1):
    """A timer that advances `step` seconds each time it is read."""
    ticks = count()
    return lambda: start + step * next(ticks)


def test_the_answer_stream_is_timed_at_its_first_token_and_keeps_citations_and_done():
    lines = [
        ": ping",
        "",
        "event: token",
        'data: {"text": "Yes"}',
        "",
        "event: token",
        'data: {"text": " [1]."}',
        "",
        "event: citations",
        'data: {"citations": [{"chunk_id": "c1"}]}',
        "",
        "event: done",
        'data: {"usage": {"prompt_tokens": 10, "completion_tokens": 2}, "timings": {"total_ms": 5}}',
    ]  # no blank line at the end: the last event still counts
    run = read_answer_stream(iter(lines), started=0.0, timer=ticking(1.0))
    assert run.ttft_s == 1.0  # the timer's first reading, at the first token event
    assert run.text == "Yes [1]."
    assert run.citations == [{"chunk_id": "c1"}]
    assert run.done["timings"] == {"total_ms": 5} and run.error is None
    assert run.total_s == pytest.approx(1.1)


def test_the_first_token_is_timed_before_the_rest_of_the_stream_is_read():
    seen: list[str] = []

    def lines():
        for line in ["event: token", 'data: {"text": "a"}', "", "event: token", 'data: {"text": "b"}', ""]:
            seen.append(line)
            yield line

    def timer() -> float:
        seen.append("timer")
        return 1.0

    read_answer_stream(lines(), 0.0, timer)
    assert seen.index("timer") == 3  # right after the first event's blank line, before the second event


def test_an_error_event_is_kept_and_no_token_means_no_first_token():
    run = read_answer_stream(
        ["event: error", 'data: {"code": "retrieve_failed", "message": "x"}', ""], 0.0, ticking()
    )
    assert run.ttft_s is None and run.done is None
    assert run.error == {"code": "retrieve_failed", "message": "x"}


def test_the_llm_stream_is_timed_at_its_first_text_and_reports_usage():
    events = [
        LlmDelta(""),
        LlmDelta("[2"),
        LlmDelta("] says so"),
        LlmDone("length", Usage(prompt_tokens=812, completion_tokens=64)),
    ]
    run = read_llm_stream(iter(events), started=0.0, timer=ticking(0.5))
    assert run.ttft_s == 0.5 and run.starts_with_marker
    assert (run.prompt_tokens, run.completion_tokens) == (812, 64)


def sample(gateway: float, llm: float, retrieval: float, total: float) -> Sample:
    timings = {
        "condense_ms": 0.0,
        "retrieval_ms": retrieval,
        "assembly_ms": 1.0,
        "first_token_ms": gateway - 5,  # 5 ms outside the service
        "generation_ms": total - retrieval - 1.0,
        "total_ms": total,
    }
    return Sample("q", True, gateway, llm, timings, sources=3, prompt_tokens=800)


def test_the_summary_takes_overhead_per_question_and_shares_of_the_median_total():
    samples = [
        sample(1040, 1000, 30, 2000),
        sample(2050, 2000, 40, 3000),
        sample(3100, 3000, 50, 4000),
    ]
    samples[0].cached, samples[0].cached_ttft_ms = True, 60.0
    summary = summarise(samples)
    assert summary["overhead_ms"]["p50"] == 50 and summary["overhead_ms"]["p90"] == 100
    assert summary["overhead_target_met"]
    # Within each request: outside the service 5 ms + retrieval + assembly 1 ms.
    assert [s.in_request_overhead_ms for s in samples] == [36, 46, 56]
    assert summary["in_request_overhead_ms"]["p50"] == 46 and summary["in_request_overhead_target_met"]
    assert summary["gateway_ttft_ms"]["p50"] == 2050 and summary["llm_ttft_ms"]["p50"] == 2000
    parts = summary["overhead_parts_ms"]
    assert parts["outside_the_service"] == 5 and parts["retrieval"] == 40 and parts["assembly"] == 1
    # 2050 - 5 - 40 - 1 - 2000: the service waited 4 ms longer for the model than this process did
    assert parts["service_llm_wait_minus_llm_ttft"] == 4
    assert summary["phases_ms"]["total"] == 3000
    assert summary["phase_shares"]["retrieval"] == pytest.approx(40 / 3000)
    assert summary["phase_shares"]["generation"] == pytest.approx(2959 / 3000)
    assert summary["cache_hits"] == 1 and summary["cached_ttft_ms"]["p50"] == 60
    slow = summarise([sample(1100, 1000, 50, 2000)])
    assert not slow["overhead_target_met"] and not slow["in_request_overhead_target_met"]
    with pytest.raises(ValueError):
        summarise([])
