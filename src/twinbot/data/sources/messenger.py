"""Facebook Messenger (and, via instagram.py, Instagram) "Download your information" JSON.

Accepted paths: a thread folder (`message_1.json`, `message_2.json`, ... merged into one chat), one
`message_N.json` (its sibling parts are merged in), an `inbox`/`messages` folder or a whole export folder
holding many threads, a .zip of any of those, and the newer end-to-end-encrypted download shape
(`{participants: ["A", "B"], threadName, messages: [{senderName, timestamp, text, ...}]}`, one file per
thread, oldest first, correct UTF-8).

Classic files are newest first and every string is mojibake (UTF-8 bytes written as Latin-1 code points);
each string is repaired on its own and strings that are already correct are left alone. Meta has no
message ids: a message's id is its position in the thread, oldest first. Author ids are the sender names.
A message without a usable time borrows the previous message's time (the next one's for a thread's
leading messages, the Unix epoch when no message of the thread has a time).

Messenger or Instagram? The same files come from both, so the label is decided from evidence, per
thread: the path (`your_instagram_activity` or an `instagram-...zip` means Instagram,
`your_facebook_activity` / `your_activity_across_facebook` or a `facebook-...zip` means Messenger), the
E2EE shape (Messenger only), Messenger-only fields (`joinable_mode`, `magic_words`,
`is_unsent_image_by_messenger_kid_parent`) and Instagram-only ones (`share.original_content_owner`). When
nothing tells, the platform is `meta` (detection then picks `--format messenger`; both read the same way).

Kinds and subkinds: the texts Meta writes as if a person had sent them ("You sent an attachment.", "Ann
reacted ❤ to your message", "Ann left the group.", call summaries, nickname changes, polls) come from the
phrase table (phrases.py) and become media/system/call records with their subkind; unsent messages are
system/deleted, `subscribe`/`unsubscribe` member_join/member_leave, calls call, attachments without text
media/attachment, and a message with nothing at all system/placeholder. A message's `reactions` list is
counted into `Message.reactions`. Notices in a wording the table lacks are told by the thread's evidence:
reaction notices by the reactions the export lists, others by the same words after two senders' own names.
"""

from __future__ import annotations

import functools
import json
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from twinbot.data.chat_order import sort_chat
from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import (
    SNIFF_BYTES,
    UTF8_BOM,
    ExportTree,
    decode_text,
    fill_missing_times,
    from_unix_seconds,
    is_zip,
    read_head,
)
from twinbot.data.sources.phrases import META_MATCHER
from twinbot.errors import TwinbotError

NAME = "messenger"

Platform = Literal["messenger", "instagram", "meta"]  # meta: a Meta export that does not say which
PLATFORMS: tuple[Platform, ...] = get_args(Platform)

_PART_FILE = re.compile(r"^message_(\d+)\.json$")
_HTML_PART = re.compile(r"(^|/)message_\d+\.html$")
_INSTAGRAM_DIRS = frozenset({"your_instagram_activity"})
_FACEBOOK_DIRS = frozenset({"your_facebook_activity", "your_activity_across_facebook"})
_ATTACHMENT_LISTS = ("photos", "videos", "audio_files", "files", "gifs")
_MEMBER_TYPES: dict[str, Subkind] = {"subscribe": "member_join", "unsubscribe": "member_leave"}
# Fields only Messenger downloads have (thread level, message level).
_MESSENGER_THREAD_KEYS = ("joinable_mode", "magic_words")
_MESSENGER_MESSAGE_KEYS = ("is_unsent_image_by_messenger_kid_parent",)
_EVIDENCE_MESSAGES = 200  # how many messages of a thread are looked at for platform-only fields
_UNKNOWN_SENDER = "Unknown"
_MAX_SNIFF_DIRS = 400
_MAX_SNIFF_DEPTH = 6
_JSON_ERRORS: tuple[type[BaseException], ...] = (ValueError, RecursionError)


# ---------------------------------------------------------------------------------------------- mojibake


def fix_mojibake(text: str) -> str:
    """Undo Meta's encoding bug (UTF-8 bytes stored as Latin-1 code points); correct text is unchanged.

    Text with a character above U+00FF cannot be mojibake, and text whose Latin-1 bytes are not valid
    UTF-8 (like a correctly encoded "café") was correct already.
    """
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _string(value: Any, repair: bool) -> str:
    if not isinstance(value, str):
        return ""
    return fix_mojibake(value) if repair else value


# ---------------------------------------------------------------------------------------------- detection


def _head_shape(head: bytes) -> Literal["classic", "e2ee"] | None:
    head = head.removeprefix(UTF8_BOM).lstrip()
    if not head.startswith(b"{"):
        return None
    if b'"senderName"' in head or b'"threadName"' in head:
        return "e2ee"
    if b'"sender_name"' in head or b'"timestamp_ms"' in head:
        return "classic"
    if b'"participants"' in head and b'"messages"' in head and b'"thread_path"' in head:
        return "classic"
    return None


def _head_platform(head: bytes) -> Platform | None:
    """Platform-only fields in the first few KB of a classic file."""
    if b'"original_content_owner"' in head:
        return "instagram"
    if any(f'"{key}"'.encode() in head for key in (*_MESSENGER_THREAD_KEYS, *_MESSENGER_MESSAGE_KEYS)):
        return "messenger"
    return None


def _path_platform(parts: tuple[str, ...]) -> Platform | None:
    for part in parts:
        lowered = part.lower()
        if lowered in _INSTAGRAM_DIRS:
            return "instagram"
        if lowered in _FACEBOOK_DIRS:
            return "messenger"
    return None


def _zip_name_platform(path: Path) -> Platform | None:
    lowered = path.name.lower()
    if lowered.startswith("instagram-") or lowered.startswith("instagram_"):
        return "instagram"
    if lowered.startswith("facebook-") or lowered.startswith("facebook_"):
        return "messenger"
    return None


def _is_e2ee_candidate(name: str) -> bool:
    """Non-`message_N` JSON files worth opening as E2EE threads: near the root or under a messages folder."""
    posix = PurePosixPath(name)
    if posix.suffix.lower() != ".json" or _PART_FILE.match(posix.name):
        return False
    folders = [p.lower() for p in posix.parts[:-1]]
    return len(folders) <= 1 or any("messag" in p or "e2ee" in p for p in folders)


def _first_thread_file_in_folder(root: Path) -> Path | None:
    """A message file under `root` found by a bounded breadth-first walk (cheap enough for sniffing)."""
    queue: list[tuple[Path, int]] = [(root, 0)]
    visited = 0
    e2ee_candidate: Path | None = None
    while queue and visited < _MAX_SNIFF_DIRS:
        folder, depth = queue.pop(0)
        visited += 1
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda e: e.name)
        except OSError:
            continue
        for entry in children:
            try:
                if entry.is_file() and _PART_FILE.match(entry.name):
                    return Path(entry.path)
                if (
                    e2ee_candidate is None
                    and entry.is_file()
                    and _is_e2ee_candidate(Path(entry.path).relative_to(root).as_posix())
                    and _head_shape(read_head(Path(entry.path), 1024)) == "e2ee"
                ):
                    e2ee_candidate = Path(entry.path)
                if entry.is_dir() and depth < _MAX_SNIFF_DEPTH:
                    queue.append((Path(entry.path), depth + 1))
            except OSError:
                continue
    return e2ee_candidate


def _zip_head(path: Path) -> tuple[str, bytes] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.startswith("__MACOSX/")]
            parts = [n for n in names if _PART_FILE.match(PurePosixPath(n).name)]
            candidates = parts[:1] or [n for n in names if _is_e2ee_candidate(n)][:20]
            for name in candidates:
                with archive.open(name) as member:
                    head = member.read(SNIFF_BYTES)
                if _head_shape(head):
                    return name, head
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        RuntimeError,
        NotImplementedError,
    ):
        return None
    return None


def detect_platform(path: Path) -> Platform | None:
    """ "messenger", "instagram" or (no evidence either way) "meta" for a Meta message export, None when
    `path` is not one."""
    path = Path(path)
    if path.is_dir():
        found = _first_thread_file_in_folder(path)
        if found is None:
            return None
        head = read_head(found)
        where = _path_platform(found.absolute().parts)
    elif is_zip(path):
        member = _zip_head(path)
        if member is None:
            return None
        name, head = member
        where = _path_platform(PurePosixPath(name).parts) or _zip_name_platform(path)
    elif path.is_file():
        head = read_head(path)
        where = _path_platform(path.absolute().parts)
    else:
        return None
    shape = _head_shape(head)
    if shape is None:
        return None
    if where is not None:
        return where
    if shape == "e2ee":
        return "messenger"
    return _head_platform(head) or "meta"


def sniff(path: Path) -> bool:
    return detect_platform(path) in ("messenger", "meta")


# ---------------------------------------------------------------------------------------------- threads


@dataclass(slots=True)
class _Thread:
    """The files of one chat: classic parts (message_1.json first) or one E2EE file."""

    key: str
    files: list[str] = field(default_factory=list)


def _part_number(name: str) -> int:
    match = _PART_FILE.match(PurePosixPath(name).name)
    return int(match.group(1)) if match else 0


def _threads(tree: _Tree) -> list[_Thread]:
    """Threads in `tree` sorted by folder: message_N.json parts grouped by folder, and E2EE files."""
    threads: dict[str, _Thread] = {}
    for name in tree.names:
        posix = PurePosixPath(name)
        if _PART_FILE.match(posix.name):
            folder = str(posix.parent)
            threads.setdefault(folder, _Thread(folder)).files.append(name)
    for thread in threads.values():
        thread.files.sort(key=_part_number)
    for name in tree.names:
        if _is_e2ee_candidate(name) and _head_shape(tree.read_head(name)) == "e2ee":
            threads[name] = _Thread(name, [name])
    return [threads[key] for key in sorted(threads)]


def _load(tree: _Tree, name: str) -> dict[str, Any]:
    where = tree.display(name)
    text = decode_text(tree.read_bytes(name), where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TwinbotError(
            f"not valid JSON ({exc.msg}); download the file again from Meta", where, exc.lineno
        ) from exc
    except _JSON_ERRORS as exc:
        raise TwinbotError("not valid JSON; download the file again from Meta", where) from exc
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise TwinbotError(
            "not a Messenger/Instagram message file (no `messages` list); pass the message_1.json files "
            "from Download your information, in JSON format",
            where,
        )
    return data


# ---------------------------------------------------------------------------------------------- messages


def _actors(sender: str) -> frozenset[str]:
    """Who a Meta notice of this sender may name as its subject: "You", the sender, their first name."""
    names = {"you", sender.strip().lower()}
    if " " in sender.strip():
        names.add(sender.strip().split()[0].lower())
    return frozenset(name for name in names if name)


@functools.lru_cache(maxsize=4096)  # per sender, not per message; bounded: names come from the file
def _names_longest_first(sender: str) -> tuple[str, ...]:
    """The sender's names a notice may start with (full, first), longest first: "You" left out."""
    return tuple(sorted(_actors(sender) - {"you"}, key=len, reverse=True))


def generated_notice(text: str, sender: str) -> tuple[MessageKind, Subkind] | None:
    """The kind and subkind of a text Meta wrote itself ("You sent an attachment.", "Ann reacted ❤ to your
    message"), None for text a person wrote. Only texts whose subject is the sender (or "You") count."""
    stripped = text.strip()
    if not stripped:
        return None
    phrase = META_MATCHER.find_template(stripped, _actors(sender))
    return None if phrase is None else (phrase.kind, phrase.subkind)


def generated_kind(text: str, sender: str) -> MessageKind | None:
    notice = generated_notice(text, sender)
    return None if notice is None else notice[0]


def _timestamp_ms(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return from_unix_seconds(float(value) / 1000)
    except ValueError:
        return None


def _e2ee_timestamp(value: Any) -> datetime | None:
    """E2EE `timestamp`: milliseconds (seconds when the number is too small to be milliseconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
        return from_unix_seconds(number / 1000 if abs(number) >= 1e11 else number)
    except ValueError:
        return None


@dataclass(slots=True)
class _Draft:
    time: datetime | None
    sender: str
    text: str
    kind: MessageKind
    subkind: Subkind | None
    attachments: int
    reactions: int
    reacted: frozenset[tuple[str, str]]  # (actor, emoji) of each reaction the export lists on it


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def _reactions(value: Any, repair: bool) -> frozenset[tuple[str, str]]:
    pairs = set()
    for reaction in value if isinstance(value, list) else ():
        if isinstance(reaction, dict):
            actor = _string(reaction.get("actor"), repair)
            emoji = _string(reaction.get("reaction"), repair).replace(_EMOJI_STYLE, "").strip()
            if actor and emoji:
                pairs.add((actor, emoji))
    return frozenset(pairs)


# Reaction notices in a wording the phrase table lacks (its languages are data, and most have no reaction
# row): a text is taken for one by the thread's own evidence. Its sender reacted with an emoji, per the
# reactions the export lists on messages; the text holds that emoji with words both before and after it
# ("Ann reacted ❤ to your message", "Reagiu com 👍 à sua mensagem"); and the same wording, once the emoji and
# the sender's name are taken out, comes with at least two different (sender, emoji) pairs in the thread.
# A person's "love you ❤" (nothing after the emoji) or a sentence one person repeats with one emoji is not.
_EMOJI_STYLE = "\ufe0f"  # the emoji-presentation selector some exports add to a reaction and others do not
_NOTICE_MAX_CHARS = 200
_NOTICE_MIN_WORDS = 3
_NOTICE_MIN_PAIRS = 2


def _notice_wording(text: str, sender: str, emoji: str) -> str | None:
    """`text` with `emoji` and the sender's names taken out, when it is shaped like a reaction notice."""
    if len(text) > _NOTICE_MAX_CHARS:
        return None
    plain = text.replace(_EMOJI_STYLE, "").casefold()
    at = plain.find(emoji.casefold())
    if at < 0:
        return None
    before, after = plain[:at], plain[at + len(emoji) :]
    if not any(c.isalpha() for c in before) or not any(c.isalpha() for c in after):
        return None
    if len(before.split()) + len(after.split()) < _NOTICE_MIN_WORDS:
        return None
    for name in _names_longest_first(sender):
        before = before.replace(name.casefold(), " ")
    return " ".join(before.split()) + " {emoji} " + " ".join(after.split())


def _mark_unlisted_reaction_notices(drafts: list[_Draft]) -> None:
    """Re-kind as system/reaction the texts that are reaction notices by the thread's evidence (above)."""
    emojis: defaultdict[str, set[str]] = defaultdict(set)
    for draft in drafts:
        for actor, emoji in draft.reacted:
            emojis[actor].add(emoji)
    if not emojis:
        return
    found: defaultdict[str, list[tuple[_Draft, str]]] = defaultdict(list)
    for draft in drafts:
        if draft.kind != "text":
            continue
        for emoji in sorted(emojis.get(draft.sender, ()), key=len, reverse=True):
            wording = _notice_wording(draft.text, draft.sender, emoji)
            if wording is not None:
                found[wording].append((draft, emoji))
                break
    for notices in found.values():
        if len({(draft.sender, emoji) for draft, emoji in notices}) >= _NOTICE_MIN_PAIRS:
            for draft, _ in notices:
                draft.kind, draft.subkind = "system", "reaction"


# Other notices in a wording the phrase table lacks ("Marco Rossi ha inviato un allegato.", "Ayşe bir ek
# gönderdi."): Meta writes them with the sender's name first, the same words after it for everyone. So a short
# text that starts with its sender's name (or first name) is a notice when the words after the name are the
# same in texts of at least two different senders of the thread. Its kind is unknown: system/other. A person
# rarely starts a message with their own name, and two people doing it with the same words is rarer still.
_TEMPLATE_MIN_WORDS = 2
_TEMPLATE_MAX_WORDS = 10
_TEMPLATE_MIN_SENDERS = 2


def _words_after_name(text: str, sender: str) -> str | None:
    """The words after the sender's name at the start of `text`, when it is shaped like a Meta notice."""
    if len(text) > _NOTICE_MAX_CHARS:
        return None
    plain = " ".join(text.lower().split())  # lower(), as _actors
    for name in _names_longest_first(sender):
        if plain.startswith(name + " "):
            rest = plain[len(name) + 1 :]
            words = len(rest.split())
            if _TEMPLATE_MIN_WORDS <= words <= _TEMPLATE_MAX_WORDS and any(c.isalpha() for c in rest):
                return rest
            return None
    return None


def _mark_unlisted_notices(drafts: list[_Draft]) -> None:
    """Re-kind as system/other the texts that are notices by the thread's evidence (above)."""
    found: defaultdict[str, list[_Draft]] = defaultdict(list)
    for draft in drafts:
        if draft.kind == "text" and (rest := _words_after_name(draft.text, draft.sender)) is not None:
            found[rest].append(draft)
    for notices in found.values():
        if len({draft.sender for draft in notices}) >= _TEMPLATE_MIN_SENDERS:
            for draft in notices:
                draft.kind, draft.subkind = "system", "other"


def _classify(
    text: str, sender: str, attachments: int, given: tuple[MessageKind, Subkind] | None
) -> tuple[MessageKind, Subkind | None, int]:
    if given is not None:
        return given[0], given[1], attachments
    notice = generated_notice(text, sender)
    if notice is not None:
        kind, subkind = notice
        return kind, subkind, max(attachments, 1) if kind == "media" else attachments
    if text.strip() and text.strip().lower() != "null":
        return "text", None, attachments
    if attachments:
        return "media", "attachment", attachments
    return "system", "placeholder", attachments


def _classic_draft(raw: Any, where: Path, index: int) -> _Draft:
    if not isinstance(raw, dict):
        raise TwinbotError(f"message #{index + 1} is not a JSON object; download the file again", where)
    sender = _string(raw.get("sender_name"), repair=True) or _UNKNOWN_SENDER
    text = _string(raw.get("content"), repair=True)
    attachments = sum(_count(raw.get(key)) for key in _ATTACHMENT_LISTS)
    if raw.get("sticker"):
        attachments += 1
    share = raw.get("share")
    if not text.strip() and isinstance(share, dict):
        text = _string(share.get("link"), repair=True)
    message_type = raw.get("type").lower() if isinstance(raw.get("type"), str) else ""
    given: tuple[MessageKind, Subkind] | None = None
    if raw.get("is_unsent") is True:
        given = ("system", "deleted")
    elif message_type in _MEMBER_TYPES:
        given = ("system", _MEMBER_TYPES[message_type])
    elif message_type == "call" or "call_duration" in raw:
        given = ("call", "call")
    kind, subkind, attachments = _classify(text, sender, attachments, given)
    time = _timestamp_ms(raw.get("timestamp_ms"))
    reactions = raw.get("reactions")
    return _Draft(
        time, sender, text, kind, subkind, attachments, _count(reactions), _reactions(reactions, repair=True)
    )


def _e2ee_draft(raw: Any, where: Path, index: int) -> _Draft:
    if not isinstance(raw, dict):
        raise TwinbotError(f"message #{index + 1} is not a JSON object; download the file again", where)
    sender = _string(raw.get("senderName"), repair=False) or _UNKNOWN_SENDER
    text = _string(raw.get("text"), repair=False)
    attachments = _count(raw.get("media"))
    message_type = raw.get("type").lower() if isinstance(raw.get("type"), str) else ""
    given: tuple[MessageKind, Subkind] | None = None
    if raw.get("isUnsent") is True or "unsent" in message_type:
        given = ("system", "deleted")
    elif "call" in message_type:
        given = ("call", "call")
    kind, subkind, attachments = _classify(text, sender, attachments, given)
    time = _e2ee_timestamp(raw.get("timestamp"))
    reactions = raw.get("reactions")
    return _Draft(
        time, sender, text, kind, subkind, attachments, _count(reactions), _reactions(reactions, repair=False)
    )


def _thread_chat_id(first_file: Path, data: dict[str, Any], e2ee: bool) -> str:
    """`thread_path` ("inbox/ann_123") when present, else the thread folder (E2EE: the file name)."""
    if e2ee:
        return first_file.stem
    thread_path = _string(data.get("thread_path"), repair=True).strip()
    if thread_path:
        return thread_path
    return "/".join(first_file.parent.parts[-2:]) or "thread"


def _is_e2ee(name: str, data: dict[str, Any]) -> bool:
    if _PART_FILE.match(PurePosixPath(name).name):
        return False
    sample = [m for m in data["messages"][:50] if isinstance(m, dict)]
    if sample:
        return not any("sender_name" in m or "timestamp_ms" in m for m in sample)
    return "threadName" in data or any(isinstance(p, str) for p in _list(data.get("participants")))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _data_platform(data: dict[str, Any], e2ee: bool) -> Platform | None:
    """What the thread's own fields say about where it came from."""
    if e2ee or any(key in data for key in _MESSENGER_THREAD_KEYS):
        return "messenger"
    for raw in data["messages"][:_EVIDENCE_MESSAGES]:
        if not isinstance(raw, dict):
            continue
        share = raw.get("share")
        if isinstance(share, dict) and "original_content_owner" in share:
            return "instagram"
        if any(key in raw for key in _MESSENGER_MESSAGE_KEYS):
            return "messenger"
    return None


def _thread_messages(tree: _Tree, thread: _Thread, root_platform: Platform | None) -> list[Message]:
    drafts: list[_Draft] = []
    chat_id = ""
    e2ee = False
    platform = root_platform or _path_platform(PurePosixPath(thread.files[0]).parts)
    for name in thread.files:
        where = tree.display(name)
        data = _load(tree, name)
        e2ee = _is_e2ee(name, data)
        if not chat_id:
            chat_id = _thread_chat_id(where, data, e2ee)
        platform = platform or _data_platform(data, e2ee)
        make = _e2ee_draft if e2ee else _classic_draft
        drafts.extend(make(raw, where, i) for i, raw in enumerate(data["messages"]))
    if not e2ee:
        # Classic parts are newest first and message_1 is the newest part: the reversed concatenation
        # is oldest first, with equal times in their true order.
        drafts.reverse()
    _mark_unlisted_reaction_notices(drafts)
    _mark_unlisted_notices(drafts)
    return _finish(drafts, chat_id, platform or "meta")


def _finish(drafts: list[_Draft], chat_id: str, platform: Platform) -> list[Message]:
    times = fill_missing_times(draft.time for draft in drafts)
    messages: list[Message] = []
    for position, (draft, time) in enumerate(zip(drafts, times, strict=True)):
        messages.append(
            Message(
                platform=platform,
                chat_id=chat_id,
                id=str(position),
                timestamp=time,
                author_id=draft.sender,
                author=draft.sender,
                text=draft.text,
                kind=draft.kind,
                attachments=draft.attachments,
                subkind=draft.subkind,
                reactions=draft.reactions,
            )
        )
    return sort_chat(messages)


# ---------------------------------------------------------------------------------------------- parse


class _Files:
    """An explicit list of files in one folder, with ExportTree's reading interface."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        self.names = names

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def display(self, name: str) -> Path:
        return self.root / name

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.display(name).read_bytes()
        except OSError as exc:
            raise TwinbotError(
                f"cannot read file ({exc.strerror}); check the path and permissions", self.display(name)
            ) from exc

    def read_head(self, name: str, size: int = SNIFF_BYTES) -> bytes:
        return read_head(self.display(name), size)


_Tree = ExportTree | _Files


def _open_tree(path: Path) -> tuple[_Tree, list[_Thread]]:
    if path.is_dir() or is_zip(path):
        tree: _Tree = ExportTree(path)
        return tree, _threads(tree)
    if _PART_FILE.match(path.name):  # one part: merge the thread's other parts beside it
        try:
            siblings = sorted(
                p.name for p in path.parent.iterdir() if _PART_FILE.match(p.name) and p.is_file()
            )
        except OSError as exc:
            raise TwinbotError(
                f"cannot list folder ({exc.strerror}); check the permissions", path.parent
            ) from exc
        files = _Files(path.parent, siblings)
        return files, _threads(files)
    files = _Files(path.parent, [path.name])
    return files, [_Thread(path.name, [path.name])]


def parse_meta(path: Path) -> Iterator[Message]:
    """Messages of every thread under `path` (see the module docstring for what `path` may be), each
    labelled with the platform its path or fields show ("meta" when they show neither)."""
    path = Path(path)
    if not path.exists():
        raise TwinbotError("no such file or folder; check the path", path)
    root_platform = _path_platform(path.absolute().parts) or (
        _zip_name_platform(path) if is_zip(path) else None
    )
    tree, threads = _open_tree(path)
    with tree:
        if not threads:
            hint = ""
            if any(_HTML_PART.search(n) for n in tree.names):
                hint = " (this download is in HTML; request it again in JSON format)"
            raise TwinbotError(
                "no Messenger/Instagram messages here (no message_1.json)"
                + hint
                + "; pass a thread folder, the messages folder or the .zip from Download your information",
                path,
            )
        for thread in threads:
            yield from _thread_messages(tree, thread, root_platform)


def parse(path: Path, options: ParseOptions | None = None) -> Iterator[Message]:
    return parse_meta(path)
