"""Discord's own data package ("Request my data"), as the downloaded .zip or its unpacked folder.

Layout: `messages/` (newer packages: `Messages/`) holds one folder per channel, `c<id>/` (old packages:
`<id>/`) with `channel.json` and `messages.json` or `messages.csv`; `account/user.json` names the owner.
The package holds only the owner's own messages, so every record gets the owner as author.
Ids may have been mangled by spreadsheet software (`7.73264E+18`); they are kept as opaque strings.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinbot.data.chat_order import sort_chat, time_key
from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import ExportTree, is_zip, parse_iso_datetime
from twinbot.errors import TwinbotError

NAME = "discord-package"
UNKNOWN_OWNER = "me"

_CHANNEL_FILE = re.compile(
    r"^(?:(?P<prefix>(?:[^/]+/)*?)(?:messages|Messages)/)?(?P<dir>c?\d+)/"
    r"(?P<file>channel\.json|messages\.json|messages\.csv)$"
)
_USER_FILE = re.compile(r"^(?:[^/]+/)*?(?:account|Account)/user\.json$")
_MESSAGE_DIRS = ("messages", "Messages")


@dataclass(slots=True)
class _Channel:
    folder: str  # member folder inside the tree, e.g. "messages/c123"
    files: dict[str, str] = field(default_factory=dict)  # "channel.json" -> member name


@dataclass(frozen=True, slots=True)
class _Owner:
    id: str
    name: str


def sniff(path: Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return _sniff_folder(path)
    if not is_zip(path):
        return False
    try:
        with ExportTree(path) as tree:
            return any(_CHANNEL_FILE.match(name) for name in tree.names)
    except TwinbotError:
        return False


def _sniff_folder(folder: Path) -> bool:
    candidates = [folder / name for name in _MESSAGE_DIRS]
    if folder.name in _MESSAGE_DIRS or (folder / "index.json").is_file():
        candidates.append(folder)
    for messages_dir in candidates:
        if not messages_dir.is_dir():
            continue
        for channel_dir in messages_dir.iterdir():
            if re.fullmatch(r"c?\d+", channel_dir.name) and (channel_dir / "channel.json").is_file():
                return True
    return False


def parse(path: Path, options: ParseOptions) -> Iterator[Message]:
    path = Path(path)
    with ExportTree(path) as tree:
        channels = _find_channels(tree)
        if not any("messages.json" in c.files or "messages.csv" in c.files for c in channels):
            raise TwinbotError(
                "no Discord messages found (expected messages/c<id>/messages.json or messages.csv); "
                "pass the package .zip or its unpacked folder",
                path,
            )
        owner = _read_owner(tree, path)
        for channel in channels:
            messages = list(_parse_channel(tree, channel, owner))
            if messages and time_key(messages[0].timestamp) > time_key(messages[-1].timestamp):
                messages.reverse()  # Discord writes newest first; reversing keeps equal times in order
            yield from sort_chat(messages)


def _find_channels(tree: ExportTree) -> list[_Channel]:
    channels: dict[str, _Channel] = {}
    for name in tree.names:
        match = _CHANNEL_FILE.match(name)
        if match:
            folder = name.rsplit("/", 1)[0]
            channels.setdefault(folder, _Channel(folder)).files[match.group("file")] = name
    return [channels[key] for key in sorted(channels)]


def _read_owner(tree: ExportTree, root: Path) -> _Owner:
    member = next((name for name in tree.names if _USER_FILE.match(name)), None)
    data: Any = None
    if member is not None:
        data = _load_json(tree, member)
    elif tree.root.is_dir():  # pointed at the messages folder itself: look beside it
        for account in ("account", "Account"):
            user_file = tree.root.parent / account / "user.json"
            if tree.root.name in _MESSAGE_DIRS and user_file.is_file():
                with ExportTree(user_file.parent) as account_tree:
                    data = _load_json(account_tree, "user.json")
                break
    if not isinstance(data, dict) or data.get("id") in (None, ""):
        return _Owner(UNKNOWN_OWNER, UNKNOWN_OWNER)
    owner_id = str(data["id"])
    username = data.get("username")
    return _Owner(owner_id, str(username) if username else owner_id)


def _parse_channel(tree: ExportTree, channel: _Channel, owner: _Owner) -> Iterator[Message]:
    chat_id = channel.folder.rsplit("/", 1)[-1].removeprefix("c")
    if "channel.json" in channel.files:
        info = _load_json(tree, channel.files["channel.json"])
        if isinstance(info, dict) and isinstance(info.get("id"), str) and info["id"]:
            chat_id = info["id"]
    if "messages.json" in channel.files:
        rows = _json_rows(tree, channel.files["messages.json"])
    elif "messages.csv" in channel.files:
        rows = _csv_rows(tree, channel.files["messages.csv"])
    else:
        return
    for member, line, row in rows:
        try:
            message_id = row["id"]
            stamp = row["timestamp"]
        except KeyError as exc:
            raise TwinbotError(
                f"message has no {exc.args[0].title()!r} field; use the files as Discord sent them",
                tree.display(member),
                line,
            ) from exc
        try:
            timestamp = parse_iso_datetime(stamp)
        except ValueError as exc:
            raise TwinbotError(
                "unreadable Timestamp (expected like 2020-08-25 22:54:05.726000+00:00; was the file "
                "re-saved by a spreadsheet?)",
                tree.display(member),
                line,
            ) from exc
        content = row.get("contents") or ""
        attachments = row.get("attachments") or ""
        if (
            not isinstance(content, str)
            or not isinstance(attachments, str)
            or not isinstance(message_id, str)
        ):
            raise TwinbotError(
                "message fields have the wrong type (file edited?)", tree.display(member), line
            )
        n_attachments = len(attachments.split())
        has_text = bool(content) and not content.isspace()
        yield Message(
            platform=NAME,
            chat_id=chat_id,
            id=message_id,
            timestamp=timestamp,
            author_id=owner.id,
            author=owner.name,
            text=content if has_text else "",
            kind="text" if has_text else "media",
            attachments=n_attachments,
            subkind=None if has_text else "attachment",
        )


def _json_rows(tree: ExportTree, member: str) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    data = _load_json(tree, member)
    if not isinstance(data, list):
        raise TwinbotError(
            "expected a list of messages; use the files as Discord sent them", tree.display(member)
        )
    for index, item in enumerate(data, 1):
        if not isinstance(item, dict):
            raise TwinbotError(f"message #{index} is not an object (file edited?)", tree.display(member))
        # keys are `ID, Timestamp, Contents, Attachments`; match them without caring about case
        yield member, None, {str(key).lower(): value for key, value in item.items()}


def _csv_rows(tree: ExportTree, member: str) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    text = tree.read_text(member)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip().lower() for name in header]
        if "id" not in columns or "timestamp" not in columns:
            raise TwinbotError(
                "expected the header ID,Timestamp,Contents,Attachments; use the files as Discord sent them",
                tree.display(member),
                1,
            )
        for row in reader:
            if not row:
                continue
            if len(row) != len(columns):
                raise TwinbotError(
                    f"row has {len(row)} columns, expected {len(columns)} (file truncated or edited?)",
                    tree.display(member),
                    reader.line_num,
                )
            yield member, reader.line_num, dict(zip(columns, row, strict=True))
    except csv.Error as exc:
        raise TwinbotError(f"malformed CSV ({exc})", tree.display(member), reader.line_num) from exc


def _load_json(tree: ExportTree, member: str) -> Any:
    text = tree.read_text(member)
    try:
        # numbers stay as written: a snowflake (or a mangled `7.73264E+18`) must not become a float
        return json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as exc:
        raise TwinbotError(
            f"not valid JSON ({exc.msg}); use the files as Discord sent them",
            tree.display(member),
            exc.lineno,
        ) from exc
    except RecursionError as exc:
        raise TwinbotError("the JSON is nested too deeply", tree.display(member)) from exc
