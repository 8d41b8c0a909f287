"""Slack workspace export: a folder or .zip with `users.json`, `channels.json` (and `groups.json`,
`dms.json`, `mpims.json` on paid plans) and one `<channel>/YYYY-MM-DD.json` list of messages per day.

The chat id is the channel's folder name (the channel name; DMs are exported under their id). `ts` is both
the message id and its time (UTC). User ids are resolved to display names (profile.display_name, else
real_name, else name) and Slack's markup (`<@U1>`, `<#C1|name>`, `<url|label>`, `<!here>`, `&amp;`) is
rendered as people read it. Channel events (`channel_join`, `channel_topic`, ...) are system messages with
a subkind (member_join, member_leave, rename, pin, deleted, call, settings, other). Bots (`bot_message`, a
`bot_id`, or a user flagged `is_bot`) keep their messages as text or media, with `is_bot` and an author id
`bot:<id>` and the bot's name: prepare's bot filter decides what to do with them. `file_share` is a message
with attachments by its sender; `file_comment` belongs to the commenter (`comment.user`, `comment.comment`).
`reactions[].count` is summed into `reactions`. A message without a usable `ts` borrows the previous
message's time.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from twinbot.data.chat_order import UNIX_EPOCH, sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import (
    ExportTree,
    decode_text,
    fill_missing_times,
    from_unix_seconds,
    is_zip,
    read_head,
)
from twinbot.errors import TwinbotError

NAME = "slack"

_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")
_TS = re.compile(r"^\s*(\d{1,12})(?:\.(\d{1,9}))?\s*$")
_LISTINGS = ("channels.json", "groups.json", "mpims.json", "dms.json")
_ROOT_MARKERS = ("channels.json", "users.json")
_TEXT_SUBTYPES = frozenset(
    {"thread_broadcast", "reply_broadcast", "me_message", "file_share", "file_comment"}
)
_EVENT_SUBKINDS: dict[str, Subkind] = {
    "channel_join": "member_join", "group_join": "member_join",
    "channel_leave": "member_leave", "group_leave": "member_leave",
    "channel_name": "rename", "group_name": "rename", "channel_topic": "rename", "group_topic": "rename",
    "channel_purpose": "rename", "group_purpose": "rename",
    "pinned_item": "pin", "unpinned_item": "pin",
    "tombstone": "deleted", "message_deleted": "deleted",
    "huddle_thread": "call", "sh_room_created": "call",
    "channel_archive": "settings", "channel_unarchive": "settings", "group_archive": "settings",
    "group_unarchive": "settings", "channel_convert_to_private": "settings", "bot_add": "settings",
    "bot_remove": "settings", "reminder_add": "settings",
}  # fmt: skip
_SLACKBOT = "USLACKBOT"
_MARKUP = re.compile(r"<([^<>\n]*)>")
_SPECIAL_MENTIONS = {"here": "@here", "channel": "@channel", "everyone": "@everyone"}
_MAX_SNIFF_DIRS = 50
_JSON_ERRORS: tuple[type[BaseException], ...] = (ValueError, RecursionError)


# ---------------------------------------------------------------------------------------------- sniffing


def _looks_like_json_list(head: bytes) -> bool:
    return head.lstrip().startswith(b"[")


def _sniff_folder(path: Path) -> bool:
    markers = [path / name for name in _ROOT_MARKERS if (path / name).is_file()]
    if not markers or not all(_looks_like_json_list(read_head(m, 256)) for m in markers):
        return False
    for count, child in enumerate(sorted(path.iterdir())):
        if count >= _MAX_SNIFF_DIRS:
            break
        if child.is_dir() and any(_DAY_FILE.match(p.name) for p in child.iterdir()):
            return True
    return False


def _sniff_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return False
    prefix = _root_prefix(names)
    return prefix is not None and any(_day_file_channel(name, prefix) for name in names)


def _within_export(path: Path) -> tuple[Path, str | None, str | None]:
    """(export root, channel, day file) for a channel folder or a day file inside an unzipped export."""
    if path.is_dir() and not _sniff_folder(path) and _sniff_folder(path.parent):
        return path.parent, path.name, None
    if path.is_file() and _DAY_FILE.match(path.name) and _sniff_folder(path.parent.parent):
        return path.parent.parent, path.parent.name, path.name
    return path, None, None


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return _sniff_folder(path) or _within_export(path)[1] is not None
    if is_zip(path):
        return _sniff_zip(path)
    return _within_export(path)[1] is not None


# ---------------------------------------------------------------------------------------------- layout


def _root_prefix(names: list[str]) -> str | None:
    """The folder (as "" or "dir/") holding channels.json/users.json, the shallowest one; None if absent."""
    roots = [
        str(PurePosixPath(name).parent)
        for name in names
        if PurePosixPath(name).name in _ROOT_MARKERS and not name.startswith("__MACOSX/")
    ]
    if not roots:
        return None
    root = min(roots, key=lambda r: (0 if r == "." else r.count("/") + 1, r))
    return "" if root == "." else root + "/"


def _day_file_channel(name: str, prefix: str) -> str | None:
    """The channel folder of `prefix<channel>/YYYY-MM-DD.json`, else None."""
    if not name.startswith(prefix):
        return None
    parts = PurePosixPath(name[len(prefix) :]).parts
    if len(parts) == 2 and _DAY_FILE.match(parts[1]):
        return parts[0]
    return None


def _load(tree: ExportTree, name: str) -> Any:
    where = tree.display(name)
    text = decode_text(tree.read_bytes(name), where)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TwinbotError(
            f"not valid JSON ({exc.msg}); export the workspace again from Slack", where, exc.lineno
        ) from exc
    except _JSON_ERRORS as exc:
        raise TwinbotError("not valid JSON; export the workspace again from Slack", where) from exc


def _load_list(tree: ExportTree, name: str, what: str) -> list[Any]:
    data = _load(tree, name)
    if not isinstance(data, list):
        raise TwinbotError(
            f"expected a JSON list of {what}; export the workspace again from Slack", tree.display(name)
        )
    return data


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class SlackUser:
    name: str
    is_bot: bool


def _display_name(record: dict[str, Any]) -> str:
    profile = record.get("profile") if isinstance(record.get("profile"), dict) else {}
    return (
        _str(profile.get("display_name"))
        or _str(profile.get("real_name"))
        or _str(record.get("real_name"))
        or _str(record.get("display_name"))
        or _str(record.get("name"))
    )


def _users(tree: ExportTree, prefix: str) -> dict[str, SlackUser]:
    name = prefix + "users.json"
    if name not in tree.names:
        return {}
    users: dict[str, SlackUser] = {}
    for record in _load_list(tree, name, "users"):
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            users[record["id"]] = SlackUser(
                _display_name(record) or record["id"], record.get("is_bot") is True
            )
    return users


def _channel_names(tree: ExportTree, prefix: str) -> dict[str, str]:
    """Channel id -> name from every listing present (for `<#C123>` written without a label)."""
    names: dict[str, str] = {}
    for listing in _LISTINGS:
        if prefix + listing not in tree.names:
            continue
        for record in _load_list(tree, prefix + listing, "channels"):
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                names[record["id"]] = _str(record.get("name")) or record["id"]
    return names


# ---------------------------------------------------------------------------------------------- markup


@dataclass(frozen=True, slots=True)
class SlackDirectory:
    users: dict[str, SlackUser]
    channels: dict[str, str]


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _render_markup(inner: str, directory: SlackDirectory) -> str:
    target, _, label = inner.partition("|")
    label = _unescape(label)
    if target.startswith("@"):
        user = directory.users.get(target[1:])
        if user is not None:
            return f"@{user.name}"
        return f"@{label.removeprefix('@')}" if label else target
    if target.startswith("#"):
        name = label or directory.channels.get(target[1:]) or target[1:]
        return f"#{name.removeprefix('#')}"
    if target.startswith("!"):
        command = target[1:].split("^", 1)[0]
        if command in _SPECIAL_MENTIONS:
            return _SPECIAL_MENTIONS[command]
        return label or f"@{command}"
    return label or _unescape(target)


def render(text: str, directory: SlackDirectory) -> str:
    """Slack's markup as people read it: `<@U1>` -> "@Name", `<url|label>` -> "label", `&amp;` -> "&"."""
    pieces = _MARKUP.split(text)
    # re.split with one group alternates literal text and the markup's inside.
    return "".join(
        _unescape(piece) if index % 2 == 0 else _render_markup(piece, directory)
        for index, piece in enumerate(pieces)
    )


# ---------------------------------------------------------------------------------------------- messages


def _ts_time(ts: str) -> datetime | None:
    match = _TS.match(ts)
    if match is None:
        return None
    whole, fraction = match.groups()
    try:
        moment = from_unix_seconds(int(whole))
    except ValueError:
        return None
    return moment + timedelta(microseconds=int((fraction or "0")[:6].ljust(6, "0")))


def _author(raw: dict[str, Any], directory: SlackDirectory) -> tuple[str, str, bool]:
    """(author id, author name, is bot)."""
    user_id = _str(raw.get("user"))
    bot_id = _str(raw.get("bot_id"))
    user = directory.users.get(user_id)
    is_bot = (
        raw.get("subtype") == "bot_message"
        or bool(bot_id)
        or user_id == _SLACKBOT
        or bool(user and user.is_bot)
    )
    profile = raw.get("user_profile") if isinstance(raw.get("user_profile"), dict) else {}
    name = (
        (user.name if user else "")
        or _display_name(profile)
        or _str(raw.get("username"))
        or _str(
            (raw.get("bot_profile") or {}).get("name") if isinstance(raw.get("bot_profile"), dict) else ""
        )
    )
    if is_bot:
        bot_key = bot_id or user_id or _str(raw.get("username")) or "unknown"
        return f"bot:{bot_key}", name or bot_key, True
    return user_id or "unknown", name or user_id or "Unknown", False


def _message(
    raw: Any, position: int, where: Path, directory: SlackDirectory
) -> tuple[Message, datetime | None]:
    """A message, and its time from `ts` (None when unusable: the message then holds the epoch)."""
    if not isinstance(raw, dict):
        raise TwinbotError(
            f"message #{position + 1} is not a JSON object; export the workspace again from Slack", where
        )
    ts = raw.get("ts") if isinstance(raw.get("ts"), str) else ""
    time = _ts_time(ts) if ts else None
    text = render(raw["text"], directory) if isinstance(raw.get("text"), str) else ""
    files = raw.get("files")
    attachments = len(files) if isinstance(files, list) else (1 if isinstance(raw.get("file"), dict) else 0)
    subtype = raw.get("subtype")
    comment = raw.get("comment")
    if subtype == "file_comment" and isinstance(comment, dict):
        # the commenter, not the file's owner, wrote it; `text` is Slack's "<@U1> commented on ..." line
        raw = {**raw, "user": comment.get("user") or raw.get("user")}
        if isinstance(comment.get("comment"), str):
            text = render(comment["comment"], directory)
    is_event = (
        subtype is not None
        and subtype != "bot_message"
        and (not isinstance(subtype, str) or subtype not in _TEXT_SUBTYPES)
    )
    author_id, author, is_bot = _author(raw, directory)
    kind: MessageKind
    subkind: Subkind | None = None
    if is_event:
        kind, subkind = (
            "system",
            _EVENT_SUBKINDS.get(subtype, "other") if isinstance(subtype, str) else "other",
        )
        if subkind == "call":
            kind = "call"
    elif text.strip():
        kind = "text"
    elif attachments:
        kind, subkind = "media", "attachment"
    else:
        kind, subkind = "system", "placeholder"
    reactions = raw.get("reactions")
    reaction_count = (
        sum(r["count"] for r in reactions if isinstance(r, dict) and type(r.get("count")) is int)
        if isinstance(reactions, list)
        else 0
    )
    thread_ts = raw.get("thread_ts")
    reply_to = thread_ts if isinstance(thread_ts, str) and thread_ts and thread_ts != ts else None
    message = Message(
        platform=NAME,
        chat_id="",
        id=ts.strip() or f"#{position}",
        timestamp=time or UNIX_EPOCH,
        author_id=author_id,
        author=author,
        text=text,
        kind=kind,
        reply_to=reply_to,
        attachments=attachments,
        is_bot=is_bot,
        subkind=subkind,
        reactions=reaction_count,
    )
    return message, time


def _channel(tree: ExportTree, channel: str, days: list[str], directory: SlackDirectory) -> list[Message]:
    messages: list[Message] = []
    times: list[datetime | None] = []
    for day in days:
        where = tree.display(day)
        for raw in _load_list(tree, day, "messages"):
            message, time = _message(raw, len(messages), where, directory)
            message.chat_id = channel
            messages.append(message)
            times.append(time)
    for message, time in zip(messages, fill_missing_times(times), strict=True):
        message.timestamp = time
    return sort_chat(messages)


def parse(path: Path, options: ParseOptions | None = None) -> Iterator[Message]:
    """Every channel of an export folder or .zip; one channel (or one day) when given its folder (file)."""
    path, only_channel, only_day = _within_export(Path(path))
    if not path.is_dir() and not is_zip(path):
        raise TwinbotError(
            "a Slack export is a folder or a .zip (with users.json, channels.json and one folder per "
            "channel); pass that instead of a single file",
            path,
        )
    with ExportTree(path) as tree:
        prefix = _root_prefix(tree.names)
        channels: dict[str, list[str]] = {}
        if prefix is not None:
            for name in tree.names:
                channel = _day_file_channel(name, prefix)
                if channel is None or (only_channel is not None and channel != only_channel):
                    continue
                if only_day is None or PurePosixPath(name).name == only_day:
                    channels.setdefault(channel, []).append(name)
        if prefix is None or not channels:
            raise TwinbotError(
                "no Slack channel found (expected users.json or channels.json beside folders of "
                "YYYY-MM-DD.json files); pass the unzipped export folder or the export .zip",
                path,
            )
        directory = SlackDirectory(_users(tree, prefix), _channel_names(tree, prefix))
        for channel in sorted(channels):
            yield from _channel(tree, channel, sorted(channels[channel]), directory)
