"""Messages -> conversations: per chat, in time order, split into sessions at a silence longer than the
session gap; consecutive messages of one author become one `Turn` (message boundaries kept in `texts`).

Time arithmetic is done on `chat_order.time_key`s (integer microseconds since the Unix epoch), so naive
and aware timestamps are never compared with each other, day-long gaps are measured in full and a gap
exactly equal to the threshold stays in the same session. Within one chat all timestamps normally share
one kind, and a chat mixing both still orders and splits without errors.

Sources whose platform holds only the owner's own messages (the Discord data package) give style-only
conversations: every message is the persona's, and since there is no reply to wait for, a turn there is a
burst of messages sent at most `style_turn_gap_minutes` apart.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from twinbot.data.records import Conversation, Message, Turn
from twinbot.fileio import keyed_digest

STYLE_ONLY_PLATFORMS: frozenset[str] = frozenset({"discord-package"})

_US_PER_MINUTE = 60_000_000


@dataclass(frozen=True, slots=True)
class SessionOptions:
    gap_minutes: float = 30.0
    style_only_platforms: frozenset[str] = STYLE_ONLY_PLATFORMS
    style_turn_gap_minutes: float = 2.0
    dataset: str = ""  # salts the conversation ids: prepare passes its output folder


def chat_digest(platform: str, chat_id: str, dataset: str = "") -> str:
    """Stable, opaque chat id: chat ids can hold names or phone numbers, so they are never written; the
    digest is keyed with the user's own secret (fileio.keyed_digest), so they cannot be guessed back, and
    salted with the data set, so the ids of two data sets made from the same chats cannot be linked."""
    return keyed_digest("conversation-ids", dataset, platform, chat_id)


def conversation_id(platform: str, chat_id: str, index: int, dataset: str = "") -> str:
    return f"{chat_digest(platform, chat_id, dataset)}-{index}"


def chat_conversations(
    messages: Sequence[Message],
    times_us: Sequence[int],
    me_ids: Collection[str],
    options: SessionOptions,
) -> list[Conversation]:
    """Conversations of one chat whose messages are in time order, `times_us` their `time_key`s.

    One pass: a silence strictly longer than the gap opens a new conversation, and inside a conversation
    a new turn starts when the author changes (style-only: after a pause).
    """
    if not messages:
        return []
    first = messages[0]
    platform, chat_id = first.platform, first.chat_id
    style_only = platform in options.style_only_platforms
    gap = round(options.gap_minutes * _US_PER_MINUTE)
    style_gap = round(options.style_turn_gap_minutes * _US_PER_MINUTE)
    digest = chat_digest(platform, chat_id, options.dataset)
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
