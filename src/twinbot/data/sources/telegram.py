"""Telegram Desktop JSON export: one chat (`{name, type, id, messages[]}`) or the full account export
(`{about, personal_information, chats{list[...]}, left_chats{list[...]}}`).

The full export can be hundreds of MB in one `result.json`, so the file is streamed with ijson and never
loaded whole. It is read twice: a first pass learns, per chat, its id, whether its messages are already in
time order and how to put zone-less dates on the same clock; the second pass yields messages as they come
(only a chat found out of order is held in memory, as normalized records, and sorted).

Timestamps: `date_unixtime` (UTC) is preferred and gives aware datetimes; without it `date` is naive local
time. A chat mixing both gets the naive ones converted to UTC with the local offset learned from a message
that has both fields (UTC when there is none), so one chat never mixes aware and naive times. A message with
no usable time keeps its place and borrows the previous message's time (the next one's for a chat's leading
messages; the Unix epoch when no message of the chat has a time).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ijson

from twinbot.data.chat_order import UNIX_EPOCH, sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import from_unix_seconds, open_binary, read_head
from twinbot.data.sources.phrases import TELEGRAM_ACTIONS
from twinbot.errors import TwinbotError

NAME = "telegram"

_RESULT_FILE = "result.json"

# Chats live at the root (single-chat export) or in these lists (full export).
_CHAT_PREFIXES = ("", "chats.list.item", "left_chats.list.item")
_CHAT_TYPES = (
    "personal_chat",
    "private_group",
    "private_supergroup",
    "public_supergroup",
    "saved_messages",
    "bot_chat",
    "private_channel",
    "public_channel",
)
_SNIFF_MARKERS = re.compile(
    rb'"personal_information"\s*:|"date_unixtime"\s*:|"type"\s*:\s*"(?:'
    + "|".join(_CHAT_TYPES).encode()
    + rb')"'
)
_JSON_ERRORS: tuple[type[BaseException], ...] = (ijson.JSONError, ValueError, ArithmeticError, RecursionError)
_MEDIA_KEYS = ("photo", "poll", "location_information", "contact_information", "game_information")
_DELETED_ACCOUNT = "Deleted Account"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _resolve_file(path: Path) -> Path:
    """A Telegram Desktop export folder holds `result.json`; a file is taken as is."""
    if path.is_dir():
        candidate = path / _RESULT_FILE
        if candidate.is_file():
            return candidate
        raise TwinbotError(f"no {_RESULT_FILE} in this folder; pass the Telegram export's result.json", path)
    return path


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        path = path / _RESULT_FILE
        if not path.is_file():
            return False
    elif not path.is_file():
        return False
    head = read_head(path).lstrip()
    if not head.startswith(b"{"):
        return False
    return bool(_SNIFF_MARKERS.search(head)) or (b'"from_id"' in head and b'"messages"' in head)


# ---------------------------------------------------------------------------------------------- streaming


@dataclass(slots=True)
class _ChatEvent:
    """One item of the stream: a message of chat `chat` (`raw` set) or the end of that chat (`meta` set)."""

    chat: int
    raw: Any = None
    meta: dict[str, Any] | None = None
    owner_id: str | None = None  # the account owner (full export's personal_information.user_id); chat -1


def _stream(path: Path) -> Iterator[_ChatEvent]:
    """Messages and chat ends in file order, each message built alone (memory bounded by one message)."""
    item_prefixes = {_join(p, "messages.item"): p for p in _CHAT_PREFIXES}
    meta_keys = {_join(p, key): (p, key) for p in _CHAT_PREFIXES for key in ("name", "type", "id")}
    chat_of_prefix: dict[str, int] = {}
    meta_of_prefix: dict[str, dict[str, Any]] = {}
    has_messages: dict[str, bool] = {}
    next_chat = 0
    saw_chat_container = False
    builder: ijson.ObjectBuilder | None = None
    building = ""
    with open_binary(path) as fh:
        try:
            for prefix, event, value in ijson.parse(fh, use_float=True):
                if builder is not None:
                    builder.event(event, value)
                    if prefix == building and event in ("end_map", "end_array"):
                        chat_prefix = item_prefixes[building]
                        yield _ChatEvent(chat_of_prefix[chat_prefix], raw=builder.value)
                        builder = None
                    continue
                if prefix in item_prefixes and item_prefixes[prefix] in chat_of_prefix:
                    if event in ("start_map", "start_array"):
                        builder = ijson.ObjectBuilder()
                        builder.event(event, value)
                        building = prefix
                    else:
                        yield _ChatEvent(chat_of_prefix[item_prefixes[prefix]], raw=value)
                    continue
                if prefix in _CHAT_PREFIXES:
                    if event == "start_map":
                        chat_of_prefix[prefix] = next_chat
                        meta_of_prefix[prefix] = {}
                        has_messages[prefix] = False
                        next_chat += 1
                    elif event == "end_map" and prefix in chat_of_prefix:
                        if has_messages[prefix] or prefix:
                            yield _ChatEvent(chat_of_prefix.pop(prefix), meta=meta_of_prefix.pop(prefix))
                    elif event == "map_key":
                        if value == "messages":
                            has_messages[prefix] = True
                        elif not prefix and value in ("chats", "left_chats"):
                            saw_chat_container = True
                    continue
                if prefix == "personal_information.user_id" and event in ("string", "number"):
                    yield _ChatEvent(-1, owner_id=_opaque_id(value))
                    continue
                if prefix in meta_keys and event in ("string", "number", "integer", "double", "null"):
                    chat_prefix, key = meta_keys[prefix]
                    if chat_prefix in meta_of_prefix:
                        meta_of_prefix[chat_prefix][key] = value
        except _JSON_ERRORS as exc:
            raise TwinbotError(
                "not valid JSON (truncated or corrupted); export the chat again from Telegram Desktop", path
            ) from exc
    if next_chat == 0 or (not has_messages.get("", False) and not saw_chat_container):
        raise TwinbotError(
            "not a Telegram export (no `messages` or `chats` found); pass the result.json that "
            "Telegram Desktop wrote (Settings > Advanced > Export Telegram data, format JSON)",
            path,
        )


# ---------------------------------------------------------------------------------------------- fields


def _unix_time(raw: dict[str, Any]) -> datetime | None:
    value = raw.get("date_unixtime")
    if not isinstance(value, str | int | float):
        return None
    try:
        return from_unix_seconds(value)
    except ValueError:
        return None


def _local_time(raw: dict[str, Any]) -> datetime | None:
    value = raw.get("date")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:  # not what Telegram writes, but an explicit zone is only better
        return parsed.astimezone(UTC)
    return parsed


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for piece in value:
            if isinstance(piece, str):
                parts.append(piece)
            elif isinstance(piece, dict) and isinstance(piece.get("text"), str):
                parts.append(piece["text"])
        return "".join(parts)
    return ""


def _message_text(raw: dict[str, Any]) -> str:
    """`text`, or `text_entities` (the same pieces as a list) when a tool wrote only that."""
    return _text(raw["text"]) if "text" in raw else _text(raw.get("text_entities"))


def _opaque_id(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _attachments(raw: dict[str, Any]) -> int:
    count = sum(1 for key in _MEDIA_KEYS if raw.get(key) is not None)
    if raw.get("file") is not None or raw.get("media_type") is not None or raw.get("sticker_emoji"):
        count += 1  # a sticker/voice/video is one `file` with a `media_type`: count it once
    return count


def _media_subkind(raw: dict[str, Any]) -> Subkind:
    if raw.get("poll") is not None:
        return "poll"
    if raw.get("location_information") is not None:
        return "location"
    if raw.get("contact_information") is not None:
        return "contact"
    return "attachment"


def _reaction_count(raw: dict[str, Any]) -> int:
    """Newer exports list `reactions: [{type, count, emoji}]` on a message."""
    reactions = raw.get("reactions")
    if not isinstance(reactions, list):
        return 0
    return sum(r["count"] for r in reactions if isinstance(r, dict) and type(r.get("count")) is int)


def _author(raw: dict[str, Any], name_key: str, id_key: str) -> tuple[str, str]:
    if name_key in raw:
        name_value = raw[name_key]
        name = _DELETED_ACCOUNT if name_value is None else (_opaque_id(name_value) or "")
    else:
        name = ""
    id_value = raw.get(id_key)
    # Telegram Desktop writes "user123"; tools that write the bare number mean the same user.
    author_id = f"user{id_value}" if type(id_value) is int else _opaque_id(id_value)
    if author_id is None:
        author_id = f"name:{name}" if name and name != _DELETED_ACCOUNT else "unknown"
    return author_id, name or "Unknown"


def _draft(raw: Any, position: int, path: Path) -> Message:
    """A Message without its chat id and final timestamp (both set later)."""
    if not isinstance(raw, dict):
        raise TwinbotError(
            f"message #{position + 1} of a chat is not a JSON object; export the chat again", path
        )
    message_id = _opaque_id(raw.get("id")) or f"#{position}"
    reply = raw.get("reply_to_message_id")
    reply_to = _opaque_id(reply)
    attachments = _attachments(raw)
    if raw.get("type") == "service":
        author_id, author = _author(raw, "actor", "actor_id")
        action = raw.get("action")
        action_text = action if isinstance(action, str) else ""
        subkind: Subkind | None = TELEGRAM_ACTIONS.get(action_text, "other")
        kind: MessageKind = "call" if subkind == "call" else "system"
        text = _message_text(raw) or action_text
    else:
        author_id, author = _author(raw, "from", "from_id")
        text = _message_text(raw)
        if text.strip():
            kind, subkind = "text", None
        elif attachments:
            kind, subkind = "media", _media_subkind(raw)
        else:
            kind, subkind = "system", "placeholder"
    return Message(
        platform=NAME,
        chat_id="",
        id=message_id,
        timestamp=UNIX_EPOCH,
        author_id=author_id,
        author=author,
        text=text,
        kind=kind,
        reply_to=reply_to,
        attachments=attachments,
        subkind=subkind,
        reactions=_reaction_count(raw),
    )


# ---------------------------------------------------------------------------------------------- passes


@dataclass(slots=True)
class _ChatPlan:
    """What the first pass learned about one chat."""

    meta: dict[str, Any] = field(default_factory=dict)
    has_aware: bool = False
    has_naive_only: bool = False
    utc_offset: timedelta | None = None  # local minus UTC, from a message with both date fields
    first_time: datetime | None = None
    last_time: datetime | None = None
    in_order: bool = True

    def observe(self, aware: datetime | None, naive: datetime | None) -> None:
        if aware is not None:
            self.has_aware = True
            if naive is not None and self.utc_offset is None:
                self.utc_offset = naive - aware.replace(tzinfo=None)
        elif naive is not None:
            self.has_naive_only = True
        current = aware or naive
        if current is None:
            return
        if self.first_time is None:
            self.first_time = current
        if self.last_time is not None and (
            (current.tzinfo is None) != (self.last_time.tzinfo is None) or current < self.last_time
        ):
            self.in_order = False
        self.last_time = current

    def resolve(self, aware: datetime | None, naive: datetime | None) -> datetime | None:
        if aware is not None:
            return aware
        if naive is None:
            return None
        if self.has_aware:
            return (naive - (self.utc_offset or timedelta(0))).replace(tzinfo=UTC)
        return naive

    def chat_id(self, ordinal: int) -> str:
        return _opaque_id(self.meta.get("id")) or _opaque_id(self.meta.get("name")) or f"chat-{ordinal + 1}"


def _times(raw: Any) -> tuple[datetime | None, datetime | None]:
    """(aware, naive): `date_unixtime` (or a `date` that carries a zone), and a zone-less `date`."""
    if not isinstance(raw, dict):
        return None, None
    aware, local = _unix_time(raw), _local_time(raw)
    if local is not None and local.tzinfo is not None:
        return aware or local, None
    return aware, local


def _scan(path: Path) -> tuple[dict[int, _ChatPlan], str | None]:
    plans: dict[int, _ChatPlan] = {}
    owner_id: str | None = None
    for event in _stream(path):
        if event.chat < 0:
            owner_id = event.owner_id
            continue
        plan = plans.setdefault(event.chat, _ChatPlan())
        if event.meta is not None:
            plan.meta = event.meta
        else:
            plan.observe(*_times(event.raw))
    return plans, owner_id


def parse(path: Path, options: ParseOptions | None = None) -> Iterator[Message]:
    path = _resolve_file(Path(path))
    plans, owner_id = _scan(path)
    owner = f"user{owner_id}" if owner_id is not None else None
    held: list[Message] = []
    position = 0
    previous: datetime | None = None
    current_chat = -1
    for event in _stream(path):
        if event.chat < 0:
            continue
        plan = plans.get(event.chat, _ChatPlan())
        if event.chat != current_chat:
            current_chat, position, held = event.chat, 0, []
            previous = plan.resolve(*_split(plan.first_time)) if plan.first_time else None
        if event.meta is not None:
            yield from sort_chat(held)
            held = []
            continue
        message = _draft(event.raw, position, path)
        position += 1
        time = plan.resolve(*_times(event.raw))
        if time is None:
            time = previous if previous is not None else UNIX_EPOCH
        previous = time
        message.timestamp = time
        message.chat_id = plan.chat_id(event.chat)
        # In a bot chat everyone but the owner is the bot (known only from a full export).
        message.is_bot = (
            owner is not None and plan.meta.get("type") == "bot_chat" and message.author_id != owner
        )
        if plan.in_order:
            yield message
        else:
            held.append(message)


def _split(moment: datetime) -> tuple[datetime | None, datetime | None]:
    """The (aware, naive) pair `_ChatPlan.resolve` takes, for a time seen in the first pass."""
    return (moment, None) if moment.tzinfo is not None else (None, moment)
