"""Document text made inert before it is quoted in a prompt.

A source is quoted between `<<<` and `>>>` lines, and the system prompt says quoted text is data. Two
things in a document could still break out of the quote:

- the quote's own markers: a `>>>` line ends the quote early, and what follows (fake instructions, a
  fake `[9]` source) reads as the prompt's own;
- chat-template control tokens (`<|im_end|>`, `<|start_header_id|>`, `[INST]`, `<s>`, ...). Servers that
  tokenize the templated prompt with special tokens parsed, as llama.cpp, vLLM and TGI do by default,
  turn such text in a document into real turn boundaries: `<|im_end|><|im_start|>system` would open
  a system turn. Our own LLM server tokenizes message content as plain text (sagemaker/llm/serve.py);
  this is the defence for any other server behind the endpoint.

Both are neutralised, not deleted: each bracket is swapped for a look-alike (`<` → `‹`, `>` → `›`,
`[` → `［`, `]` → `］`), so a reader, or the model, still sees what the document said, and text with none
of these shapes comes back unchanged, the same string."""

from __future__ import annotations

import re

_LOOK_ALIKE = str.maketrans({"<": "‹", ">": "›", "[": "［", "]": "］"})

_BREAKOUT = re.compile(
    "|".join(
        [
            r"<{3,}|>{3,}",  # the quote markers (also Python's `>>>` prompt: it reads the same as `›››`)
            r"<\|[^|<>\s]{0,64}\|>",  # ChatML, Llama 3, Phi, Qwen, SmolLM: <|im_start|>, <|eot_id|>
            r"<｜[^｜<>\s]{0,64}｜>",  # DeepSeek: <｜begin▁of▁sentence｜>, <｜Assistant｜>
            r"</?s>|<</?SYS>>",  # Llama 2 and Mistral
            r"\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\]",  # Llama 2, Mistral
            r"<(?:start_of_turn|end_of_turn|bos|eos)>",  # Gemma
        ]
    )
)
# Everything str.splitlines() breaks a line on.
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")


def _neutralise(match: re.Match[str]) -> str:
    return match.group().translate(_LOOK_ALIKE)


def quote_text(text: str) -> str:
    """A source's text, safe to put between the quote markers."""
    return _BREAKOUT.sub(_neutralise, text)


def quote_heading(heading: str) -> str:
    """A source's `Title > Heading` line, on one line (a title with a line break could otherwise start
    the quote itself, or something else) and as inert as its text."""
    return quote_text(_LINE_BREAKS.sub(" ", heading))
