"""Pre-filters: each per-message reason, duplicates, spam bursts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from support.data import drop_reason
from twinbot.data.chat_order import time_key
from twinbot.data.filters import FilterOptions, sequence_drop_reasons
from twinbot.data.records import Message, MessageKind

T0 = datetime(2024, 3, 1, 12, 0, 7, 250_000, tzinfo=UTC)


def msg(
    text: str,
    author: str = "alex",
    kind: MessageKind = "text",
    at: datetime = T0,
    is_bot: bool = False,
    author_id: str | None = None,
) -> Message:
    return Message(
        platform="test",
        chat_id="c1",
        id="1",
        timestamp=at,
        author_id=author_id or f"id-{author}",
        author=author,
        text=text,
        kind=kind,
        is_bot=is_bot,
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msg("Alex started a call", kind="system"), "system"),
        (msg("", kind="call"), "call"),
        (msg("", kind="media"), "media_only"),
        (msg("level up!", is_bot=True), "bot"),
        (msg("you reached level 5", author="MEE6"), "bot"),
        (msg("you reached level 5", author="mee6#4876"), "bot"),
        (msg("   \n "), "empty"),
        (msg("!play never gonna give you up"), "bot_command"),
        (msg("/roll 2d6"), "bot_command"),
        (msg("/shrug"), "bot_command"),
        (msg("https://example.com/watch?v=abc"), "link_only"),
        (msg("  https://a.example  <https://b.example/x> "), "link_only"),
        (msg("x" * 2001), "too_long"),
    ],
)
def test_per_message_reasons(message: Message, reason: str) -> None:
    assert drop_reason(message, FilterOptions()) == reason


@pytest.mark.parametrize(
    "text",
    [
        "ok",
        "k",
        "look at https://example.com it's great",
        "/r/python is a nice sub",
        "!!!",
        "wow!",
        "and/or",
        "x" * 2000,
    ],
)
def test_ordinary_messages_are_kept(text: str) -> None:
    assert drop_reason(msg(text), FilterOptions()) is None


def test_length_limits_are_configurable() -> None:
    options = FilterOptions(min_chars=3, max_chars=10)
    assert drop_reason(msg("ok"), options) == "too_short"
    assert drop_reason(msg(" ok "), options) == "too_short"
    assert drop_reason(msg("yes"), options) is None
    assert drop_reason(msg("0123456789"), options) is None
    assert drop_reason(msg("0123456789!"), options) == "too_long"


def test_each_filter_can_be_switched_off() -> None:
    options = FilterOptions(
        drop_system=False,
        drop_calls=False,
        drop_media_only=False,
        drop_bots=False,
        drop_bot_commands=False,
        drop_link_only=False,
    )
    assert drop_reason(msg("changed the name", kind="system"), options) is None
    assert drop_reason(msg("call", kind="call"), options) is None
    assert drop_reason(msg("photo", kind="media"), options) is None
    assert drop_reason(msg("beep", is_bot=True), options) is None
    assert drop_reason(msg("!help"), options) is None
    assert drop_reason(msg("https://example.com"), options) is None


def test_extra_bot_names_match_name_or_id_case_insensitively() -> None:
    options = FilterOptions(bot_names=frozenset({"HelperBot", "u-999"}))
    assert drop_reason(msg("hi", author="helperbot"), options) == "bot"
    assert drop_reason(msg("hi", author="Sam", author_id="U-999"), options) == "bot"
    assert drop_reason(msg("hi", author="MEE6"), options) is None  # the defaults were replaced


def _reasons(messages: list[Message], options: FilterOptions | None = None) -> list[str | None]:
    times = [time_key(m.timestamp) for m in messages]
    return list(sequence_drop_reasons(messages, times, options or FilterOptions()))


def test_duplicates_within_the_window_are_dropped() -> None:
    messages = [
        msg("lol", at=T0),
        msg("lol", at=T0 + timedelta(seconds=20)),  # same author, same text, 20 s later
        msg("lol ", author="sam", at=T0 + timedelta(seconds=30)),  # another author may say it too
        msg("lol", at=T0 + timedelta(minutes=30)),  # outside the 5-minute window
        msg("LOL", at=T0 + timedelta(minutes=30, seconds=5)),  # different text
    ]
    assert _reasons(messages) == [None, "duplicate", None, None, None]


def test_duplicate_window_is_configurable_and_can_be_disabled() -> None:
    messages = [msg("same", at=T0), msg("same", at=T0 + timedelta(seconds=50))]
    assert _reasons(messages, FilterOptions(duplicate_window_s=30)) == [None, None]
    assert _reasons(messages, FilterOptions(duplicate_window_s=0)) == [None, None]
    assert _reasons(messages, FilterOptions(duplicate_window_s=60)) == [None, "duplicate"]


def test_spam_burst_drops_messages_past_the_limit() -> None:
    burst = [msg(f"spam {i}", at=T0 + timedelta(milliseconds=300 * i)) for i in range(12)]
    other = [msg("hi", author="sam", at=T0 + timedelta(milliseconds=100))]
    later = [msg("calm again", at=T0 + timedelta(seconds=30))]
    reasons = _reasons(sorted(burst + other + later, key=lambda m: m.timestamp))
    assert reasons.count("spam_burst") == 12 - 8
    assert reasons[-1] is None


def test_a_fast_human_burst_is_kept() -> None:
    # 8 short messages in 4 seconds is the limit, not past it.
    messages = [msg(f"line {i}", at=T0 + timedelta(milliseconds=500 * i)) for i in range(8)]
    assert _reasons(messages) == [None] * 8


def test_burst_filter_skips_chats_without_seconds() -> None:
    minute = datetime(2024, 3, 1, 12, 0)
    messages = [msg(f"line {i}", at=minute) for i in range(20)]
    assert _reasons(messages) == [None] * 20
