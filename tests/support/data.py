"""Test-only conveniences over twinbot.data: one-call versions of the per-chat and streaming pieces that
`prepare` wires together itself."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from twinbot.data.chat_order import sort_chat, time_key
from twinbot.data.conversations import SessionOptions, chat_conversations
from twinbot.data.filters import DropReason, FilterOptions, MessageFilter
from twinbot.data.records import Conversation, Message
from twinbot.data.scrub import Scrubber

_US_PER_MINUTE = 60_000_000


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
        ordered = sort_chat(chat)
        times = [time_key(m.timestamp) for m in ordered]
        conversations.extend(chat_conversations(ordered, times, me_ids, options))
    return conversations


def session_bounds(times_us: Sequence[int], gap_minutes: float) -> list[tuple[int, int]]:
    """[start, end) ranges of sessions: a new one starts after a silence strictly longer than the gap
    (the rule `chat_conversations` applies in its single pass, written out plainly)."""
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


def drop_reason(message: Message, options: FilterOptions) -> DropReason | None:
    """The reason this message alone is not training text, or None to keep it."""
    return MessageFilter(options)(message)


def scrub_text(text: str) -> tuple[str, dict[str, int]]:
    """The scrubbed text and the number of replacements per type."""
    scrubber = Scrubber()
    return scrubber.scrub(text), {k: v for k, v in scrubber.counts.items() if v}
