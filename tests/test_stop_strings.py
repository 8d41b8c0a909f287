"""OpenAI `stop` strings: checking the parameter, and cutting streamed text at the first stop string."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinbot.bot.openai_api import ApiError
from twinbot.bot.stop_strings import StopMatcher, stop_strings_from


def cut_whole(text: str, stops: list[str]) -> tuple[str, bool]:
    """The reference: the text before the earliest stop string, and whether there was one."""
    starts = [text.find(stop) for stop in stops if stop in text]
    return (text[: min(starts)], True) if starts else (text, False)


def cut_streamed(pieces: list[str], stops: list[str]) -> tuple[list[str], bool]:
    matcher = StopMatcher(stops)
    sent = []
    for piece in pieces:
        sent.append(matcher.feed(piece))
        if matcher.matched:
            break
    if not matcher.matched:
        sent.append(matcher.flush())
    return sent, matcher.matched


def test_a_stop_string_split_across_pieces_is_held_back_then_dropped() -> None:
    sent, matched = cut_streamed(["hey\nUs", "er: hi"], ["\nUser:"])
    assert sent == ["hey", ""] and matched
    sent, matched = cut_streamed(["hey\nUs", "ually fine"], ["\nUser:"])
    assert sent == ["hey", "\nUsually fine", ""] and not matched  # released once it is not a stop string
    sent, matched = cut_streamed(["ab", "cd", "ef"], ["bcx", "de"])
    assert "".join(sent) == "abc" and matched
    assert sent[0] == "a"  # "b" might have begun "bcx"


@given(
    pieces=st.lists(st.text(alphabet="abc\n", max_size=6), max_size=12),
    stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4), min_size=1, max_size=4),
)
def test_streamed_cut_equals_cutting_the_whole_text(pieces: list[str], stops: list[str]) -> None:
    sent, matched = cut_streamed(pieces, stops)
    assert ("".join(sent), matched) == cut_whole("".join(pieces), stops)


def test_stop_parameter_is_one_string_or_up_to_four_short_ones() -> None:
    assert stop_strings_from(None) == ()
    assert stop_strings_from("\n") == ("\n",)
    assert stop_strings_from(["a", "b", "c", "d"]) == ("a", "b", "c", "d")
    assert stop_strings_from("x" * 64) == ("x" * 64,)
    for bad in (["a", "b", "c", "d", "e"], "", ["a", ""], "x" * 65, ["a", "x" * 65]):
        with pytest.raises(ApiError) as caught:
            stop_strings_from(bad)
        assert caught.value.status == 400 and caught.value.param == "stop"
