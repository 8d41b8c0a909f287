"""DiscordChatExporter JSON: one file per channel, or a folder of them.

Files can be hundreds of MB, so messages are streamed with ijson (its C backend when installed) and
only the normalized records are kept: one chat must be held in memory to guarantee time order.
Partitioned exports (several files of one channel) are merged into one chat, duplicates dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ijson

from twinbot.data.chat_order import sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import (
    export_files,
    gc_paused,
    head_text,
    open_binary,
    parse_iso_datetime,
    sniff_folder,
)
from twinbot.errors import TwinbotError

NAME = "discord-json"

try:
    _ijson = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - depends on the installed wheel
    _ijson = ijson

_SNIFF_HEAD = re.compile(r'^\s*\{\s*"guild"\s*:\s*\{')
_CHANNEL_ID_IN_NAME = re.compile(r"\[(\d+)\](?: \[part \d+\])?$")
_NO_EXPORT_FILES = "no DiscordChatExporter JSON files in this folder; export channels with --format Json"
_JSON_ERRORS: tuple[type[BaseException], ...] = (
    ijson.JSONError,
    ValueError,
    ArithmeticError,
    RecursionError,
)


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return sniff_folder(path, ".json", _sniff_file)
    return _sniff_file(path)


def _sniff_file(path: Path) -> bool:
    head = head_text(path)
    return bool(_SNIFF_HEAD.match(head)) and '"channel"' in head


def parse(path: Path, options: ParseOptions) -> Iterator[Message]:
    files = export_files(Path(path), ".json", _NO_EXPORT_FILES, _sniff_file)
    chats: dict[str, list[Path]] = {}
    for file in files:
        chats.setdefault(_read_chat_id(file), []).append(file)
    for chat_id, chat_files in chats.items():
        messages: list[Message] = []
        with gc_paused():
            for file in chat_files:
                messages.extend(_parse_file(file, chat_id))
        if len(chat_files) > 1:
            messages = _drop_duplicates(messages)
        yield from sort_chat(messages)
        del messages


def _drop_duplicates(messages: list[Message]) -> list[Message]:
    seen: set[str] = set()
    kept = []
    for message in messages:
        if message.id not in seen:
            seen.add(message.id)
            kept.append(message)
    return kept


def _read_chat_id(path: Path) -> str:
    """The channel id from the file's header (stops reading at the `messages` list)."""
    channel_id: str | None = None
    with open_binary(path) as fh:
        if not fh.read(1):
            raise TwinbotError("the file is empty; export the channel again", path)
        fh.seek(fh.tell() - 1)
        events = _ijson.parse(fh)
        try:
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise TwinbotError(_not_dce("the file does not hold a JSON object"), path)
            for prefix, event, value in events:
                if prefix == "channel.id" and event in ("string", "number"):
                    channel_id = str(value)
                elif prefix == "messages":
                    if event != "start_array":
                        raise TwinbotError(_not_dce("`messages` is not a list"), path)
                    break
            else:
                raise TwinbotError(_not_dce("it has no `messages` list"), path)
        except _JSON_ERRORS as exc:
            raise TwinbotError(_json_problem(exc), path) from exc
    if channel_id:
        return channel_id
    match = _CHANNEL_ID_IN_NAME.search(path.stem)
    return match.group(1) if match else path.stem


def _parse_file(path: Path, chat_id: str) -> Iterator[Message]:
    names: dict[str, str] = {}  # interned author strings: one copy per author, not per message
    index = 0
    with open_binary(path) as fh:
        try:
            for index, raw in enumerate(_ijson.items(fh, "messages.item"), 1):
                try:
                    yield _to_message(raw, chat_id, names)
                except KeyError as exc:
                    raise TwinbotError(
                        f"message #{index} has no {exc.args[0]!r} field; the file is not a complete "
                        "DiscordChatExporter export",
                        path,
                    ) from exc
                except (TypeError, AttributeError, ValueError, ArithmeticError) as exc:
                    raise TwinbotError(
                        f"message #{index} has a field of the wrong type or an invalid timestamp "
                        "(is the file edited or damaged?); export the channel again",
                        path,
                    ) from exc
        except TwinbotError:
            raise
        except _JSON_ERRORS as exc:
            raise TwinbotError(f"{_json_problem(exc)} (after message #{index})", path) from exc


# DiscordChatExporter's message types other than Default/Reply.
TYPE_SUBKINDS: dict[str, Subkind] = {
    "Call": "call",
    "RecipientAdd": "member_join",
    "GuildMemberJoin": "member_join",
    "RecipientRemove": "member_leave",
    "ChannelNameChange": "rename",
    "ChannelIconChange": "rename",
    "ChannelPinnedMessage": "pin",
}


def _to_message(raw: dict[str, Any], chat_id: str, names: dict[str, str]) -> Message:
    # The hot loop of large exports: plain indexing and positional construction on purpose.
    author = raw["author"]
    author_id = author["id"]
    if type(author_id) is not str:
        author_id = _opaque_id(author_id)
    display = author.get("nickname") or author.get("name") or author_id
    if type(display) is not str:
        raise TypeError("author name")
    display = names.setdefault(display, display)  # one copy per author, not per message
    message_id = raw["id"]
    if type(message_id) is not str:
        message_id = _opaque_id(message_id)

    content = raw.get("content") or ""
    if type(content) is not str:
        raise TypeError("content")
    attachments = raw.get("attachments")
    n_attachments = len(attachments) if type(attachments) is list else 0
    message_type = raw.get("type") or "Default"
    kind: MessageKind
    subkind: Subkind | None = None
    reply_to = None
    if message_type == "Default" or message_type == "Reply":
        if content and not content.isspace():
            kind = "text"
        else:
            kind, subkind = "media", "attachment"
        reference = raw.get("reference")
        if reference and reference.get("type") != "Forward":  # a forward points into another chat
            reply_to = reference.get("messageId")
            if reply_to is not None and type(reply_to) is not str:
                reply_to = _opaque_id(reply_to)
    else:
        # exporter fallback text ("Started a call that lasted ...") is not the author's words
        kind = "call" if message_type == "Call" else "system"
        subkind = TYPE_SUBKINDS.get(message_type, "other")
        content = ""
    reactions = raw.get("reactions")
    reaction_count = 0
    if type(reactions) is list:
        for reaction in reactions:
            count = reaction.get("count") if type(reaction) is dict else None
            reaction_count += count if type(count) is int else 0

    return Message(
        NAME,
        chat_id,
        message_id,
        parse_iso_datetime(raw["timestamp"]),
        names.setdefault(author_id, author_id),
        display,
        content,
        kind,
        reply_to,
        n_attachments,
        author.get("isBot") is True,
        subkind,
        reaction_count,
    )


def _opaque_id(value: object) -> str:
    """Ids stay strings; a number written by another tool is kept digit for digit (never via float)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return str(value)
    raise TypeError("id")


def _not_dce(reason: str) -> str:
    return f"not a DiscordChatExporter JSON export ({reason}); pass the right --format or export again"


def _json_problem(exc: BaseException) -> str:
    """What is wrong with the JSON, without quoting the file (ijson's messages include a snippet of it)."""
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", errors="replace")
    detail = str(detail)
    if "premature EOF" in detail or "Incomplete JSON" in detail:
        return "the JSON ends early (file truncated or still being written); export or download it again"
    if "UTF8" in detail or "UTF-8" in detail or isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 JSON text; export the channel again"
    if isinstance(exc, RecursionError):
        return "the JSON is nested too deeply to be a chat export"
    return "not valid JSON (damaged or not a JSON file); export the channel again"
