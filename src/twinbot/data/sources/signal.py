"""Signal: the exports of the two common Signal Desktop export tools.

Signal keeps its messages in an SQLCipher-encrypted database (`sql/db.sqlite` in Signal Desktop's
folder); twinbot does not decrypt it. Given that file or folder, the error names a tool to run first.

**sigtop** (github.com/tbvdm/sigtop, `sigtop export-messages -f json OUT`): one `NAME.json` per
conversation, a JSON array of Signal Desktop's own message objects. Fields read: `id`, `type`
(`incoming`, `outgoing`, `call-history`, `group-v2-change`, `keychange`, `timer-notification`, ...),
`body`, `sent_at` (ms since 1970, UTC; else `timestamp`, `received_at_ms`), `sourceServiceId` /
`sourceUuid` / `source` (the sender; outgoing messages have none), `attachments[]` (long-text
attachments not counted), `sticker`, `reactions[]` (counted into `reactions`), `quote.id` (the quoted
message's `sent_at`: resolved to its id for `reply_to`), `deletedForEveryone` / `isErased`,
`groupV2Change.details[].type`. The file holds no contact names: the author is the sender's id, shown as
the chat's name in a chat with a single other person.

**signal-export** (github.com/carderne/signal-export, `sigexport OUT`): one folder per chat with
`chat.md` and `data.json` (JSON Lines, one object per message). Fields read: `date` (ISO, local time,
no zone: naive timestamps), `sender` ("Me" for your own messages), `body` (the two trailing spaces the
tool adds are removed; call records are its call descriptions), `quote` (the quoted text only: resolved to
the latest earlier message with that text), `sticker`, `reactions` (`[[name, emoji], ...]`),
`attachments[]`, `deleted`.

Records: platform "signal"; chat_id = the sigexport folder name or the sigtop file name; your own messages
have author_id "me" (pass `--me me` to `prepare`); ids are sigtop's message ids, or the line number in
data.json. Each chat is held in memory to resolve quotes and put it in time order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ijson

from twinbot.data.chat_order import sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import (
    files_under,
    fill_missing_times,
    from_unix_seconds,
    head_text,
    open_binary,
    open_text,
    parse_iso_datetime,
    read_head,
)
from twinbot.errors import TwinbotError

NAME = "signal"
PLATFORM = "signal"
OWNER_ID = "me"
OWNER_NAME = "Me"

SIGEXPORT_FILE = "data.json"
ENCRYPTED_DATABASE = "db.sqlite"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_LONG_TEXT_TYPE = "text/x-signal-plain"  # the rest of a long message, sent as an attachment
_FOLDER_SNIFF_FILES = 20
_MAX_LINE_CHARS = 16 << 20  # a data.json line longer than this is not a message

# signal-export writes a call as one of these descriptions in `body`
_SIGEXPORT_CALL = re.compile(r"(?:Incoming|Outgoing|Missed) (?:voice |video )?call(?: \([^()\n]{0,80}\))?")
_GROUP_CHANGE_SUBKINDS: dict[str, Subkind] = {
    "member-add": "member_join",
    "member-add-from-invite": "member_join",
    "member-add-from-link": "member_join",
    "member-add-from-admin-approval": "member_join",
    "pending-add-one": "member_join",
    "pending-add-many": "member_join",
    "member-remove": "member_leave",
    "pending-remove-one": "member_leave",
    "pending-remove-many": "member_leave",
    "title": "rename",
    "avatar": "rename",
    "description": "rename",
    "create": "settings",
    "access-attributes": "settings",
    "access-members": "settings",
    "access-invite-link": "settings",
    "announcements-only": "settings",
}
_NOTICE_SUBKINDS: dict[str, Subkind] = {
    "keychange": "encryption_notice",
    "verified-change": "encryption_notice",
    "chat-session-refreshed": "encryption_notice",
    "timer-notification": "settings",
    "universal-timer-notification": "settings",
    "profile-change": "rename",
    "change-number-notification": "other",
    "group-v1-migration": "settings",
}


@dataclass(frozen=True, slots=True)
class _ChatFile:
    path: Path
    chat_id: str
    tool: str  # "sigtop" or "sigexport"


_ENCRYPTED_HINT = (
    "Signal Desktop's own database is encrypted (SQLCipher) and is not read here; export the messages "
    "first with sigtop (`sigtop export-messages -f json OUT`) or signal-export (`sigexport OUT`) and "
    "pass OUT"
)


# ---------------------------------------------------------------------------------------------- sniffing


def _is_signal_desktop_folder(path: Path) -> bool:
    return (path / "sql" / ENCRYPTED_DATABASE).is_file() or (
        (path / "config.json").is_file() and (path / "sql").is_dir()
    )


def _is_encrypted_database(path: Path) -> bool:
    """Signal Desktop's `db.sqlite` (by name, unless it is a plain SQLite file or text)."""
    if path.name.lower() != ENCRYPTED_DATABASE or not path.is_file():
        return False
    head = read_head(path, 64)
    return not head.startswith(_SQLITE_MAGIC) and not head.lstrip().startswith((b"{", b"["))


def _sniff_sigtop(path: Path) -> bool:
    head = head_text(path)
    stripped = head.lstrip()
    return (
        stripped.startswith("[") and '"conversationId"' in head and ('"sent_at"' in head or '"type"' in head)
    )


def _sniff_sigexport(path: Path) -> bool:
    for line in head_text(path).split("\n")[:3]:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return isinstance(record, dict) and {"date", "sender", "body"} <= record.keys()
    return False


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        if _is_signal_desktop_folder(path) or (path / SIGEXPORT_FILE).is_file():
            return (path / "sql").is_dir() or _sniff_sigexport(path / SIGEXPORT_FILE)
        chats = sorted(path.glob(f"*/{SIGEXPORT_FILE}"))[:_FOLDER_SNIFF_FILES]
        if any(_sniff_sigexport(p) for p in chats):
            return True
        return any(_sniff_sigtop(p) for p in files_under(path, ".json")[:_FOLDER_SNIFF_FILES])
    if not path.is_file():
        return False
    return _is_encrypted_database(path) or _sniff_sigtop(path) or _sniff_sigexport(path)


# ---------------------------------------------------------------------------------------------- files


def _chat_files(path: Path) -> list[_ChatFile]:
    if path.is_dir():
        if _is_signal_desktop_folder(path):
            raise TwinbotError(_ENCRYPTED_HINT, path)
        if (path / SIGEXPORT_FILE).is_file():
            return [_ChatFile(path / SIGEXPORT_FILE, path.name, "sigexport")]
        found = [_ChatFile(p, p.parent.name, "sigexport") for p in sorted(path.glob(f"*/{SIGEXPORT_FILE}"))]
        found += [
            _ChatFile(p, p.stem, "sigtop")
            for p in files_under(path, ".json")
            if p.name != SIGEXPORT_FILE and _sniff_sigtop(p)
        ]
        if not found:
            raise TwinbotError(
                "no Signal export here (no chat folders with data.json, no sigtop .json files); pass the "
                "folder sigtop or signal-export wrote",
                path,
            )
        return found
    if _is_encrypted_database(path) or (path.is_file() and read_head(path, 16).startswith(_SQLITE_MAGIC)):
        raise TwinbotError(_ENCRYPTED_HINT, path)
    if _sniff_sigtop(path):
        return [_ChatFile(path, path.stem, "sigtop")]
    if path.name == SIGEXPORT_FILE or _sniff_sigexport(path):
        return [_ChatFile(path, path.parent.name if path.name == SIGEXPORT_FILE else path.stem, "sigexport")]
    raise TwinbotError(
        "not a Signal export this tool reads; pass a signal-export chat folder (data.json) or a sigtop "
        "`export-messages -f json` file",
        path,
    )


def parse(path: Path, options: ParseOptions | None = None) -> Iterator[Message]:
    for chat in _chat_files(Path(path)):
        if chat.tool == "sigtop":
            yield from _sigtop_chat(chat)
        else:
            yield from _sigexport_chat(chat)


# ---------------------------------------------------------------------------------------------- shared


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def _classify(text: str, attachments: int) -> tuple[MessageKind, Subkind | None]:
    if text:
        return "text", None
    if attachments:
        return "media", "attachment"
    return "system", "other"


def _finish(messages: list[Message], times: list[datetime | None]) -> list[Message]:
    for message, when in zip(messages, fill_missing_times(times), strict=True):
        message.timestamp = when
    return sort_chat(messages)


# ---------------------------------------------------------------------------------------------- sigtop


def _sigtop_items(chat: _ChatFile) -> Iterator[Any]:
    with open_binary(chat.path) as fh:
        try:
            yield from ijson.items(fh, "item", use_float=True)
        except (ijson.JSONError, ValueError, ArithmeticError, RecursionError) as exc:
            raise TwinbotError(
                "not valid JSON (truncated or damaged); export the chat again with sigtop", chat.path
            ) from exc


def _ms_time(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return from_unix_seconds(float(value) / 1000)
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _sigtop_chat(chat: _ChatFile) -> list[Message]:
    raws: list[dict[str, Any]] = []
    for position, raw in enumerate(_sigtop_items(chat), 1):
        if not isinstance(raw, dict):
            raise TwinbotError(
                f"message #{position} is not a JSON object; export again with sigtop", chat.path
            )
        raws.append(raw)
    senders = {_sender(raw) for raw in raws if raw.get("type") == "incoming"}
    single_partner = len(senders) == 1
    id_of_sent: dict[int, str] = {}
    messages: list[Message] = []
    times: list[datetime | None] = []
    for position, raw in enumerate(raws, 1):
        message_id = _text(raw.get("id")) or f"#{position}"
        sent = raw.get("sent_at")
        if isinstance(sent, int) and not isinstance(sent, bool):
            id_of_sent.setdefault(sent, message_id)
        messages.append(_sigtop_message(raw, message_id, chat, single_partner))
        times.append(
            _ms_time(raw.get("sent_at"))
            or _ms_time(raw.get("timestamp"))
            or _ms_time(raw.get("received_at_ms"))
        )
    for message, raw in zip(messages, raws, strict=True):
        quote = raw.get("quote")
        if isinstance(quote, dict):
            quoted = quote.get("id")
            if isinstance(quoted, str) and quoted.isdigit():
                quoted = int(quoted)  # older Signal versions wrote the number as a string
            if isinstance(quoted, int) and not isinstance(quoted, bool):
                message.reply_to = id_of_sent.get(quoted)
    return _finish(messages, times)


def _sender(raw: dict[str, Any]) -> str:
    for key in ("sourceServiceId", "sourceUuid", "source"):
        value = raw.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "unknown"


def _sigtop_message(raw: dict[str, Any], message_id: str, chat: _ChatFile, single_partner: bool) -> Message:
    kind_name = raw.get("type")
    if kind_name == "outgoing":
        author_id, author = OWNER_ID, OWNER_NAME
    else:
        author_id = _sender(raw)
        phone = raw.get("source")
        author = chat.chat_id if single_partner and kind_name == "incoming" else author_id
        if author == author_id and isinstance(phone, str) and phone.strip():
            author = phone.strip()
    attachments = sum(
        1
        for attachment in raw.get("attachments") or []
        if not (isinstance(attachment, dict) and attachment.get("contentType") == _LONG_TEXT_TYPE)
    ) if isinstance(raw.get("attachments"), list) else 0  # fmt: skip
    if raw.get("sticker"):
        attachments += 1
    text = _text(raw.get("body")).strip()
    subkind: Subkind | None
    if raw.get("deletedForEveryone") or raw.get("isErased"):
        kind, subkind, text = "system", "deleted", ""
    elif kind_name in ("incoming", "outgoing") or kind_name is None:
        kind, subkind = _classify(text, attachments)
    elif kind_name == "call-history":
        kind, subkind, text = "call", "call", ""
    elif kind_name == "group-v2-change":
        kind, subkind, text = "system", _group_change(raw.get("groupV2Change")), ""
    else:
        kind, subkind, text = "system", _NOTICE_SUBKINDS.get(str(kind_name), "other"), ""
    return Message(
        platform=PLATFORM,
        chat_id=chat.chat_id,
        id=message_id,
        timestamp=datetime.min,
        author_id=author_id,
        author=author,
        text=text,
        kind=kind,
        attachments=attachments,
        subkind=subkind,
        reactions=_count(raw.get("reactions")),
    )


def _group_change(change: Any) -> Subkind:
    details = change.get("details") if isinstance(change, dict) else None
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, dict) and detail.get("type") in _GROUP_CHANGE_SUBKINDS:
                return _GROUP_CHANGE_SUBKINDS[detail["type"]]
    return "other"


# ---------------------------------------------------------------------------------------------- sigexport


def _sigexport_lines(chat: _ChatFile) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_text(chat.path) as fh:
        try:
            for line_no, line in enumerate(iter(lambda: fh.readline(_MAX_LINE_CHARS), ""), 1):
                if not line.strip():
                    continue
                if len(line) >= _MAX_LINE_CHARS and not line.endswith("\n"):
                    raise TwinbotError(
                        "line too long for a message; is this a signal-export data.json?", chat.path, line_no
                    )
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    raise TwinbotError(
                        "not a JSON object (damaged line); export the chat again with signal-export",
                        chat.path,
                        line_no,
                    ) from exc
                if not isinstance(record, dict):
                    raise TwinbotError(
                        "not a JSON object; export the chat again with signal-export", chat.path, line_no
                    )
                yield line_no, record
        except UnicodeDecodeError as exc:
            raise TwinbotError("not UTF-8 text; export the chat again with signal-export", chat.path) from exc


def _sigexport_chat(chat: _ChatFile) -> list[Message]:
    messages: list[Message] = []
    times: list[datetime | None] = []
    latest_with_text: dict[str, str] = {}
    for line_no, record in _sigexport_lines(chat):
        message, quoted = _sigexport_message(record, str(line_no), chat)
        if quoted:
            message.reply_to = latest_with_text.get(quoted)
        if message.kind == "text":
            latest_with_text[message.text] = message.id
        messages.append(message)
        date = record.get("date")
        try:
            times.append(parse_iso_datetime(date) if isinstance(date, str) else None)
        except ValueError:
            times.append(None)
    return _finish(messages, times)


def _sigexport_message(record: dict[str, Any], message_id: str, chat: _ChatFile) -> tuple[Message, str]:
    sender = _text(record.get("sender")).strip() or "unknown"
    author_id, author = (OWNER_ID, OWNER_NAME) if sender == "Me" else (sender, sender)
    body = _text(record.get("body")).removesuffix("  ").strip()
    attachments = _count(record.get("attachments")) + (1 if record.get("sticker") else 0)
    subkind: Subkind | None
    if record.get("deleted") is True:
        kind, subkind, body = "system", "deleted", ""
    elif record.get("call") is True or _SIGEXPORT_CALL.fullmatch(body):
        kind, subkind, body = "call", "call", ""
    else:
        kind, subkind = _classify(body, attachments)
    quote = _text(record.get("quote")).strip()
    quoted = "\n".join(line.removeprefix("> ").removeprefix(">") for line in quote.split("\n")).strip()
    message = Message(
        platform=PLATFORM,
        chat_id=chat.chat_id,
        id=message_id,
        timestamp=datetime.min,
        author_id=author_id,
        author=author,
        text=body,
        kind=kind,
        attachments=attachments,
        subkind=subkind,
        reactions=_count(record.get("reactions")),
    )
    return message, quoted
