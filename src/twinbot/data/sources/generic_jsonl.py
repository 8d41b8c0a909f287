"""Generic JSON Lines: one message object per line, for chats from any other tool (schema in docs/formats.md).

Required keys: `timestamp` (ISO 8601 or unix seconds), `author`, `text`. Optional: `chat` (default: the
file name), `id` (default: the line number), `author_id` (default: `author`), `reply_to`, `kind`
(text|media|system|call), `attachments` (a count), `is_bot`.
A file or a folder of `.jsonl` files; one chat may span several files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from twinbot.data.records import MESSAGE_KINDS, SUBKINDS, Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import (
    UTF8_BOM,
    export_files,
    from_unix_seconds,
    head_text,
    in_chat_order,
    open_binary,
    parse_iso_datetime,
)
from twinbot.errors import TwinbotError

NAME = "jsonl"
REQUIRED_FIELDS = ("timestamp", "author", "text")
OPTIONAL_FIELDS = (
    "chat",
    "id",
    "author_id",
    "reply_to",
    "kind",
    "attachments",
    "is_bot",
    "subkind",
    "reactions",
)
SCHEMA_HINT = "each record needs timestamp, author and text (see docs/formats.md)"

_UNIX_SECONDS = re.compile(r"-?\d+(?:\.\d*)?", re.ASCII)
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n", ""})


def sniff(path: Path) -> bool:
    head = head_text(Path(path), 16384)
    for line in head.split("\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return isinstance(record, dict) and all(key in record for key in REQUIRED_FIELDS)
    return False


def parse(path: Path, options: ParseOptions) -> Iterator[Message]:
    yield from in_chat_order(
        message for file in input_files(Path(path), ".jsonl") for message in _parse_file(file)
    )


def input_files(path: Path, suffix: str) -> list[Path]:
    """`path` itself, or the files with `suffix` inside the folder `path` (generic CSV reads them so too)."""
    return export_files(path, suffix, f"no {suffix} files in this folder; pass the files themselves")


def _parse_file(path: Path) -> Iterator[Message]:
    default_chat = path.stem
    seen_record = False
    with open_binary(path) as fh:
        for line_number, raw in enumerate(fh, 1):
            if line_number == 1:
                raw = raw.removeprefix(UTF8_BOM)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError as exc:
                raise TwinbotError("not UTF-8 text; save the file as UTF-8", path, line_number) from exc
            except ValueError as exc:  # JSONDecodeError and its relatives
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid number"
                raise TwinbotError(
                    f"not a JSON object ({reason}); write one JSON object per line", path, line_number
                ) from exc
            except RecursionError as exc:
                raise TwinbotError(
                    "JSON nested too deeply; write one flat object per line", path, line_number
                ) from exc
            if not isinstance(record, dict):
                raise TwinbotError(f"expected a JSON object per line; {SCHEMA_HINT}", path, line_number)
            seen_record = True
            yield message_from_record(record, NAME, default_chat, str(line_number), path, line_number)
    if not seen_record:
        raise TwinbotError(f"the file has no records; {SCHEMA_HINT}", path)


_DEFAULT_SUBKINDS: dict[str, Subkind] = {"media": "attachment", "system": "other", "call": "call"}


def message_from_record(
    record: Mapping[str, Any], platform: str, default_chat: str, default_id: str, path: Path, line: int
) -> Message:
    """One generic-schema record (a JSON object or a CSV row by column name) -> Message."""
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise TwinbotError(f"missing {', '.join(missing)}; {SCHEMA_HINT}", path, line)
    timestamp = _timestamp(record["timestamp"], path, line)
    author = _string(record["author"], "author", path, line)
    if not author.strip():
        raise TwinbotError("empty author; every message needs its author's name", path, line)
    text = record["text"]
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise TwinbotError("text must be a string", path, line)
    kind = record.get("kind") or "text"
    if kind not in MESSAGE_KINDS:
        raise TwinbotError(f"unknown kind; use one of: {', '.join(MESSAGE_KINDS)}", path, line)
    attachments = _count(record.get("attachments"), path, line)
    subkind = record.get("subkind") or None
    if subkind is not None and subkind not in SUBKINDS:
        raise TwinbotError(f"unknown subkind; use one of: {', '.join(SUBKINDS)}", path, line)
    if kind == "text" and not text.strip():
        kind = "media" if attachments else "system"  # an empty body is not something the person wrote
        subkind = subkind or ("attachment" if attachments else "placeholder")
    elif kind != "text" and subkind is None:
        subkind = _DEFAULT_SUBKINDS[kind]
    return Message(
        platform=platform,
        chat_id=_optional_string(record.get("chat"), "chat", path, line) or default_chat,
        id=_optional_string(record.get("id"), "id", path, line) or default_id,
        timestamp=timestamp,
        author_id=_optional_string(record.get("author_id"), "author_id", path, line) or author,
        author=author,
        text=text,
        kind=cast(MessageKind, kind),
        reply_to=_optional_string(record.get("reply_to"), "reply_to", path, line) or None,
        attachments=attachments,
        is_bot=_flag(record.get("is_bot"), path, line),
        subkind=cast(Subkind | None, subkind),
        reactions=_count(record.get("reactions"), path, line, "reactions"),
    )


def _timestamp(value: object, path: Path, line: int) -> datetime:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return from_unix_seconds(value)
        if isinstance(value, str):
            text = value.strip()
            if _UNIX_SECONDS.fullmatch(text):
                return from_unix_seconds(text)
            return parse_iso_datetime(text)
    except (ValueError, OverflowError) as exc:
        raise TwinbotError(
            "unreadable timestamp; use ISO 8601 (2024-01-31T18:02:00+01:00) or unix seconds", path, line
        ) from exc
    raise TwinbotError("timestamp must be an ISO 8601 string or unix seconds", path, line)


def _string(value: object, name: str, path: Path, line: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TwinbotError(f"{name} must be a string", path, line)


def _optional_string(value: object, name: str, path: Path, line: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):  # a float id has already lost digits
        raise TwinbotError(f"{name} must be a string or an integer, not a decimal number", path, line)
    return _string(value, name, path, line)


def _count(value: object, path: Path, line: int, name: str = "attachments") -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise TwinbotError(f"{name} must be a count (a whole number >= 0)", path, line)


def _flag(value: object, path: Path, line: int) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TwinbotError("is_bot must be true or false", path, line)
