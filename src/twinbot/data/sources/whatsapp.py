"""WhatsApp "Export chat" files: the .txt, or the .zip holding it (`_chat.txt` / `WhatsApp Chat with X.txt`).

Both layouts are read:
    Android  `12/03/20, 14:05 - Alex: text`        iOS  `[12/03/2020, 14:05:23] Alex: text`
with any of the separators `/ . -`, 2- or 4-digit years, year-first dates, and 12-hour clocks (`PM`, `pm`,
`p. m.`, optionally after U+202F).

Day/month order: WhatsApp writes dates in the phone's locale and the file does not say which. A first
streaming pass looks at every header: a first field above 12 means day-first, a second field above 12
means month-first (both in one file is an error). When every date is ambiguous (all fields <= 12) the
sequence decides: the reading under which fewer date changes between consecutive messages go back in time,
else the one with more changes to the next day; with no such evidence it is a guess: month-first for a
12-hour (AM/PM) clock, as in US exports, day-first otherwise. The decision and its reason go to
`ParseOptions.date_notes` (shown by `parse` and in report.json); `--date-order dmy|mdy|ymd` (or the older
`--dayfirst`/`--monthfirst`) overrides it. A second streaming pass builds the messages, so
memory stays bounded by the number of distinct dates and times, plus 8 bytes per message for the
time-order check. When lines are out of time order (WhatsApp writes some late), a stable sort of message
numbers (~40 bytes per message) says where each belongs, and the second pass holds back only the
messages that come before a late one in the file.

Records: platform "whatsapp"; chat_id from the file name ("WhatsApp Chat with Alex.txt" -> "Alex") or the
zip's name; id = the 1-based line number of the message's header line; author/author_id = the sender as
shown, with U+200E and U+202A..U+202C marks removed; timestamps naive local time. Kinds (the wording of
every notice and placeholder, per language, is the table in phrases.py):
    system  lines with no `Name: ` (encryption notice, "X created group", ...; subkind from the phrase
            table's wording in any language it covers, else "other"; a quoted group name holding ": "
            stays in its notice); iOS notices, which carry the chat's name as sender and a leading U+200E
            (author ""); deleted messages ("This message was deleted": subkind deleted, the author is
            kept); a body that is empty or only `<This message was edited>` (placeholder)
    media   `<Media omitted>`, `image omitted`, "null" (subkind placeholder), `<attached: ...>`,
            `x.jpg (file attached)` (attachment), polls (poll; by their shape in languages without a
            row), locations (location), contact cards (contact): text "", attachments=1
    call    "Missed voice call" / "Missed video call" (text "", subkind call)
A trailing `<This message was edited>` is removed from the text.
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, TextIO

from twinbot.data.records import Message, MessageKind, Subkind
from twinbot.data.sources import DateOrderNote, ParseOptions
from twinbot.data.sources.common import check_zip_member
from twinbot.data.sources.phrases import (
    WHATSAPP_BODIES,
    WHATSAPP_BODY_MATCHER,
    WHATSAPP_GROUP_NAME_MATCHER,
    WHATSAPP_NOTICE_MATCHER,
)
from twinbot.errors import TwinbotError

NAME = "whatsapp"
PLATFORM = "whatsapp"

SNIFF_BYTES = 4096
_ZIP_MAGIC = b"PK\x03\x04"

# One header regex for both layouts. Groups: 1 "[" (iOS), 2 date, 3 date separator, 4 time, of which
# 5 hour, 6 minute, 7 second, 8 "a"/"p" of a 12-hour clock.
_HEADER = re.compile(
    r"[\u200e\u200f\u202a-\u202c\ufeff]*"
    r"(\[)?"
    r"(\d{1,4}([./-]) ?\d{1,2}\3 ?\d{1,4}\.?)"
    r",? (?:à )?"
    r"((\d{1,2})[:.](\d{2})(?:[:.](\d{2}))?(?:[ \u202f\u00a0]?([AaPp])\.?[ \u202f\u00a0]?[Mm]\.?)?)"
    r"(?(1)\] ?| [-–] )"
)
_DATE_PARTS = re.compile(r"(\d{1,4})[./-] ?(\d{1,2})[./-] ?(\d{1,4})")
_MARKS = re.compile(r"[\u200e\u202a-\u202c]")

_KEY_SECONDS_BITS = 17  # seconds of the day (< 86400 < 2**17) in the low bits of a per-message key
_KEY_SECONDS_MASK = (1 << _KEY_SECONDS_BITS) - 1

_EDITED = re.compile(
    r"<(?:This message was edited|Se editó este mensaje\.?|Diese Nachricht wurde bearbeitet"
    r"|Ce message a été modifié|Esta mensagem foi editada|Questo messaggio è stato modificato"
    r"|Dit bericht is bewerkt|Mensaje editado|Nachricht bearbeitet|Message modifié|Mensagem editada"
    r"|Messaggio modificato|Bericht bewerkt)>$",
    re.IGNORECASE,
)
# The longest edited marker, with room for spaces: the marker is looked for in the text's end only.
_EDITED_TAIL = 64
# Quote marks around a group's name in the notices of every language ("…", “…”, „…“, « … »).
_QUOTE_MARKS = '"“”„«»'
# A cheap pre-check: only texts that start or end like some placeholder or notice get the full checks.
_TRIGGER_LENGTH = 5
_START_TRIGGERS = frozenset(
    phrase.text.lower()[:_TRIGGER_LENGTH] for phrase in WHATSAPP_BODIES if phrase.rule in ("exact", "prefix")
)
_END_TRIGGERS = frozenset(
    phrase.text.lower()[-_TRIGGER_LENGTH:] for phrase in WHATSAPP_BODIES if phrase.rule == "suffix"
)
_CHAT_NAME = re.compile(
    r"(?:WhatsApp[ -]?Chat(?: with| mit| met| con| avec| com)?|Chat de WhatsApp con|Chat di WhatsApp con"
    r"|Discussion WhatsApp avec|Conversa do WhatsApp com|Conversa de WhatsApp com|Chat WhatsApp con)"
    r"\s*[-–]?\s*(.+)",
    re.IGNORECASE,
)
_DUPLICATE_SUFFIX = re.compile(r"\(\d+\)$")  # what a second download of a file gets: "chat (2)"

# Date order of a distinct date string.
_YEAR_FIRST, _DAY_FIRST, _MONTH_FIRST, _AMBIGUOUS = "ymd", "dmy", "mdy", "?"


@dataclass(slots=True)
class _Source:
    """One chat inside the input: the .txt itself, or one member of the .zip."""

    chat_id: str
    member: str | None  # zip member name; None for a plain file


@dataclass(slots=True)
class _Scan:
    """What the first pass learns from the headers alone."""

    dates: dict[str, int]  # distinct date string -> index (in first-seen order)
    date_lines: list[int]  # index -> first line it appears on
    keys: array  # per message: date index << 17 | seconds of the day
    times: dict[str, int]  # distinct time string -> seconds of the day
    in_file_order: bool  # dates never go back to an earlier one and times within a date never decrease
    twelve_hour: bool = False  # some header has an AM/PM marker


def sniff(path: Path) -> bool:
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                members = _chat_members(archive)
                if not members:
                    return False
                with archive.open(members[0]) as member:
                    return _looks_like_chat(member.read(SNIFF_BYTES))
        except (*_ZIP_ERRORS, ValueError):
            return False
    return _looks_like_chat(head)


def parse(path: Path, options: ParseOptions) -> Iterator[Message]:
    path = Path(path)
    if path.is_dir():
        raise TwinbotError("is a folder; pass the exported WhatsApp .txt or .zip file inside it", path)
    with path.open("rb") as handle:
        is_zip = handle.read(4) == _ZIP_MAGIC
    if not is_zip:
        yield from _parse_source(path, _Source(_chat_id_from_name(path.stem, path), None), options)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = _chat_members(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as exc:
        raise TwinbotError("damaged .zip file; export the chat again from WhatsApp", path) from exc
    if not members:
        raise TwinbotError(
            "this .zip holds no WhatsApp chat (_chat.txt or 'WhatsApp Chat with ….txt'); "
            "export the chat again or pass the .txt",
            path,
        )
    zip_chat_id = _chat_id_from_name(path.stem, path)
    for member in members:
        # "WhatsApp Chat with Alex.txt" names its chat; "_chat.txt" (iOS) leaves it to the zip's name
        chat_id = _chat_name(Path(member).stem) or zip_chat_id
        yield from _parse_source(path, _Source(chat_id, member), options)


# ---------------------------------------------------------------------------------------------- reading


def _looks_like_chat(head: bytes) -> bool:
    text = _decode_head(head)
    if text is None:
        return False
    for line in text.splitlines()[:20]:
        if not line.strip(" \t\u200e\u200f\ufeff"):
            continue
        match = _HEADER.match(line)
        return match is not None and match.end() < len(line.rstrip())
    return False


def _decode_head(head: bytes) -> str | None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head.decode("utf-16", errors="ignore")
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut by the read limit
            return None
        return head[: exc.start].decode("utf-8-sig")


def _chat_members(archive: zipfile.ZipFile) -> list[str]:
    texts = [info.filename for info in archive.infolist() if info.filename.lower().endswith(".txt")]
    chats = [
        name for name in texts if Path(name).name == "_chat.txt" or "whatsapp" in Path(name).name.lower()
    ]
    if chats:
        return sorted(chats)
    non_hidden = [name for name in texts if not Path(name).name.startswith((".", "__MACOSX"))]
    return non_hidden if len(non_hidden) == 1 else []


def _chat_name(stem: str) -> str | None:
    """ "Alex" from "WhatsApp Chat with Alex" (and its translations, iOS's "WhatsApp Chat - Alex")."""
    match = _CHAT_NAME.fullmatch(_without_duplicate_suffix(stem))
    if match is None:
        return None
    return _MARKS.sub("", match.group(1)).strip() or None


def _chat_id_from_name(stem: str, path: Path) -> str:
    """The chat's name from the file's name; `_chat.txt` (an unzipped iOS export) from its folder's."""
    if stem == "_chat":
        stem = path.resolve().parent.name
    return _chat_name(stem) or _MARKS.sub("", _without_duplicate_suffix(stem)) or "whatsapp"


def _without_duplicate_suffix(stem: str) -> str:
    stem = stem.strip()
    return _DUPLICATE_SUFFIX.sub("", stem).rstrip()


def _open_binary(path: Path, source: _Source) -> IO[bytes]:
    if source.member is None:
        return path.open("rb")
    archive = zipfile.ZipFile(path)
    try:
        # read as a stream, which zipfile ends at the member's declared size: that size is what to cap
        check_zip_member(archive.getinfo(source.member).file_size, 0, path / source.member)
        return _ZipMember(archive, source.member)
    except BaseException:
        archive.close()
        raise


class _ZipMember(io.BufferedReader):
    """A zip member as a buffered binary stream that closes its archive too."""

    def __init__(self, archive: zipfile.ZipFile, member: str) -> None:
        self._archive = archive
        super().__init__(archive.open(member), buffer_size=1 << 20)  # type: ignore[arg-type]

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._archive.close()


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    RuntimeError,
    NotImplementedError,
)


@contextmanager
def _reading(path: Path, source: _Source) -> Iterator[TextIO]:
    """The chat text as lines ending in "\\n" (BOM removed, CRLF translated): UTF-8, or UTF-16 with a BOM.

    Bad bytes and damaged archives met while the caller iterates become TwinbotError.
    """
    try:
        with _open_binary(path, source) as raw:
            head = raw.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
            if not utf16 and b"\x00" in head:
                raise TwinbotError(
                    "binary data, not a WhatsApp chat text; pass the exported .txt or .zip", path
                )
            with io.TextIOWrapper(raw, encoding="utf-16" if utf16 else "utf-8-sig", newline=None) as text:
                try:
                    yield text
                except UnicodeDecodeError as exc:
                    line = None if utf16 else _first_undecodable_line(path, source)
                    raise TwinbotError(
                        "not valid UTF-8 text (damaged, or not a WhatsApp export); export the chat again",
                        path,
                        line,
                    ) from exc
    except _ZIP_ERRORS as exc:
        raise TwinbotError("damaged .zip file; export the chat again from WhatsApp", path) from exc


def _first_undecodable_line(path: Path, source: _Source) -> int | None:
    try:
        with _open_binary(path, source) as raw:
            for line_no, data in enumerate(raw, 1):
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    return line_no
    except (*_ZIP_ERRORS, OSError):
        return None
    return None


# ---------------------------------------------------------------------------------------------- pass 1


def _scan(path: Path, source: _Source) -> _Scan:
    dates: dict[str, int] = {}
    date_lines: list[int] = []
    seconds_of: dict[str, int] = {}
    keys = array("q")
    in_order = True
    twelve_hour = False
    previous_index, previous_seconds = -1, -1
    header = _HEADER.match
    first_line_no = 0
    with _reading(path, source) as lines:
        for first_line_no, first in enumerate(lines, 1):
            if header(first) is not None:
                break
            if first.strip().strip("\u200e\u200f\ufeff"):
                raise TwinbotError(
                    "text before the first WhatsApp message header ('date, time - name: text'); "
                    "is this an untouched WhatsApp 'Export chat' file?",
                    path,
                    first_line_no,
                )
        else:
            if first_line_no == 0:
                raise TwinbotError("empty file; export the chat again from WhatsApp", path)
            raise TwinbotError(
                "no WhatsApp message header ('date, time - name: text') found; pass the exported chat .txt",
                path,
            )
        for line_no, line in enumerate(itertools.chain((first,), lines), first_line_no):
            match = header(line)
            if match is None:
                continue
            date_text, time_text = match.group(2, 4)
            index = dates.get(date_text)
            if index is None:
                index = dates[date_text] = len(date_lines)
                date_lines.append(line_no)
            seconds = seconds_of.get(time_text)
            if seconds is None:
                seconds = seconds_of[time_text] = _seconds(match, path, line_no)
                twelve_hour = twelve_hour or match.group(8) is not None
            keys.append(index << _KEY_SECONDS_BITS | seconds)
            if index < previous_index or (index == previous_index and seconds < previous_seconds):
                in_order = False
            previous_index, previous_seconds = index, seconds
    return _Scan(dates, date_lines, keys, seconds_of, in_order, twelve_hour)


def _seconds(header: re.Match[str], path: Path, line_no: int) -> int:
    hour_text, minute_text, second_text, marker = header.group(5, 6, 7, 8)
    hour, minute, second = int(hour_text), int(minute_text), int(second_text or 0)
    if marker is not None:
        if hour > 12:
            raise TwinbotError(
                "impossible 12-hour time in the message header; fix or re-export", path, line_no
            )
        hour = hour % 12 + (12 if marker in "Pp" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise TwinbotError("impossible time in the message header; fix or re-export", path, line_no)
    return hour * 3600 + minute * 60 + second


def _date_order(date_text: str) -> tuple[str, tuple[int, int, int]]:
    parts = _DATE_PARTS.match(date_text)
    assert parts is not None
    first_text = parts.group(1)
    first, second, third = int(first_text), int(parts.group(2)), int(parts.group(3))
    if len(first_text) >= 3 or first > 31:
        return _YEAR_FIRST, (first, second, third)
    if first > 12:
        return _DAY_FIRST, (first, second, third)
    if second > 12:
        return _MONTH_FIRST, (first, second, third)
    return _AMBIGUOUS, (first, second, third)


def _decide_order(scan: _Scan, orders: list[tuple[str, tuple[int, int, int]]], path: Path) -> DateOrderNote:
    """The file's day/month order from all its dates, and why; TwinbotError when they contradict."""
    total = len(orders)
    day_indexes = [i for i, (order, _) in enumerate(orders) if order == _DAY_FIRST]
    month_indexes = [i for i, (order, _) in enumerate(orders) if order == _MONTH_FIRST]
    if day_indexes and month_indexes:
        day_line, month_line = scan.date_lines[day_indexes[0]], scan.date_lines[month_indexes[0]]
        raise TwinbotError(
            f"dates mix day-first (line {day_line}) and month-first (line {month_line}) order; "
            "pass --date-order dmy or mdy (or --dayfirst or --monthfirst)",
            path,
            max(day_line, month_line),
        )
    if day_indexes:
        return DateOrderNote(
            path, "", "dmy", f"{len(day_indexes)} of {total} dates have a first field > 12", False
        )
    if month_indexes:
        return DateOrderNote(
            path, "", "mdy", f"{len(month_indexes)} of {total} dates have a second field > 12", False
        )
    if all(order == _YEAR_FIRST for order, _ in orders):
        return DateOrderNote(path, "", "ymd", "every date starts with the year", False)
    # every day and month <= 12: the messages' sequence decides (WhatsApp writes them nearly in time order)
    backward, next_day, changes = _sequence_evidence(scan, orders)
    names = {"dmy": "day-first", "mdy": "month-first"}
    if backward["dmy"] != backward["mdy"]:
        chosen, other = ("dmy", "mdy") if backward["dmy"] < backward["mdy"] else ("mdy", "dmy")
        reason = (
            f"every day and month <= 12; read {names[other]}, {backward[other]} of {changes} date changes "
            f"would go back in time, read {names[chosen]} {backward[chosen]}"
        )
        return DateOrderNote(path, "", chosen, reason, False)  # type: ignore[arg-type]
    if next_day["dmy"] != next_day["mdy"]:
        chosen, other = ("dmy", "mdy") if next_day["dmy"] > next_day["mdy"] else ("mdy", "dmy")
        reason = (
            f"every day and month <= 12; {next_day[chosen]} of {changes} date changes are to the next day "
            f"read {names[chosen]}, {next_day[other]} read {names[other]}"
        )
        return DateOrderNote(path, "", chosen, reason, False)  # type: ignore[arg-type]
    if scan.twelve_hour:
        reason = (
            "every date fits both orders; month-first is usual with a 12-hour (AM/PM) clock, as in US exports"
        )
        return DateOrderNote(path, "", "mdy", reason, True)
    reason = "every date fits both orders; day-first is usual with a 24-hour clock and more common worldwide"
    return DateOrderNote(path, "", "dmy", reason, True)


def _sequence_evidence(
    scan: _Scan, orders: list[tuple[str, tuple[int, int, int]]]
) -> tuple[dict[str, int], dict[str, int], int]:
    """Per reading (dmy, mdy): how many date changes between consecutive messages go back in time and
    how many go to the next day; and the number of date changes."""
    ordinal: dict[str, list[int]] = {}
    for reading in ("dmy", "mdy"):
        values = []
        for order, (first, second, third) in orders:
            year, month, day = (
                (first, second, third)
                if order == _YEAR_FIRST
                else ((third, second, first) if reading == "dmy" else (third, first, second))
            )
            try:
                values.append(date(year + 2000 if year < 100 else year, month, day).toordinal())
            except ValueError:
                values.append(0)  # an impossible date: reported when the dates are resolved
        ordinal[reading] = values
    backward = {"dmy": 0, "mdy": 0}
    next_day = {"dmy": 0, "mdy": 0}
    changes = 0
    previous = -1
    for key in scan.keys:
        index = key >> _KEY_SECONDS_BITS
        if index != previous and previous >= 0:
            changes += 1
            for reading, values in ordinal.items():
                step = values[index] - values[previous]
                backward[reading] += step < 0
                next_day[reading] += step == 1
        previous = index
    return backward, next_day, changes


def _resolve_dates(
    scan: _Scan, options: ParseOptions, path: Path, chat_id: str
) -> list[tuple[int, int, int]]:
    """(year, month, day) per distinct date index, with the file's date order decided (and noted in
    `options.date_notes`)."""
    orders = [_date_order(text) for text in scan.dates]
    forced = options.forced_date_order()
    if forced is not None:
        how = (
            "--date-order"
            if options.date_order is not None
            else ("--dayfirst" if forced == "dmy" else "--monthfirst")
        )
        note = DateOrderNote(path, chat_id, forced, f"given with {how}", False)
    else:
        decided = _decide_order(scan, orders, path)
        note = DateOrderNote(path, chat_id, decided.order, decided.reason, decided.guessed)
    options.date_notes.append(note)
    dayfirst = note.order == "dmy"
    resolved: list[tuple[int, int, int]] = []
    for index, (order, (first, second, third)) in enumerate(orders):
        if order == _YEAR_FIRST or note.order == "ymd":
            year, month, day = first, second, third
        elif dayfirst:
            year, month, day = third, second, first
        else:
            year, month, day = third, first, second
        if year < 100:
            year += 2000
        try:
            date(year, month, day)
        except ValueError:
            hint = (
                ""
                if order == _YEAR_FIRST
                else (
                    " or pass --date-order mdy (--monthfirst)"
                    if dayfirst
                    else " or pass --date-order dmy (--dayfirst)"
                )
            )
            raise TwinbotError(
                f"impossible date in the message header; fix the line{hint}", path, scan.date_lines[index]
            ) from None
        if year < 1970:
            raise TwinbotError(
                "date before 1970 in the message header; fix the line", path, scan.date_lines[index]
            )
        resolved.append((year, month, day))
    return resolved


def _time_order(scan: _Scan, ymd: list[tuple[int, int, int]]) -> list[int] | None:
    """Message indexes in time order (stable), or None when the file is already in time order."""
    ordinals = [date(*d).toordinal() for d in ymd]
    if scan.in_file_order and all(a < b for a, b in itertools.pairwise(ordinals)):
        return None
    mask = _KEY_SECONDS_MASK
    sort_keys = [ordinals[key >> _KEY_SECONDS_BITS] * 86400 + (key & mask) for key in scan.keys]
    return sorted(range(len(sort_keys)), key=sort_keys.__getitem__)


# ---------------------------------------------------------------------------------------------- pass 2


def _parse_source(path: Path, source: _Source, options: ParseOptions) -> Iterator[Message]:
    scan = _scan(path, source)
    ymd = _resolve_dates(scan, options, path, source.chat_id)
    order = _time_order(scan, ymd)
    date_of = {text: ymd[index] for text, index in scan.dates.items()}
    time_of = {
        text: (seconds // 3600, seconds // 60 % 60, seconds % 60) for text, seconds in scan.times.items()
    }
    del scan
    messages = _messages(path, source, date_of, time_of)
    if order is None:
        yield from messages
    else:
        yield from _reorder(messages, order, path)


def _reorder(messages: Iterable[Message], order: list[int], path: Path) -> Iterator[Message]:
    """Emit messages (numbered in file order) in `order`, holding only those that arrive early."""
    waiting: dict[int, Message] = {}
    position = 0
    count = len(order)
    for index, message in enumerate(messages):
        if index >= count:
            raise TwinbotError("the file changed while it was being read; run again", path)
        if order[position] != index:
            waiting[index] = message
            continue
        yield message
        position += 1
        while position < count and order[position] in waiting:
            yield waiting.pop(order[position])
            position += 1
    if position != count:  # the two passes disagree: the file changed while being read
        raise TwinbotError("the file changed while it was being read; run again", path)


def _messages(
    path: Path,
    source: _Source,
    date_of: dict[str, tuple[int, int, int]],
    time_of: dict[str, tuple[int, int, int]],
) -> Iterator[Message]:
    """Messages in file order. Lines keep their "\\n", so a message's lines join back with "".join."""
    chat_id = source.chat_id
    header = _HEADER.match
    marks = _MARKS.sub
    pending_line = 0
    pending_when: datetime | None = None
    pending_rest = ""
    continuation: list[str] = []
    with _reading(path, source) as lines:
        for line_no, line in enumerate(lines, 1):
            match = header(line)
            if match is None:
                if pending_when is not None:
                    continuation.append(line if line.isascii() else marks("", line))
                continue
            if pending_when is not None:
                yield _build(chat_id, pending_line, pending_when, pending_rest, continuation)
                continuation = []
            date_text, time_text = match.group(2, 4)
            try:
                year, month, day = date_of[date_text]
                hour, minute, second = time_of[time_text]
            except KeyError:
                raise TwinbotError(
                    "the file changed while it was being read; run again", path, line_no
                ) from None
            pending_when = datetime(year, month, day, hour, minute, second)
            pending_line = line_no
            pending_rest = line[match.end() :]
    if pending_when is not None:
        yield _build(chat_id, pending_line, pending_when, pending_rest, continuation)


def _build(chat_id: str, line_no: int, when: datetime, rest: str, continuation: list[str]) -> Message:
    """One message from the header's remainder (`Name: text` or a system notice) and its further lines."""
    split = rest.find(": ")
    if split < 0:
        bare = rest.rstrip()
        if bare.endswith(":") and continuation:
            split = len(bare) - 1  # "Name:" with the text starting on the next line
    if split < 0 or _is_notice_with_colon(rest, split):
        return _system(chat_id, line_no, when, rest, continuation)
    author = rest[:split]
    if not author.isascii():
        author = _MARKS.sub("", author).replace("\u202f", " ").replace("\u00a0", " ").strip()
    text = rest[split + 2 :]
    marked = text.startswith("\u200e")  # iOS marks its notices and placeholders with U+200E
    if not text.isascii():
        text = _MARKS.sub("", text)
    if continuation:
        text += "".join(continuation)
    text = text.strip()
    kind: MessageKind = "text"
    subkind: Subkind | None = None
    if text:
        kind, subkind, text = _classify(text)
    else:
        kind, subkind = "system", "placeholder"  # "Name:" and nothing: no body was exported
    if kind == "text" and marked:
        # iOS notice ("‎Alex created group …") with the group's name as sender
        kind, author = "system", ""
        notice = WHATSAPP_NOTICE_MATCHER.find_template(text)
        subkind = notice.subkind if notice is not None else "other"
    elif subkind == "encryption_notice":
        author = ""  # iOS puts the chat's name as the notice's sender
    attachments = 1 if kind == "media" else 0
    return Message(
        PLATFORM, chat_id, str(line_no), when, author, author, text, kind, None, attachments, subkind=subkind
    )


def _is_notice_with_colon(rest: str, split: int) -> bool:
    """Whether `rest` (a header's remainder whose first ": " is at `split`) is a system line whose quoted
    group name holds the ": " ('Jo changed the subject to "Trip: day 2"'), not a message from 'Jo changed
    the subject to "Trip': the ": " is inside quotes, and the whole line is one of the table's notices that
    quote a group's name, in any language it covers."""
    name = rest[:split]
    if '"' not in name and (name.isascii() or not any(mark in name for mark in _QUOTE_MARKS)):
        return False  # the common case: a sender's name without quote marks
    if not _ends_inside_quotes(name) or not any(mark in rest[split:] for mark in _QUOTE_MARKS):
        return False
    line = rest if rest.isascii() else _MARKS.sub("", rest)
    return WHATSAPP_GROUP_NAME_MATCHER.find_template(line.strip()) is not None


def _ends_inside_quotes(text: str) -> bool:
    """Whether the last quote mark in `text` opens a quotation ('to "Trip', 'von „Skat', 'en « Coloc'), so
    a sender such as 'Bob "Bobby" Smith' is not read as the start of a notice."""
    marks = [char for char in text if char in _QUOTE_MARKS]
    if not marks:
        return False
    last = marks[-1]
    if last == '"':
        return marks.count('"') % 2 == 1
    if last == "“":  # opens in English and Spanish, closes a German „…“
        return len(marks) == 1 or marks[-2] != "„"
    return last in "„«"


def _system(chat_id: str, line_no: int, when: datetime, rest: str, continuation: list[str]) -> Message:
    text = rest if rest.isascii() else _MARKS.sub("", rest)
    if continuation:
        text += "".join(continuation)
    text = text.strip()
    notice = WHATSAPP_NOTICE_MATCHER.find_template(text) or WHATSAPP_BODY_MATCHER.find(text)
    subkind: Subkind = notice.subkind if notice is not None else "other"
    return Message(PLATFORM, chat_id, str(line_no), when, "", "", text, "system", subkind=subkind)


# A poll in a language the phrase table has no "POLL:" row for is told by its shape, the same in every
# language: a label in capitals alone on the first line ("POLL:", "UMFRAGE:", "ANKET:"), the question, then
# two or more option lines under one label in capitals, each ending in its vote count ("OPTION: pizza (2
# votes)", "SEÇENEK: Kadıköy (2 oy)"). Typed by hand, a message is hardly ever shaped like that.
_POLL_LABEL_MAX = 30


def _is_capital_label(label: str) -> bool:
    label = label.strip()
    return (
        0 < len(label) <= _POLL_LABEL_MAX
        and any(c.isalpha() for c in label)
        and all(c.isupper() or c == " " for c in label)
    )


def _ends_in_vote_count(option: str) -> bool:
    if not option.endswith(")"):
        return False
    count, space, word = option[option.rfind("(") + 1 : -1].partition(" ")
    return count.isdigit() and bool(space) and word.isalpha()


def is_poll_block(text: str) -> bool:
    """Whether `text` (a message's body) is a WhatsApp poll by its shape (above)."""
    lines = [_MARKS.sub("", line).strip() for line in text.split("\n")]
    if len(lines) < 4 or not lines[0].endswith(":") or not _is_capital_label(lines[0][:-1]):
        return False
    labels = set()
    for line in lines[2:]:
        label, colon, option = line.partition(":")
        if not colon or not _is_capital_label(label) or not _ends_in_vote_count(option.strip()):
            return False
        labels.add(label.strip())
    return len(labels) == 1


def _classify(text: str) -> tuple[MessageKind, Subkind | None, str]:
    """The kind and subkind of a non-empty, stripped message text, and the text to keep."""
    if text[-1] == ">":
        tail_start = max(0, len(text) - _EDITED_TAIL)
        edited = _EDITED.search(text, tail_start)
        if edited is not None:
            text = text[: edited.start()].rstrip()
            if not text:
                return "system", "placeholder", ""
    if (
        text[0] != "<"
        and text[:_TRIGGER_LENGTH].lower() not in _START_TRIGGERS
        and text[-_TRIGGER_LENGTH:].lower() not in _END_TRIGGERS
        and ")" not in text
    ):
        return "text", None, text  # the common case: no placeholder or notice can start or end like this
    first_line, newline, _ = text.partition("\n")
    phrase = WHATSAPP_BODY_MATCHER.find(first_line)
    if phrase is None and newline and is_poll_block(text):
        return "media", "poll", ""
    if phrase is None or (newline and phrase.rule == "exact"):
        return "text", None, text
    if phrase.subkind == "poll" and not (newline and first_line.startswith(phrase.text)):
        return "text", None, text  # a poll is "POLL:" in capitals on its own line, its question below
    if phrase.kind == "system":
        return "system", phrase.subkind, text  # the notice is kept as it is: never training text anyway
    return phrase.kind, phrase.subkind, ""
