"""DiscordChatExporter CSV: `AuthorID,Author,Date,Content,Attachments,Reactions`, a file or a folder of them.

The CSV has no message ids, replies or message types: ids are row numbers (counted over the chat's
files in name order, so partitioned exports stay unique), and system messages are recognised by the
exporter's fixed fallback texts ("Started a call that lasted 3 minutes.", "Pinned a message.", ...).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from twinbot.data.chat_order import sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import (
    export_files,
    gc_paused,
    head_text,
    open_text,
    parse_iso_datetime,
    sniff_folder,
)
from twinbot.errors import TwinbotError

NAME = "discord-csv"

_REQUIRED = ("Author", "Date", "Content")
_NO_EXPORT_FILES = "no DiscordChatExporter CSV files in this folder; export with --format Csv"
_DISCRIMINATOR = re.compile(r"#\d{4}$")
_CHANNEL_ID_IN_NAME = re.compile(r"\[(\d+)\](?: \[part (\d+)\])?$")
_CALL_TEXT = re.compile(r"Started a call that lasted [\d,.]+ minutes?\.")
_SYSTEM_TEXT = re.compile(
    r"Added .+ to the group\.|Added a recipient\.|Removed .+ from the group\.|Removed a recipient\."
    r"|Left the group\.|Changed the channel name\.|Changed the channel icon\.|Pinned a message\."
    r"|Started a thread\.|Joined the server\."
)
# The exporter's fallback texts by their first word (the whole text matched _SYSTEM_TEXT first).
_SYSTEM_SUBKINDS: dict[str, Subkind] = {
    "Added": "member_join", "Joined": "member_join", "Removed": "member_leave", "Left": "member_leave",
    "Changed": "rename", "Pinned": "pin", "Started": "other",
}  # fmt: skip
# Old exporter versions wrote the date in a display format instead of ISO 8601.
_LEGACY_DATE_FORMATS = ("%d-%b-%y %I:%M %p", "%d-%b-%y %H:%M", "%d-%b-%Y %I:%M %p", "%d-%b-%Y %H:%M")


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        try:
            return sniff_folder(path, ".csv", _sniff_file)
        except TwinbotError:
            return False
    return _sniff_file(path)


def _sniff_file(path: Path) -> bool:
    first_line = head_text(path, 1024).split("\n", 1)[0]
    try:
        header = next(csv.reader([first_line]), [])
    except csv.Error:
        return False
    return _header_columns(header) is not None


def _header_columns(header: list[str]) -> dict[str, int] | None:
    columns = {name.strip(): i for i, name in enumerate(header)}
    if not all(name in columns for name in _REQUIRED):
        return None
    if "AuthorID" not in columns and "Attachments" not in columns:  # too generic to claim the file
        return None
    return columns


def parse(path: Path, options: ParseOptions) -> Iterator[Message]:
    files = export_files(Path(path), ".csv", _NO_EXPORT_FILES, _sniff_file)
    chats: dict[str, list[tuple[int, Path]]] = {}
    for file in files:
        match = _CHANNEL_ID_IN_NAME.search(file.stem)
        chat_id = match.group(1) if match else file.stem
        part = int(match.group(2)) if match and match.group(2) else 1
        chats.setdefault(chat_id, []).append((part, file))
    for chat_id, parts in chats.items():
        messages: list[Message] = []
        with gc_paused():
            for _, file in sorted(parts):
                messages.extend(_parse_file(file, chat_id, first_row=len(messages) + 1))
        yield from sort_chat(messages)


def _parse_file(path: Path, chat_id: str, first_row: int) -> Iterator[Message]:
    names: dict[str, str] = {}
    with open_text(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if header is None:
                raise TwinbotError("the file is empty; export the channel again", path)
            columns = _header_columns(header)
            if columns is None:
                raise TwinbotError(
                    "not a DiscordChatExporter CSV (expected the header "
                    "AuthorID,Author,Date,Content,Attachments,Reactions); pass the right --format",
                    path,
                    1,
                )
            author_col = columns["Author"]
            id_col = columns.get("AuthorID", author_col)
            date_col = columns["Date"]
            content_col = columns["Content"]
            attachments_col = columns.get("Attachments")
            reactions_col = columns.get("Reactions")
            width = max(columns.values()) + 1
            for row_index, row in enumerate(reader, first_row):
                if not row:
                    continue
                line = reader.line_num
                if len(row) < width:
                    raise TwinbotError(
                        f"row has {len(row)} columns, expected {width} (file truncated or edited?)",
                        path,
                        line,
                    )
                author = _DISCRIMINATOR.sub("", row[author_col]) or row[id_col]
                author_id = row[id_col] or author
                content = row[content_col]
                if "\r" in content:
                    content = content.replace("\r\n", "\n").replace("\r", "\n")
                attachments = _count_attachments(row[attachments_col]) if attachments_col is not None else 0
                text, kind, subkind = _text_and_kind(content, attachments)
                yield Message(
                    NAME,
                    chat_id,
                    str(row_index),
                    _parse_date(row[date_col], path, line),
                    names.setdefault(author_id, author_id),
                    names.setdefault(author, author),
                    text,
                    kind,
                    None,
                    attachments,
                    subkind=subkind,
                    reactions=_count_reactions(row[reactions_col]) if reactions_col is not None else 0,
                )
        except csv.Error as exc:
            raise TwinbotError(
                f"malformed CSV ({exc}); export the channel again", path, reader.line_num
            ) from exc
        except UnicodeDecodeError as exc:
            raise TwinbotError("not UTF-8 text; export the channel again", path, reader.line_num + 1) from exc


def _text_and_kind(content: str, attachments: int) -> tuple[str, MessageKind, Subkind | None]:
    if not content or content.isspace():
        return "", "media", "attachment"
    if attachments == 0 and content[-1] == ".":
        if _CALL_TEXT.fullmatch(content):
            return "", "call", "call"
        if _SYSTEM_TEXT.fullmatch(content):
            return "", "system", _SYSTEM_SUBKINDS.get(content.split(" ", 1)[0], "other")
    return content, "text", None


def _count_reactions(field: str) -> int:
    """The sum of the counts in "👍 (3),🎉 (1)"; a reaction written without a count counts once."""
    total = 0
    for part in field.split(","):
        part = part.strip()
        if not part:
            continue
        count = part.rpartition("(")[2].rstrip(")").strip() if part.endswith(")") else ""
        total += int(count) if count.isdigit() else 1
    return total


def _count_attachments(field: str) -> int:
    return sum(1 for url in field.split(",") if url.strip())


def _parse_date(text: str, path: Path, line: int) -> datetime:
    try:
        return parse_iso_datetime(text)
    except ValueError:
        pass
    for fmt in _LEGACY_DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    raise TwinbotError(
        "unreadable Date (expected ISO 8601 like 2024-01-31T18:02:00.1234567+01:00)", path, line
    )
