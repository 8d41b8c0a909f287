"""Records that cross stages: export files -> Message -> Conversation -> Sample.

`Message` is the contract between the source parsers and everything after them (documented in the
README). `Sample` is what `prepare` writes to train.jsonl / eval.jsonl and what training reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

MessageKind = Literal["text", "media", "system", "call"]
MESSAGE_KINDS: tuple[MessageKind, ...] = ("text", "media", "system", "call")

# What a non-text message is, more precisely than its kind (None for ordinary text):
# system events and notices, media of each sort, and bodies that stand for a message that is not there.
Subkind = Literal[
    "reaction",  # "NAME reacted ❤ to your message", a tapback, a "liked a message" notice
    "member_join",  # added, joined, invited
    "member_leave",  # left, removed, kicked
    "rename",  # the group's name, photo or description changed; a nickname set
    "pin",  # a message pinned or unpinned
    "deleted",  # "This message was deleted", an unsent message
    "poll",  # a poll created or voted in
    "call",  # a call, missed call or call summary
    "encryption_notice",  # "Messages and calls are end-to-end encrypted", security code changed
    "placeholder",  # "<Media omitted>", "image omitted", "null": a body standing for content not exported
    "attachment",  # a photo, video, audio, file, sticker or GIF that was exported (or named)
    "location",  # a shared location
    "contact",  # a shared contact card
    "settings",  # disappearing messages, chat settings, group created
    "other",  # a notice of a kind not listed here
]
SUBKINDS: tuple[Subkind, ...] = (
    "reaction", "member_join", "member_leave", "rename", "pin", "deleted", "poll", "call",
    "encryption_notice", "placeholder", "attachment", "location", "contact", "settings", "other",
)  # fmt: skip

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Message:
    """One normalized chat message.

    `timestamp` is timezone-aware when the source has a zone (offset or UTC), naive otherwise.
    Ids are opaque strings (never numbers: Discord snowflakes do not survive floats).
    """

    platform: str
    chat_id: str
    id: str
    timestamp: datetime
    author_id: str
    author: str
    text: str
    kind: MessageKind = "text"
    reply_to: str | None = None
    attachments: int = 0
    is_bot: bool = False  # the source marks the author as a bot (Discord isBot, Slack bot_message, ...)
    subkind: Subkind | None = None  # None for ordinary text; see SUBKINDS
    reactions: int = 0  # reactions other people gave this message, where the export says

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "chat_id": self.chat_id,
            "id": self.id,
            "timestamp": self.timestamp.isoformat(),
            "author_id": self.author_id,
            "author": self.author,
            "text": self.text,
            "kind": self.kind,
            "reply_to": self.reply_to,
            "attachments": self.attachments,
            "is_bot": self.is_bot,
            "subkind": self.subkind,
            "reactions": self.reactions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            platform=str(data["platform"]),
            chat_id=str(data["chat_id"]),
            id=str(data["id"]),
            timestamp=datetime.fromisoformat(data["timestamp"]),
            author_id=str(data["author_id"]),
            author=str(data["author"]),
            text=str(data.get("text") or ""),
            kind=data.get("kind", "text"),
            reply_to=None if data.get("reply_to") is None else str(data["reply_to"]),
            attachments=int(data.get("attachments") or 0),
            is_bot=bool(data.get("is_bot", False)),
            subkind=data.get("subkind"),
            reactions=int(data.get("reactions") or 0),
        )


@dataclass(slots=True)
class Turn:
    """Consecutive messages of one author inside a conversation, message boundaries kept."""

    author_id: str
    author: str
    is_me: bool
    texts: list[str]
    start: datetime
    end: datetime


@dataclass(slots=True)
class Conversation:
    """One session of one chat: messages closer together than the session gap."""

    id: str
    platform: str
    chat_id: str
    turns: list[Turn]
    style_only: bool = False  # the source holds only the persona's own messages (no context)


@dataclass(slots=True)
class ChatTurn:
    role: Role
    content: str


@dataclass(slots=True)
class Sample:
    """One training example in the OpenAI chat `messages` shape; it always ends on an assistant turn."""

    messages: list[ChatTurn]
    conversation_id: str
    style_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": [{"role": t.role, "content": t.content} for t in self.messages],
            "conversation_id": self.conversation_id,
            "style_only": self.style_only,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        known = {"messages", "conversation_id", "style_only"}
        return cls(
            messages=[ChatTurn(role=m["role"], content=m["content"]) for m in data["messages"]],
            conversation_id=str(data.get("conversation_id", "")),
            style_only=bool(data.get("style_only", False)),
            extra={k: v for k, v in data.items() if k not in known},
        )
