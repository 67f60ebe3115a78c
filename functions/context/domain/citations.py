"""Citation markers in a streamed answer: keep the ones that point at a source in the prompt, drop
the ones the model made up.

The model cites with `[n]` (or `[n, m]`) and streams a marker in pieces ("[", "1", "]"), so text that
might be the start of a marker is held back until it is one (kept, or rewritten without invented
numbers, or dropped) or cannot be one (released as it was: "[see above]" is prose). A bracket right
after a letter or digit is code (`a[0]`), not a citation. Nothing else is ever delayed."""

from __future__ import annotations

import re
from collections.abc import Collection

_MARKER = re.compile(r"\[\s*\d+(?:\s*,\s*\d+)*\s*\]")
# What a marker can look like before its closing bracket arrives.
_PARTIAL = re.compile(r"\[\s*(?:\d+(?:\s*,\s*\d*)*\s*)?")
# Longer than any real marker ("[12, 13, 14]"): release it as text.
_MAX_MARKER = 24


class MarkerFilter:
    def __init__(self, markers: Collection[int]) -> None:
        self._valid = set(markers)
        self._held = ""
        self._previous = ""  # the last character shown, which decides whether "[" can open a marker
        self.invented: list[int] = []  # numbers removed, in order

    def feed(self, text: str) -> str:
        """The part of the answer so far that can be shown now."""
        out: list[str] = []
        pending = self._held + text
        self._held = ""
        while pending:
            start = pending.find("[")
            if start < 0:
                out.append(pending)
                break
            out.append(pending[:start])
            before = pending[start - 1] if start else (out_last(out) or self._previous)
            pending = pending[start:]
            if before.isalnum() or before == "_":
                out.append("[")  # an index in code, not a citation
                pending = pending[1:]
                continue
            marker = _MARKER.match(pending)
            if marker:
                out.append(self._kept(marker.group()))
                pending = pending[marker.end() :]
                continue
            partial = _PARTIAL.match(pending)
            if partial and partial.end() == len(pending) and len(pending) < _MAX_MARKER:
                self._held = pending  # may still become a marker
                break
            out.append("[")  # not a marker: prose
            pending = pending[1:]
        shown = "".join(out)
        if shown:
            self._previous = shown[-1]
        return shown

    def flush(self) -> str:
        """What was held back when the answer ends (an unfinished marker is prose)."""
        held, self._held = self._held, ""
        return held

    def _kept(self, marker: str) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", marker)]
        kept = [n for n in numbers if n in self._valid]
        self.invented.extend(n for n in numbers if n not in self._valid)
        if kept == numbers:
            return marker
        return "[" + ", ".join(str(n) for n in kept) + "]" if kept else ""


def out_last(parts: list[str]) -> str:
    return next((part[-1] for part in reversed(parts) if part), "")
