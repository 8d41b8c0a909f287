"""Messages -> conversations: per chat, in time order, split into sessions at a silence longer than the
session gap; consecutive messages of one author become one `Turn` (message boundaries kept in `texts`).

Time arithmetic is done on integer microseconds since the Unix epoch (`time_key`), so naive and aware
timestamps are never compared with each other, day-long gaps are measured in full (no
`timedelta.seconds` trap) and a gap exactly equal to the threshold stays in the same session.
Naive timestamps (local wall-clock time, e.g. WhatsApp) are read as if they were UTC; within one chat all
timestamps normally share one kind, and a chat mixing both still orders and splits without errors.

Sources whose platform holds only the owner's own messages (the Discord data package) give style-only
conversations: every message is the persona's, and since there is no reply to wait for, a turn there is a
burst of messages sent at most `style_turn_gap_minutes` apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from twinbot.data.records import Conversation, Message, Turn

STYLE_ONLY_PLATFORMS: frozenset[str] = frozenset({"discord-package"})

_EPOCH_AWARE = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_US_PER_MINUTE = 60_000_000


@dataclass(frozen=True, slots=True)
class SessionOptions:
    gap_minutes: float = 30.0
    style_only_platforms: frozenset[str] = STYLE_ONLY_PLATFORMS
    style_turn_gap_minutes: float = 2.0


def time_key(ts: datetime) -> int:
    """Microseconds since 1970-01-01 (UTC for aware timestamps, the naive wall clock read as UTC)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        return (ts.replace(tzinfo=None) - _EPOCH_NAIVE) // _ONE_US
    return (ts - _EPOCH_AWARE) // _ONE_US


def chat_digest(platform: str, chat_id: str) -> str:
    """Stable, opaque chat id: chat ids can hold names or phone numbers, so they are hashed, never written."""
    return hashlib.sha256(f"{platform}\0{chat_id}".encode()).hexdigest()[:16]


def conversation_id(platform: str, chat_id: str, index: int) -> str:
    return f"{chat_digest(platform, chat_id)}-{index}"


def sort_chat(messages: Sequence[Message]) -> tuple[list[Message], list[int]]:
    """One chat's messages in time order (stable for equal times) and their `time_key`s."""
    times = [time_key(m.timestamp) for m in messages]
    if all(times[i] <= times[i + 1] for i in range(len(times) - 1)):
        return list(messages), times
    order = sorted(range(len(messages)), key=times.__getitem__)
    return [messages[i] for i in order], [times[i] for i in order]


def session_bounds(times_us: Sequence[int], gap_minutes: float) -> list[tuple[int, int]]:
    """[start, end) index ranges of sessions: a new one starts after a silence strictly longer than the gap."""
    if not times_us:
        return []
    gap = round(gap_minutes * _US_PER_MINUTE)
    bounds: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(times_us)):
        if times_us[i] - times_us[i - 1] > gap:
            bounds.append((start, i))
            start = i
    bounds.append((start, len(times_us)))  # the last session is kept too
    return bounds


def chat_conversations(
    messages: Sequence[Message],
    times_us: Sequence[int],
    me_ids: Collection[str],
    options: SessionOptions,
) -> list[Conversation]:
    """Conversations of one chat whose messages are already in time order (see `sort_chat`).

    One pass: a silence longer than the gap opens a new conversation (as `session_bounds` splits), and
    inside a conversation a new turn starts when the author changes (style-only: after a pause).
    """
    if not messages:
        return []
    first = messages[0]
    platform, chat_id = first.platform, first.chat_id
    style_only = platform in options.style_only_platforms
    gap = round(options.gap_minutes * _US_PER_MINUTE)
    style_gap = round(options.style_turn_gap_minutes * _US_PER_MINUTE)
    digest = chat_digest(platform, chat_id)
    conversations: list[Conversation] = []
    turns: list[Turn] = []
    current: Turn | None = None
    previous = 0
    for message, now in zip(messages, times_us, strict=True):
        if current is None or now - previous > gap:
            turns = []
            conversations.append(
                Conversation(
                    id=f"{digest}-{len(conversations)}",
                    platform=platform,
                    chat_id=chat_id,
                    turns=turns,
                    style_only=style_only,
                )
            )
            current = None
        elif (now - previous <= style_gap) if style_only else (message.author_id == current.author_id):
            current.texts.append(message.text)
            current.end = message.timestamp
            previous = now
            continue
        current = Turn(
            author_id=message.author_id,
            author=message.author,
            is_me=style_only or message.author_id in me_ids,
            texts=[message.text],
            start=message.timestamp,
            end=message.timestamp,
        )
        turns.append(current)
        previous = now
    return conversations


def build_conversations(
    messages: Iterable[Message], me_ids: Collection[str], options: SessionOptions | None = None
) -> list[Conversation]:
    """Group messages by (platform, chat), order each chat by time and split it into conversations."""
    options = options or SessionOptions()
    chats: dict[tuple[str, str], list[Message]] = {}
    for message in messages:
        chats.setdefault((message.platform, message.chat_id), []).append(message)
    conversations: list[Conversation] = []
    for chat in chats.values():
        ordered, times = sort_chat(chat)
        conversations.extend(chat_conversations(ordered, times, me_ids, options))
    return conversations
