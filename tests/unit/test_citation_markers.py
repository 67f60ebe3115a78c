"""The streamed answer's citation markers: real ones kept, invented ones removed, prose untouched,
however the model splits the text into tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.context.domain.citations import MarkerFilter


def filtered(pieces: list[str], markers=(1, 2, 3)) -> tuple[str, list[int]]:
    f = MarkerFilter(markers)
    text = "".join(f.feed(piece) for piece in pieces) + f.flush()
    return text, f.invented


@pytest.mark.parametrize(
    ("answer", "shown", "invented"),
    [
        ("Every 90 days [1].", "Every 90 days [1].", []),
        ("Every 90 days [7].", "Every 90 days .", [7]),
        ("See [1, 7] and [2][9].", "See [1] and [2].", [7, 9]),
        ("See [ 2 , 3 ].", "See [ 2 , 3 ].", []),
        ("The list [see above] stays.", "The list [see above] stays.", []),
        ("An array a[0] and [", "An array a[0] and [", []),
        ("Cited[7] too.", "Cited[7] too.", []),
        ("Unfinished [1", "Unfinished [1", []),
        ("[12]", "", [12]),
    ],
)
def test_markers(answer, shown, invented):
    assert filtered([answer]) == (shown, invented)


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1), st.data())
def test_any_split_into_tokens_gives_the_same_text(cuts, data):
    answer = "Rotation happens every 90 days [1][4], per policy [2, 5]; see [appendix] [3"
    points = sorted({c % len(answer) for c in cuts})
    pieces = [answer[a:b] for a, b in zip([0, *points], [*points, len(answer)], strict=True)]
    assert filtered(pieces) == filtered([answer])
    assert filtered([answer]) == (
        "Rotation happens every 90 days [1], per policy [2]; see [appendix] [3",
        [4, 5],
    )


def test_text_that_cannot_be_a_marker_is_never_held_back():
    f = MarkerFilter({1})
    assert f.feed("Costs [x") == "Costs [x"
    assert f.feed("Costs [1") == "Costs "  # may still be a marker
    assert f.feed("]") == "[1]"
