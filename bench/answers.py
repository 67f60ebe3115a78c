"""Answers: time to first token through the gateway against the LLM server's own, for the same prompt,
and where an answer's time goes.

    .venv/bin/python -m bench.answers                                # 15 SciFact claims, 2 warm-up
    .venv/bin/python -m bench.answers --questions 4 --warmup 1       # a quicker run
    .venv/bin/python -m bench.answers --out answers.json             # figures as JSON too
    .venv/bin/python -m bench.answers --url http://127.0.0.1:8000 --state-dir .ragline \
        --llm-url http://127.0.0.1:8082                              # a `ragline dev` already running

Starts `ragline dev` on free ports (or uses the one at `--url`, whose state directory issues the
tokens and holds the LLM tokenizer), and ingests the bundled SciFact subset (tests/data/scifact-subset)
into a collection of its own through the documents API; documents already indexed there are reused.
Its claims are the questions.

For each question, after `--warmup` questions that reach the model have run the same way untimed:
  gateway  POST /v1/answers as Server-Sent Events, `"cache": false` so the model runs, `--max-tokens`
           fixed; time to first token = from sending the request to reading the first `token` event,
           timed here. Its `done` event gives the service's own `timings` (retrieval, assembly,
           generation, first token) and its `citations` event the sources the prompt held.
  llm      the same prompt straight to the LLM server, through the platform's own LLM client: the
           prompt is rebuilt as the context function builds it (POST /v1/search as the same user with
           the request the service makes, then `build_prompt` with the platform's settings and the
           LLM's own token counter), and checked against the answer: the same sources, and the same
           prompt size as the server counted it. A question whose prompt differs is skipped and counted.
The two run one after the other, alternating which goes first. llama.cpp reuses the longest prefix of
the prompt it evaluated last, so running one prompt twice would make the second nearly free: before
each timed call an untimed one-token request with the service's system prompt leaves the model holding
only what every answer shares (the template and system prompt), as consecutive answers to different
questions do.
Overhead = gateway - llm per question (target: median <= 50 ms). Each side's time to first token is
seconds of prompt evaluation on a 2-core CPU, and anything else running slows it by seconds, so this
difference of two generations is noisy. The same overhead is also taken within each request, where
the model's part cancels: the gateway's time to first token less the service's own wait for its model
(done.timings: first_token - condense - retrieval - assembly). Its parts: the time outside the service
(gateway, local Lambda streaming, the connection), condense, retrieval and assembly; and the service's
wait for its model against this process's, the noisy rest.
Then the question is asked twice with the cache on: the second comes from the answer cache, and its
time to first token is reported (it includes retrieval: the cache is looked up after the caller's own
retrieval, so it only serves answers built from chunks the caller may see).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.search import percentile
from functions.context.domain.prompt import SYSTEM_PROMPT, Prompt, build_prompt
from functions.context.wiring import llm_token_counter
from ragline.contracts import SearchRequest, SearchResponse
from ragline.endpoints.llm import HttpLlmTransport, LlmClient
from ragline.evaluation.beir import load
from ragline.evaluation.client import PlatformClient
from ragline.local.harness import running_platform
from ragline.local.idp import LocalIdentityProvider
from ragline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "tests" / "data" / "scifact-subset"
COLLECTION = "bench-answers-scifact"
GROUP = "bench-answers"
TARGET_OVERHEAD_MS = 50.0
PHASES = ("condense_ms", "retrieval_ms", "assembly_ms", "generation_ms")


# --------------------------------------------------------------------------------------------
# Reading the two streams
# --------------------------------------------------------------------------------------------


@dataclass
class GatewayRun:
    ttft_s: float | None  # to the first `token` event
    total_s: float
    text: str = ""
    citations: list[dict] = field(default_factory=list)
    done: dict | None = None
    error: dict | None = None


def read_answer_stream(lines: Iterable[str], started: float, timer: Callable[[], float]) -> GatewayRun:
    """An /v1/answers event stream, read as it arrives: the first token's time, the text, the
    citations and the `done` (or `error`) event."""
    run = GatewayRun(ttft_s=None, total_s=0.0)
    parts: list[str] = []
    event, data = "message", []
    for line in itertools.chain(lines, [""]):  # read as it comes; "" ends the last event
        line = line.rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            payload = json.loads("\n".join(data))
            if event == "token":
                if run.ttft_s is None:
                    run.ttft_s = timer() - started
                parts.append(payload["text"])
            elif event == "citations":
                run.citations = payload["citations"]
            elif event == "done":
                run.done = payload
            elif event == "error":
                run.error = payload
            event, data = "message", []
    run.total_s = timer() - started
    run.text = "".join(parts)
    return run


@dataclass
class LlmRun:
    ttft_s: float | None  # to the first text the server streamed
    total_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    starts_with_marker: bool = False  # the service holds "[" back until it knows it is a citation


def read_llm_stream(events: Iterator[Any], started: float, timer: Callable[[], float]) -> LlmRun:
    """The platform LLM client's events (LlmDelta..., LlmDone), read as they arrive."""
    run = LlmRun(ttft_s=None, total_s=0.0)
    for item in events:
        usage = getattr(item, "usage", None)
        if usage is not None:
            run.prompt_tokens, run.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        elif item.text and run.ttft_s is None:
            run.ttft_s = timer() - started
            run.starts_with_marker = item.text.lstrip().startswith("[")
    run.total_s = timer() - started
    return run


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One question's measurements, in milliseconds."""

    question: str
    gateway_first: bool
    gateway_ttft_ms: float
    llm_ttft_ms: float
    timings: dict[str, float | None]  # the gateway answer's done.timings
    sources: int
    prompt_tokens: int | None
    llm_starts_with_marker: bool = False
    cached_ttft_ms: float | None = None
    cached: bool | None = None  # whether the second cached ask was served from the cache

    def _ms(self, key: str) -> float:
        return float(self.timings.get(key) or 0.0)

    @property
    def overhead_ms(self) -> float:
        """Gateway against the LLM server alone: what the issue asks, but the difference of two
        separate generations, each seconds long, so load on the machine swings it by seconds."""
        return self.gateway_ttft_ms - self.llm_ttft_ms

    @property
    def service_llm_wait_ms(self) -> float:
        """From the service's model call to its first shown text: the model's own time to first token
        as the service saw it."""
        return (
            self._ms("first_token_ms")
            - self._ms("condense_ms")
            - self._ms("retrieval_ms")
            - self._ms("assembly_ms")
        )

    @property
    def in_request_overhead_ms(self) -> float:
        """The same overhead within one request: its time to first token less the model's part of it.
        Load slows the model alike on both sides of this difference, so it stays steady."""
        return self.gateway_ttft_ms - self.service_llm_wait_ms

    @property
    def outside_service_ms(self) -> float:
        """Gateway, local Lambda streaming and the connection: before the service's clock starts and
        after its first token."""
        return self.gateway_ttft_ms - self._ms("first_token_ms")


def spread(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p90": percentile(values, 0.90), "n": len(values)}


def summarise(samples: list[Sample]) -> dict[str, Any]:
    """Medians and p90s over the questions; overheads are taken per question, then summarised.
    Phase shares are each phase's median over the median total."""
    if not samples:
        raise ValueError("no samples")

    def median_of(key: str) -> float:
        return statistics.median(s._ms(key) for s in samples)

    total = median_of("total_ms")
    summary: dict[str, Any] = {
        "gateway_ttft_ms": spread([s.gateway_ttft_ms for s in samples]),
        "llm_ttft_ms": spread([s.llm_ttft_ms for s in samples]),
        "overhead_ms": spread([s.overhead_ms for s in samples]),
        "in_request_overhead_ms": spread([s.in_request_overhead_ms for s in samples]),
        "overhead_parts_ms": {
            "outside_the_service": statistics.median(s.outside_service_ms for s in samples),
            "condense": median_of("condense_ms"),
            "retrieval": median_of("retrieval_ms"),
            "assembly": median_of("assembly_ms"),
            # The service's wait for its model against this process's: the noisy part of `overhead_ms`.
            "service_llm_wait_minus_llm_ttft": statistics.median(
                s.service_llm_wait_ms - s.llm_ttft_ms for s in samples
            ),
        },
        "phases_ms": {p.removesuffix("_ms"): median_of(p) for p in (*PHASES, "first_token_ms", "total_ms")},
        "phase_shares": {p.removesuffix("_ms"): (median_of(p) / total if total else 0.0) for p in PHASES},
        "llm_starts_with_marker": sum(s.llm_starts_with_marker for s in samples),
    }
    summary["overhead_target_met"] = summary["overhead_ms"]["p50"] <= TARGET_OVERHEAD_MS
    summary["in_request_overhead_target_met"] = summary["in_request_overhead_ms"]["p50"] <= TARGET_OVERHEAD_MS
    cached = [s.cached_ttft_ms for s in samples if s.cached and s.cached_ttft_ms is not None]
    if cached:
        summary["cached_ttft_ms"] = spread(cached)
    summary["cache_hits"] = sum(bool(s.cached) for s in samples)
    return summary


# --------------------------------------------------------------------------------------------
# The platform
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    base_url: str
    state_dir: Path
    llm_url: str

    def token(self, user: str, groups: list[str]) -> str:
        return LocalIdentityProvider(self.state_dir).issue(user, groups)


@contextmanager
def target(args: argparse.Namespace) -> Iterator[Target]:
    if args.url:
        yield Target(args.url, args.state_dir, args.llm_url)
        return
    with tempfile.TemporaryDirectory() as state, running_platform(Path(state)) as platform:
        yield Target(platform.base_url, platform.state_dir, f"http://127.0.0.1:{platform.ports['llm-port']}")


class Bench:
    """The measurements of one question, against one platform."""

    def __init__(
        self, platform: Target, http: httpx.Client, llm_http: httpx.Client, *, max_tokens: int, top_k: int
    ) -> None:
        """`http`: the gateway's, with the caller's token; `llm_http`: a client of its own for the LLM
        server, as the context function has."""
        # The settings the context function runs with: this environment (the platform inherits it),
        # and the LLM tokenizer the platform extracted into its state directory unless one is set.
        settings = Settings()
        tokenizer = platform.state_dir / "llm-tokenizer.json"
        if settings.llm_tokenizer is None and tokenizer.exists():
            settings = settings.model_copy(update={"llm_tokenizer": str(tokenizer)})
        self.settings = settings
        self.count_tokens = llm_token_counter(settings)
        self.tokenizer = settings.llm_tokenizer
        self.http = http
        self.max_tokens = max_tokens
        self.top_k = top_k
        self.llm = LlmClient(HttpLlmTransport(llm_http, platform.llm_url))
        self.flush_messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Reply OK."},
        ]
        self.timer = time.perf_counter

    def prompt(self, question: str) -> Prompt | None:
        """The prompt the service builds for this question, or None when it would not call the model."""
        request = SearchRequest(
            query=question, top_k=self.top_k, collection=COLLECTION, min_score=self.settings.answer_min_score
        )
        response = self.http.post("/v1/search", json=request.model_dump(mode="json", exclude_none=True))
        response.raise_for_status()
        found = SearchResponse.model_validate(response.json())
        if found.no_answer or not found.hits:
            return None
        return build_prompt(
            question,
            found.hits,
            context_window=self.settings.context_window_tokens,
            max_tokens=self.max_tokens,
            count_tokens=self.count_tokens,
        )

    def flush(self) -> None:
        """Leaves the model holding only the template and system prompt (see the module docstring)."""
        for _ in self.llm.stream(self.flush_messages, max_tokens=1):
            pass

    def gateway(self, question: str, *, cache: bool) -> GatewayRun:
        body = {
            "question": question,
            "top_k": self.top_k,
            "collection": COLLECTION,
            "max_tokens": self.max_tokens,
            "cache": cache,
        }
        started = self.timer()
        with self.http.stream(
            "POST", "/v1/answers", json=body, headers={"Accept": "text/event-stream"}
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"POST /v1/answers: {response.status_code} {response.read()[:500]!r}")
            return read_answer_stream(response.iter_lines(), started, self.timer)

    def direct(self, messages: list[dict[str, str]]) -> LlmRun:
        started = self.timer()
        return read_llm_stream(self.llm.stream(messages, max_tokens=self.max_tokens), started, self.timer)

    def question(self, question: str, gateway_first: bool, *, cached_path: bool) -> Sample | str:
        """One question's sample, or why it was skipped."""
        prompt = self.prompt(question)
        if prompt is None:
            return "no_documents"
        runs: dict[str, Any] = {}
        for side in ("gateway", "llm") if gateway_first else ("llm", "gateway"):
            self.flush()
            runs[side] = (
                self.gateway(question, cache=False) if side == "gateway" else self.direct(prompt.messages)
            )
        answer: GatewayRun = runs["gateway"]
        direct: LlmRun = runs["llm"]
        if answer.error or answer.done is None:
            return f"answer_failed: {answer.error}"
        done = answer.done
        if done.get("degraded") or done.get("finish_reason") == "no_documents":
            return f"answer_not_generated: {done.get('finish_reason')}"
        if [c["chunk_id"] for c in answer.citations] != [c.chunk_id for c in prompt.citations]:
            return "prompt_mismatch: sources"
        if done["usage"]["prompt_tokens"] != direct.prompt_tokens:
            return f"prompt_mismatch: {done['usage']['prompt_tokens']} != {direct.prompt_tokens} tokens"
        if answer.ttft_s is None or direct.ttft_s is None or not done.get("timings"):
            return "no_first_token"
        sample = Sample(
            question=question,
            gateway_first=gateway_first,
            gateway_ttft_ms=answer.ttft_s * 1000,
            llm_ttft_ms=direct.ttft_s * 1000,
            timings=done["timings"],
            sources=len(prompt.citations),
            prompt_tokens=direct.prompt_tokens,
            llm_starts_with_marker=direct.starts_with_marker,
        )
        if cached_path:
            self.gateway(question, cache=True)  # stores the answer (or finds one an earlier run stored)
            again = self.gateway(question, cache=True)
            sample.cached = bool(again.done and again.done.get("cached"))
            sample.cached_ttft_ms = again.ttft_s * 1000 if again.ttft_s is not None else None
        return sample


def ingest(http: httpx.Client, dataset_path: Path, split: str, step: Callable[[str], None]) -> list[str]:
    """The corpus into the bench's collection (what is already indexed there is kept); its claims."""
    dataset = load(dataset_path, split)
    client = PlatformClient(http)
    client.ensure_collection(COLLECTION, "SciFact abstracts for bench/answers.py")
    step(f"ingesting {len(dataset.corpus)} abstracts into {COLLECTION}")
    ingested = client.ingest(list(dataset.corpus.values()), collection=COLLECTION, allowed_groups=[GROUP])
    if ingested.failed:
        raise RuntimeError(f"{len(ingested.failed)} documents failed: {ingested.failed[:3]}")
    step(f"{ingested.uploaded} uploaded, {ingested.reused} already indexed, {ingested.seconds:.0f} s")
    return list(dataset.queries.values())


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=15)
    parser.add_argument(
        "--warmup", type=int, default=2, help="questions that reach the model, run untimed first"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=5, help="as AnswerRequest's default")
    parser.add_argument("--dataset", type=Path, default=DATASET, help="a BEIR folder")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--no-cached-path", action="store_true", help="skip the cached asks")
    parser.add_argument("--url", help="a running `ragline dev` (then --state-dir and --llm-url too)")
    parser.add_argument("--state-dir", type=Path, help="that platform's state directory")
    parser.add_argument("--llm-url", help="that platform's LLM server")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    if args.url and not (args.state_dir and args.llm_url):
        parser.error("--url needs --state-dir and --llm-url")

    def step(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    step("starting ragline dev" if not args.url else f"using {args.url}")
    with target(args) as platform:
        headers = {"Authorization": f"Bearer {platform.token('bench-answers', [GROUP])}"}
        with (
            httpx.Client(base_url=platform.base_url, headers=headers, timeout=600) as http,
            httpx.Client(timeout=600) as llm_http,
        ):
            questions = ingest(http, args.dataset, args.split, step)
            if len(questions) < args.questions:
                step(f"the dataset has {len(questions)} questions; measuring those")
            bench = Bench(platform, http, llm_http, max_tokens=args.max_tokens, top_k=args.top_k)
            step(f"warming up on {args.warmup} questions that reach the model")
            warmed = 0
            for question in questions:
                if warmed >= args.warmup:
                    break
                warmed += isinstance(bench.question(question, warmed % 2 == 0, cached_path=False), Sample)
            samples: list[Sample] = []
            skipped: list[dict[str, str]] = []
            for n, question in enumerate(questions[: args.questions]):
                # Alternate over the measured questions, so a skipped one does not unbalance the order.
                gateway_first = len(samples) % 2 == 0
                result = bench.question(question, gateway_first, cached_path=not args.no_cached_path)
                if isinstance(result, Sample):
                    samples.append(result)
                    step(
                        f"{n + 1}/{args.questions} gateway {result.gateway_ttft_ms:.0f} ms, "
                        f"llm {result.llm_ttft_ms:.0f} ms, overhead {result.overhead_ms:.0f} ms "
                        f"({result.in_request_overhead_ms:.0f} ms within the request)"
                    )
                else:
                    skipped.append({"question": question, "reason": result})
                    step(f"{n + 1}/{args.questions} skipped: {result}")
    if not samples:
        print(f"no question could be measured: {skipped}", file=sys.stderr)
        return 1
    report = {
        "cpu_count": os.cpu_count(),
        "dataset": args.dataset.name,
        "max_tokens": args.max_tokens,
        "top_k": args.top_k,
        "warmup": args.warmup,
        "token_counter": bench.tokenizer or "estimate (no LLM tokenizer)",
        "summary": summarise(samples),
        "samples": [
            {
                **asdict(s),
                "overhead_ms": s.overhead_ms,
                "in_request_overhead_ms": s.in_request_overhead_ms,
                "outside_service_ms": s.outside_service_ms,
            }
            for s in samples
        ],
        "skipped": skipped,
    }
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_report(report: dict) -> None:
    summary, samples = report["summary"], report["samples"]
    print(
        f"{len(samples)} questions measured ({len(report['skipped'])} skipped), max_tokens "
        f"{report['max_tokens']}, top_k {report['top_k']}; {report['cpu_count']} CPUs; "
        f"token counter: {report['token_counter']}"
    )
    print()
    print(
        f"{'#':>3} {'first':7} {'gateway':>9} {'llm':>9} {'overhead':>9} {'in-req.':>8} {'retr.':>7} "
        f"{'assem.':>7} {'cached':>8} {'prompt':>7}"
    )
    for n, s in enumerate(samples, start=1):
        cached = (
            f"{s['cached_ttft_ms']:8.0f}" if s["cached"] and s["cached_ttft_ms"] is not None else f"{'-':>8}"
        )
        print(
            f"{n:3} {'gateway' if s['gateway_first'] else 'llm':7} {s['gateway_ttft_ms']:9.0f} "
            f"{s['llm_ttft_ms']:9.0f} {s['overhead_ms']:9.0f} {s['in_request_overhead_ms']:8.0f} "
            f"{s['timings']['retrieval_ms']:7.0f} {s['timings']['assembly_ms']:7.1f} {cached} "
            f"{s['prompt_tokens'] or 0:7}"
        )
    print()
    print(f"{'time to first token, ms':40} {'p50':>8} {'p90':>8}")
    rows = {
        "gateway_ttft_ms": "through the gateway",
        "llm_ttft_ms": "LLM server alone, same prompt",
        "overhead_ms": "overhead: gateway - LLM alone",
        "in_request_overhead_ms": "overhead within the request",
        "cached_ttft_ms": "cached answer, through the gateway",
    }
    for key, label in rows.items():
        if key in summary:
            print(f"{label:40} {summary[key]['p50']:8.1f} {summary[key]['p90']:8.1f}")
    for key, label in (("overhead", "overhead"), ("in_request_overhead", "overhead within the request")):
        met = "met" if summary[f"{key}_target_met"] else "NOT met"
        print(
            f"{label} p50 {summary[f'{key}_ms']['p50']:.1f} ms (target <= {TARGET_OVERHEAD_MS:.0f} ms): {met}"
        )
    print(
        "overhead, median parts (ms): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in summary["overhead_parts_ms"].items())
    )
    phases = summary["phases_ms"]
    print(
        f"answer time, medians of done.timings (total {phases['total']:.0f} ms, first token "
        f"{phases['first_token']:.0f} ms): "
        + ", ".join(f"{p} {phases[p]:.0f} ms ({share:.1%})" for p, share in summary["phase_shares"].items())
    )
    print(f"cached asks served from the cache: {summary['cache_hits']} of {len(samples)}")
    if summary["llm_starts_with_marker"]:
        print(
            f"{summary['llm_starts_with_marker']} answers start with '[': the service holds it back until "
            "the citation marker is complete (in the service's wait for its model, not in the request's own)"
        )
    for skip in report["skipped"]:
        print(f"skipped: {skip['reason']}: {skip['question'][:80]}")


if __name__ == "__main__":
    sys.exit(main())
