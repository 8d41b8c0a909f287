"""iMessage: the `chat.db` SQLite database of a Mac's Messages app (~/Library/Messages/chat.db).

The database is opened read-only with the standard library (`file:...?mode=ro` URI; `immutable=1` when
no write-ahead log sits next to it, so nothing at all is written or locked; never any SQL extension;
`trusted_schema` off). Tables read: `message`, `handle`, `chat`, `chat_message_join` (and
`message_attachment_join` for attachment counts when present). Columns that older macOS versions lack
are read as NULL.

Records: platform "imessage"; chat_id = `chat.display_name` (group chats with a name), else
`chat.chat_identifier` (the phone number, email or `chat123...` id), a message in no chat is put in a chat
named after its handle; id = `message.guid`; author_id/author = the handle (phone number or email);
`is_from_me` messages are the owner's: author_id "me", author "Me" (pass `--me me` to `prepare`).
Timestamps: `message.date` counts from 2001-01-01 UTC in seconds (older databases) or nanoseconds
(macOS 10.13 and later), read per value; aware UTC datetimes; a missing or impossible date borrows the
previous message's time. `reply_to` = `thread_originator_guid` (inline replies).

Text: `message.text`, or when that is NULL the NSString inside `attributedBody` (a typedstream archive,
or an NSKeyedArchiver property list on some versions), decoded by a bounded parser that gives up
(empty text) on anything unexpected. U+FFFC (the place holder of an inline attachment) is removed.
Kinds:
    system/reaction    tapbacks: associated_message_type 2000-2007 add one, 3000-3007 remove one; each
                       add/remove is counted into the target message's `reactions` (the net number of
                       tapbacks it kept), with reply_to = the target's guid; text ""
    media/attachment   a message with attachments (cache_has_attachments) and no text; attachments =
                       the number of `message_attachment_join` rows (1 when that table is missing)
    system/...         group events (item_type 1: member_join/member_leave, 2: rename, 3: member_leave
                       or rename for the group photo), a retracted message (deleted), anything without
                       text or attachment (other)
    call               FaceTime call notices (item_type 6)
"""

from __future__ import annotations

import plistlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twinbot.data.chat_order import sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import fill_missing_times, read_head
from twinbot.errors import TwinbotError, one_line

NAME = "imessage"
PLATFORM = "imessage"
OWNER_ID = "me"
OWNER_NAME = "Me"

SQLITE_MAGIC = b"SQLite format 3\x00"
REQUIRED_TABLES = frozenset({"message", "handle", "chat", "chat_message_join"})
APPLE_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
_NANOSECOND_DATES = 10**11  # above this a `date` is in nanoseconds (seconds would be year 5000+)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)

# attributedBody blobs beyond this are not decoded (a message body is kilobytes; SQLite caps nothing)
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT_CHARS = 1_000_000
_LOCK_TIMEOUT_S = 2.0

# sqlite3 decodes SQLite's error messages as UTF-8: a damaged schema quoted in one raises UnicodeDecodeError
_DATABASE_ERRORS = (sqlite3.Error, UnicodeDecodeError)

_TAPBACK_ADD = range(2000, 2008)
_TAPBACK_REMOVE = range(3000, 3008)
_STICKER_ON_MESSAGE = 1000
_OBJECT_REPLACEMENT = "\ufffc"
_MESSAGE_COLUMNS = (
    "guid", "text", "attributedBody", "handle_id", "is_from_me", "date", "associated_message_type",
    "associated_message_guid", "cache_has_attachments", "thread_originator_guid", "item_type",
    "group_action_type", "date_retracted",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Chat:
    name: str


# ---------------------------------------------------------------------------------------------- sniffing


def sniff(path: Path) -> bool:
    path = Path(path)
    if read_head(path, len(SQLITE_MAGIC)) != SQLITE_MAGIC:
        return False
    try:
        with _connect(path) as connection:
            return _tables(connection) >= REQUIRED_TABLES
    except (*_DATABASE_ERRORS, TwinbotError):
        return False


# ---------------------------------------------------------------------------------------------- opening


def _connect(path: Path) -> _Connection:
    return _Connection(path)


class _Connection:
    """A read-only connection (a context manager) that never writes the database or loads extensions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        wal = path.with_name(path.name + "-wal")
        # with no write-ahead log beside it the file is all there is: immutable reads take no locks and
        # create no -shm file; with one, SQLite must read the log (it may add the -shm index beside it)
        immutable = "&immutable=1" if not (wal.is_file() and wal.stat().st_size > 0) else ""
        uri = f"{path.resolve().as_uri()}?mode=ro{immutable}"
        self.connection = sqlite3.connect(uri, uri=True, timeout=_LOCK_TIMEOUT_S, check_same_thread=True)
        # damaged text cells must not stop the reading: bad UTF-8 becomes U+FFFD
        self.connection.text_factory = _lenient_text
        try:
            self.connection.execute("PRAGMA trusted_schema = OFF")
            self.connection.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            self.connection.close()
            raise

    def __enter__(self) -> sqlite3.Connection:
        return self.connection

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name).lower() for (name,) in rows}


def _columns(connection: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in connection.execute(f"PRAGMA table_info({table})")}


def _database_error(exc: Exception, path: Path) -> TwinbotError:
    if isinstance(exc, UnicodeDecodeError):  # SQLite's own message quoted undecodable schema bytes
        return TwinbotError("the database is damaged (its schema is unreadable); copy chat.db again", path)
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return TwinbotError(
            "the database is locked (Messages is writing it); quit Messages, or copy chat.db together "
            "with chat.db-wal and chat.db-shm and pass the copy",
            path,
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return TwinbotError(
            "the database is damaged or encrypted (SQLite: "
            f"{one_line(exc)}); copy chat.db from the Mac again",
            path,
        )
    return TwinbotError(f"cannot read this database (SQLite: {one_line(exc)}); copy chat.db again", path)


# ---------------------------------------------------------------------------------------------- parsing


def parse(path: Path, options: ParseOptions | None = None) -> Iterator[Message]:
    path = Path(path)
    if path.is_dir():
        candidate = path / "chat.db"
        if not candidate.is_file():
            raise TwinbotError(
                "no chat.db in this folder; pass the chat.db copied from ~/Library/Messages", path
            )
        path = candidate
    try:
        head = read_head(path, len(SQLITE_MAGIC))
    except OSError as exc:
        raise TwinbotError(
            f"cannot read file ({exc.strerror}); check the path and permissions", path
        ) from exc
    if head != SQLITE_MAGIC:
        raise TwinbotError(
            "not an SQLite database (encrypted, damaged or another file); pass the chat.db copied from "
            "~/Library/Messages",
            path,
        )
    try:
        with _connect(path) as connection:
            yield from _read(connection, path)
    except _DATABASE_ERRORS as exc:
        raise _database_error(exc, path) from exc


def _read(connection: sqlite3.Connection, path: Path) -> Iterator[Message]:
    tables = _tables(connection)
    if not tables >= REQUIRED_TABLES:
        hint = ""
        if {"messages", "conversations"} <= tables:
            hint = " (this looks like a Signal Desktop database: export it with sigtop or signal-export)"
        missing = ", ".join(sorted(REQUIRED_TABLES - tables))
        raise TwinbotError(
            f"an SQLite database, but not a Messages chat.db (no {missing} table){hint}; pass the chat.db "
            "copied from ~/Library/Messages",
            path,
        )
    columns = _columns(connection, "message")
    handles = {
        int(rowid): str(address)
        for rowid, address in connection.execute("SELECT ROWID, id FROM handle")
        if isinstance(rowid, int) and address is not None
    }
    chats = _chat_names(connection)
    attachment_counts = _attachment_counts(connection, tables)
    reactions = _reaction_counts(connection, columns, handles)

    def column(name: str) -> str:
        if name not in columns:
            return "NULL"
        if name == "attributedBody":  # bounded: a larger blob is not read at all
            return f"CASE WHEN length(m.attributedBody) <= {MAX_BODY_BYTES} THEN m.attributedBody END"
        if name == "text":
            return f"substr(m.text, 1, {MAX_TEXT_CHARS})"
        return f"m.{name}"

    selected = ", ".join(column(name) for name in _MESSAGE_COLUMNS)
    query = (
        f"SELECT m.ROWID, {selected}, j.chat_id FROM message AS m "
        "LEFT JOIN chat_message_join AS j ON j.message_id = m.ROWID "
        "ORDER BY j.chat_id IS NULL, j.chat_id, m.ROWID"
    )
    current: object = ()
    held: list[Message] = []
    times: list[datetime | None] = []
    for row in connection.execute(query):
        chat_key = row[-1] if row[-1] is not None else ("handle", row[4])
        if chat_key != current:
            yield from _finish(held, times)
            held, times = [], []
            current = chat_key
        message, when = _message(row, chats, handles, attachment_counts, reactions)
        held.append(message)
        times.append(when)
    yield from _finish(held, times)


def _finish(held: list[Message], times: list[datetime | None]) -> list[Message]:
    for message, when in zip(held, fill_missing_times(times), strict=True):
        message.timestamp = when
    return sort_chat(held)


def _chat_names(connection: sqlite3.Connection) -> dict[int, _Chat]:
    rows = connection.execute("SELECT ROWID, chat_identifier, display_name FROM chat").fetchall()
    names: dict[int, _Chat] = {}
    display_uses: dict[str, int] = {}
    for _, _, display in rows:
        if isinstance(display, str) and display.strip():
            display_uses[display.strip()] = display_uses.get(display.strip(), 0) + 1
    for rowid, identifier, display in rows:
        if not isinstance(rowid, int):
            continue
        ident = str(identifier).strip() if identifier is not None else ""
        shown = display.strip() if isinstance(display, str) else ""
        if shown and display_uses.get(shown, 0) > 1 and ident:
            shown = f"{shown} ({ident})"  # two groups with one name stay two chats
        names[rowid] = _Chat(shown or ident or f"chat-{rowid}")
    return names


def _attachment_counts(connection: sqlite3.Connection, tables: set[str]) -> dict[int, int] | None:
    if "message_attachment_join" not in tables:
        return None
    return {
        int(message_id): int(count)
        for message_id, count in connection.execute(
            "SELECT message_id, count(*) FROM message_attachment_join GROUP BY message_id"
        )
        if isinstance(message_id, int)
    }


def _target_guid(associated: object) -> str | None:
    """`p:0/GUID` (part 0 of message GUID) or `bp:GUID` -> GUID."""
    if not isinstance(associated, str) or not associated:
        return None
    target = associated.rsplit("/", 1)[-1]
    if ":" in target:
        target = target.split(":", 1)[1]
    return target or None


def _reaction_counts(
    connection: sqlite3.Connection, columns: set[str], handles: dict[int, str]
) -> dict[str, int]:
    """Tapbacks each message kept: adds minus removes per (reactor, tapback type), in database order."""
    needed = {"associated_message_type", "associated_message_guid", "is_from_me", "handle_id"}
    if not needed <= columns:
        return {}
    active: dict[str, set[tuple[str, int]]] = {}
    for kind, associated, from_me, handle_id in connection.execute(
        "SELECT associated_message_type, associated_message_guid, is_from_me, handle_id FROM message "
        "WHERE associated_message_type BETWEEN 2000 AND 3999 ORDER BY date, ROWID"
    ):
        target = _target_guid(associated)
        if target is None or not isinstance(kind, int):
            continue
        reactor = OWNER_ID if from_me else handles.get(handle_id if isinstance(handle_id, int) else -1, "?")
        if kind in _TAPBACK_ADD:
            active.setdefault(target, set()).add((reactor, kind - 2000))
        elif kind in _TAPBACK_REMOVE:
            active.get(target, set()).discard((reactor, kind - 3000))
    return {target: len(pairs) for target, pairs in active.items() if pairs}


def apple_time(value: object) -> datetime | None:
    """`message.date` (seconds or nanoseconds since 2001-01-01 UTC) -> aware UTC datetime; None when
    missing (0) or impossible."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
        return None
    try:
        seconds = value / 1e9 if abs(value) >= _NANOSECOND_DATES else float(value)
        moment = APPLE_EPOCH + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        return None
    return moment if moment < _LATEST else None


def _message(
    row: tuple[Any, ...],
    chats: dict[int, _Chat],
    handles: dict[int, str],
    attachment_counts: dict[int, int] | None,
    reactions: dict[str, int],
) -> tuple[Message, datetime | None]:
    (
        rowid, guid, text, attributed, handle_id, from_me, date_value, associated_type, associated_guid,
        has_attachments, reply_guid, item_type, group_action, retracted, chat_rowid,
    ) = row  # fmt: skip
    message_id = str(guid) if isinstance(guid, str) and guid else f"row-{rowid}"
    handle = handles.get(handle_id) if isinstance(handle_id, int) else None
    if from_me:
        author_id, author = OWNER_ID, OWNER_NAME
    else:
        author_id = author = handle or "unknown"
    if isinstance(chat_rowid, int) and chat_rowid in chats:
        chat_id = chats[chat_rowid].name
    else:
        chat_id = handle or "unknown"
    body = text if isinstance(text, str) else None
    if body is None and isinstance(attributed, bytes):
        body = decode_attributed_body(attributed)
    body = (body or "").replace(_OBJECT_REPLACEMENT, "").strip()
    attachments = 0
    if has_attachments:
        attachments = 1 if attachment_counts is None else attachment_counts.get(rowid, 0) or 1
    kind: MessageKind = "text"
    subkind: Subkind | None = None
    reply_to = str(reply_guid) if isinstance(reply_guid, str) and reply_guid else None
    if isinstance(associated_type, int) and (
        associated_type in _TAPBACK_ADD or associated_type in _TAPBACK_REMOVE
    ):
        kind, subkind, body = "system", "reaction", ""
        reply_to = _target_guid(associated_guid)
    elif isinstance(item_type, int) and item_type != 0:
        kind, subkind, body = _group_event(item_type, group_action)
    elif associated_type == _STICKER_ON_MESSAGE:
        kind, subkind, body = "media", "attachment", ""
        attachments = max(attachments, 1)
        reply_to = _target_guid(associated_guid)
    elif not body:
        if attachments:
            kind, subkind = "media", "attachment"
        else:
            kind, subkind = "system", "deleted" if retracted else "other"
    message = Message(
        platform=PLATFORM,
        chat_id=chat_id,
        id=message_id,
        timestamp=APPLE_EPOCH,
        author_id=author_id,
        author=author,
        text=body,
        kind=kind,
        reply_to=reply_to,
        attachments=attachments,
        subkind=subkind,
        reactions=reactions.get(message_id, 0),
    )
    return message, apple_time(date_value)


def _group_event(item_type: int, group_action: object) -> tuple[MessageKind, Subkind, str]:
    if item_type == 1:
        return "system", "member_leave" if group_action == 1 else "member_join", ""
    if item_type == 2:
        return "system", "rename", ""
    if item_type == 3:
        return "system", "member_leave" if group_action == 0 else "rename", ""
    if item_type == 6:
        return "call", "call", ""
    return "system", "other", ""


# ---------------------------------------------------------------------------------------------- bodies


def decode_attributed_body(blob: bytes) -> str | None:
    """The plain text of an `attributedBody` blob; None when it holds none this decoder understands."""
    if not blob or len(blob) > MAX_BODY_BYTES:
        return None
    if blob.startswith(b"bplist00"):
        return _keyed_archive_text(blob)
    return _typedstream_text(blob)


def _typedstream_text(blob: bytes) -> str | None:
    """NSArchiver typedstream (`\\x04\\x0bstreamtyped...`): the first NSString/NSMutableString object is
    the class name, then (within a few bytes) the `+` type tag of its bytes, a length and the UTF-8 bytes.

    Lengths: one byte below 0x80; 0x81 then 2 bytes little-endian; 0x82 then 4 bytes little-endian.
    """
    starts = [i for i in (blob.find(b"NSString"), blob.find(b"NSMutableString")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    tag = blob.find(b"\x01+", start, start + 40)
    if tag < 0:
        return None
    position = tag + 2
    if position >= len(blob):
        return None
    marker = blob[position]
    if marker < 0x80:
        length, position = marker, position + 1
    elif marker == 0x81:
        length, position = int.from_bytes(blob[position + 1 : position + 3], "little"), position + 3
    elif marker == 0x82:
        length, position = int.from_bytes(blob[position + 1 : position + 5], "little"), position + 5
    else:
        return None
    data = blob[position : position + length]
    if len(data) != length:  # cut short: a damaged blob
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _keyed_archive_text(blob: bytes) -> str | None:
    """NSKeyedArchiver binary property list: the root's `NS.string` / `NSString`, following at most a few
    object references."""
    try:
        archive = plistlib.loads(blob)
        objects = archive["$objects"]
        node: Any = archive["$top"]["root"]
        for _ in range(4):
            if isinstance(node, plistlib.UID):
                node = objects[node.data]
            if isinstance(node, str):
                return node
            if not isinstance(node, dict):
                return None
            node = node.get("NS.string", node.get("NSString"))
    except Exception:  # any damage in an untrusted blob (plistlib raises many types) means no text
        return None
    return node if isinstance(node, str) else None
