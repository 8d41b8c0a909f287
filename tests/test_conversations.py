"""Session splitting and turn merging."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from support.data import build_conversations, session_bounds
from twinbot.data.chat_order import sort_chat, time_key
from twinbot.data.conversations import SessionOptions, conversation_id
from twinbot.data.records import Message

T0 = datetime(2024, 3, 1, 12, 0, 0)


def msg(
    author: str,
    text: str,
    at: datetime,
    chat: str = "c1",
    platform: str = "test",
) -> Message:
    return Message(
        platform=platform,
        chat_id=chat,
        id=f"{chat}-{at.isoformat()}-{author}",
        timestamp=at,
        author_id=f"id-{author}",
        author=author.title(),
        text=text,
        kind="text",
    )


ME = {"id-me"}


def _sizes(messages: list[Message], gap: float = 30.0) -> list[int]:
    conversations = build_conversations(messages, ME, SessionOptions(gap_minutes=gap))
    return [sum(len(t.texts) for t in c.turns) for c in conversations]


def test_gap_equal_to_threshold_stays_in_the_session_and_one_microsecond_more_splits() -> None:
    exact = [msg("a", "1", T0), msg("me", "2", T0 + timedelta(minutes=30))]
    assert _sizes(exact) == [2]
    over = [msg("a", "1", T0), msg("me", "2", T0 + timedelta(minutes=30, microseconds=1))]
    assert _sizes(over) == [1, 1]


def test_gap_equal_to_threshold_with_fractional_seconds_is_exact() -> None:
    start = T0 + timedelta(microseconds=123_457)
    exact = [msg("a", "1", start), msg("me", "2", start + timedelta(minutes=7.5))]
    assert _sizes(exact, gap=7.5) == [2]


def test_day_long_gaps_split_even_when_timedelta_seconds_would_be_small() -> None:
    # One day and 10 seconds apart: timedelta.seconds == 10, total_seconds() == 86410.
    messages = [msg("a", "1", T0), msg("me", "2", T0 + timedelta(days=1, seconds=10))]
    assert _sizes(messages) == [1, 1]
    weeks = [msg("a", "1", T0), msg("me", "2", T0 + timedelta(days=14))]
    assert _sizes(weeks) == [1, 1]


def test_the_last_session_is_kept() -> None:
    messages = [
        msg("a", "1", T0),
        msg("me", "2", T0 + timedelta(minutes=1)),
        msg("a", "3", T0 + timedelta(hours=5)),
        msg("me", "4", T0 + timedelta(hours=5, minutes=1)),
        msg("a", "last", T0 + timedelta(days=2)),
    ]
    conversations = build_conversations(messages, ME)
    assert len(conversations) == 3
    assert conversations[-1].turns[0].texts == ["last"]
    assert session_bounds([0, 10, 10**12], 1.0) == [(0, 2), (2, 3)]
    assert session_bounds([], 30.0) == []
    assert session_bounds([5], 30.0) == [(0, 1)]


def test_aware_timestamps_across_zones_use_real_time() -> None:
    plus2 = timezone(timedelta(hours=2))
    # 14:00+02:00 is 12:00Z: the second message is 10 minutes after the first, not 2 hours.
    messages = [
        msg("a", "1", datetime(2024, 3, 1, 11, 50, tzinfo=UTC)),
        msg("me", "2", datetime(2024, 3, 1, 14, 0, tzinfo=plus2)),
    ]
    assert _sizes(messages) == [2]


def test_naive_and_aware_chats_and_a_mixed_chat_do_not_crash() -> None:
    naive = [msg("a", "1", T0, chat="n"), msg("me", "2", T0 + timedelta(minutes=1), chat="n")]
    aware = [
        msg("a", "1", T0.replace(tzinfo=UTC), chat="z"),
        msg("me", "2", T0.replace(tzinfo=UTC) + timedelta(minutes=1), chat="z"),
    ]
    mixed = [
        msg("a", "1", T0, chat="m"),
        msg("me", "2", (T0 + timedelta(minutes=2)).replace(tzinfo=UTC), chat="m"),
        msg("a", "3", T0 + timedelta(minutes=1), chat="m"),
    ]
    conversations = build_conversations(naive + aware + mixed, ME)
    assert [c.chat_id for c in conversations] == ["n", "z", "m"]
    assert [t.texts for t in conversations[2].turns] == [["1", "3"], ["2"]]  # sorted by time


def test_messages_are_sorted_stably_within_a_chat() -> None:
    messages = [
        msg("a", "second", T0 + timedelta(minutes=1)),
        msg("b", "tie-1", T0),
        msg("c", "tie-2", T0),
    ]
    ordered = sort_chat(messages)
    times = [time_key(m.timestamp) for m in ordered]
    assert [m.text for m in ordered] == ["tie-1", "tie-2", "second"]
    assert times == sorted(times)
    assert time_key(T0) == time_key(T0.replace(tzinfo=UTC))


def test_consecutive_messages_of_one_author_merge_into_one_turn() -> None:
    messages = [
        msg("a", "hey", T0),
        msg("a", "you there?", T0 + timedelta(seconds=5)),
        msg("me", "yes", T0 + timedelta(seconds=30)),
        msg("me", "what's up", T0 + timedelta(seconds=35)),
        msg("me", "?", T0 + timedelta(seconds=36)),
        msg("b", "hi all", T0 + timedelta(seconds=40)),
    ]
    (conversation,) = build_conversations(messages, ME)
    turns = conversation.turns
    assert [t.texts for t in turns] == [["hey", "you there?"], ["yes", "what's up", "?"], ["hi all"]]
    assert [t.is_me for t in turns] == [False, True, False]
    assert turns[1].start == T0 + timedelta(seconds=30)
    assert turns[1].end == T0 + timedelta(seconds=36)
    assert turns[0].author == "A"


def test_chats_are_separate_even_when_interleaved() -> None:
    messages = [
        msg("a", "1", T0, chat="x"),
        msg("a", "2", T0 + timedelta(seconds=1), chat="y"),
        msg("me", "3", T0 + timedelta(seconds=2), chat="x"),
    ]
    conversations = build_conversations(messages, ME)
    assert sorted((c.chat_id, len(c.turns)) for c in conversations) == [("x", 2), ("y", 1)]
    assert len({c.id for c in conversations}) == 2


def test_discord_package_gives_style_only_conversations() -> None:
    start = T0.replace(tzinfo=UTC)
    messages = [
        msg("owner", "first", start, platform="discord-package"),
        msg("owner", "second", start + timedelta(seconds=20), platform="discord-package"),
        msg("owner", "later", start + timedelta(minutes=10), platform="discord-package"),
        msg("owner", "next day", start + timedelta(days=1), platform="discord-package"),
    ]
    conversations = build_conversations(messages, me_ids=set())
    assert [c.style_only for c in conversations] == [True, True]
    assert [[t.texts for t in c.turns] for c in conversations] == [
        [["first", "second"], ["later"]],
        [["next day"]],
    ]
    assert all(t.is_me for c in conversations for t in c.turns)


def test_conversation_ids_are_stable_and_do_not_leak_the_chat_id() -> None:
    a = conversation_id("whatsapp", "Chat with +44 7700 900123", 0)
    assert a == conversation_id("whatsapp", "Chat with +44 7700 900123", 0)
    assert a != conversation_id("whatsapp", "Chat with +44 7700 900123", 1)
    assert "7700" not in a


def test_conversation_ids_are_keyed_by_a_user_only_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import hashlib

    chat = "Chat with +44 7700 900123"
    monkeypatch.setenv("TWINBOT_CACHE", str(tmp_path / "one"))
    first = conversation_id("whatsapp", chat, 0)
    assert not hashlib.sha256(f"whatsapp\0{chat}".encode()).hexdigest().startswith(first.split("-")[0])
    key = tmp_path / "one" / "keys" / "conversation-ids.key"
    assert len(key.read_bytes()) == 32
    if os.name != "nt":
        assert key.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("TWINBOT_CACHE", str(tmp_path / "two"))  # another user, another key
    assert conversation_id("whatsapp", chat, 0) != first
    monkeypatch.setenv("TWINBOT_CACHE", str(tmp_path / "one"))
    assert conversation_id("whatsapp", chat, 0) == first
    assert conversation_id("whatsapp", chat, 0, dataset="/data/other") != first  # another data set


def test_one_pass_splitting_agrees_with_session_bounds_on_random_chats() -> None:
    import random

    rng = random.Random(1)
    for _ in range(50):
        at = T0
        messages = []
        for i in range(rng.randint(1, 60)):
            at += timedelta(seconds=rng.choice([0, 1, 59, 600, 1800, 1801, 86400]))
            messages.append(msg(rng.choice(["a", "b", "me"]), str(i), at))
        times = [time_key(m.timestamp) for m in sort_chat(list(messages))]
        conversations = build_conversations(messages, ME)
        bounds = session_bounds(times, 30.0)
        assert [sum(len(t.texts) for t in c.turns) for c in conversations] == [e - s for s, e in bounds]
        for c in conversations:
            assert all(a.author_id != b.author_id for a, b in zip(c.turns, c.turns[1:], strict=False))
