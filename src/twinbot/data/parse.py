"""`twinbot parse`: read exports and summarise them, or stream the normalized records as JSON Lines.

`--jsonl` is the one place where message text is printed, on purpose: it is the records themselves.
The summary shows counts (by kind and subkind), authors (what `prepare --me` takes) and dates only.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from twinbot.data.chat_order import time_key
from twinbot.data.records import MESSAGE_KINDS, Message
from twinbot.data.sources import (
    DateOrder,
    DateOrderNote,
    ParseOptions,
    detect_format,
    format_module,
    parse_path,
)
from twinbot.errors import TwinbotError

TOP_AUTHORS = 10
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(slots=True)
class FileSummary:
    """What one export holds, without any message text."""

    path: Path
    format: str
    detected: bool
    messages: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    subkinds: Counter[str] = field(default_factory=Counter)  # non-text messages by subkind
    authors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (author_id, author) -> messages
    chats: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    date_notes: list[DateOrderNote] = field(default_factory=list)  # WhatsApp: how dates were read

    def add(self, message: Message) -> None:
        self.messages += 1
        self.kinds[message.kind] += 1
        if message.subkind is not None:
            self.subkinds[message.subkind] += 1
        self.authors[(message.author_id, message.author)] += 1
        self.chats.add(message.chat_id)
        key = time_key(message.timestamp)
        if self.first is None or key < time_key(self.first):
            self.first = message.timestamp
        if self.last is None or key > time_key(self.last):
            self.last = message.timestamp


def run_parse(
    paths: Sequence[Path],
    fmt: str | None,
    jsonl: bool,
    dayfirst: bool | None,
    date_order: DateOrder | None = None,
) -> None:
    """Parse every path (format detected per path unless `fmt` is given); errors are TwinbotError."""
    if not paths:
        raise TwinbotError("no export given; pass one or more files or folders")
    if fmt is not None:
        format_module(fmt)  # an unknown --format fails before any reading
    options = ParseOptions(dayfirst=dayfirst, date_order=date_order)
    if jsonl:
        write_jsonl_records((m for path in paths for m in parse_path(Path(path), fmt, options)), sys.stdout)
        return
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    for path in paths:
        summary = summarize(Path(path), fmt, options)
        print_summary(console, summary)


def summarize(path: Path, fmt: str | None, options: ParseOptions) -> FileSummary:
    name = fmt or detect_format(path)
    summary = FileSummary(path=path, format=name, detected=fmt is None)
    notes_before = len(options.date_notes)
    for message in parse_path(path, name, options):
        summary.add(message)
    summary.date_notes = options.date_notes[notes_before:]
    return summary


def write_jsonl_records(messages: Iterable[Message], out: IO[str]) -> int:
    """One `Message.to_json()` per line, UTF-8 whatever the console's code page; returns the count."""
    binary = getattr(out, "buffer", None)
    out.flush()
    count = 0
    batch: list[str] = []
    for message in messages:
        batch.append(json.dumps(message.to_json(), ensure_ascii=False))
        count += 1
        if len(batch) >= 1000:
            _write_lines(batch, out, binary)
            batch.clear()
    _write_lines(batch, out, binary)
    if binary is not None:
        binary.flush()
    else:
        out.flush()
    return count


def _write_lines(lines: list[str], out: IO[str], binary: IO[bytes] | None) -> None:
    if not lines:
        return
    chunk = "\n".join(lines) + "\n"
    if binary is None:
        out.write(chunk)
        return
    try:
        data = chunk.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\ud800"-style escapes: keep them escaped
        data = "".join(_ascii_line(line) for line in lines).encode("utf-8")
    binary.write(data)


def _ascii_line(line: str) -> str:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(json.loads(line), ensure_ascii=True) + "\n"
    return line + "\n"


def print_summary(console: Console, summary: FileSummary) -> None:
    how = "detected" if summary.detected else "given"
    title = Text.assemble((_clean(str(summary.path)), "bold"), f"  format: {summary.format} ({how})")
    console.print(title)
    if summary.messages == 0:
        console.print("  no messages")
        console.print()
        return

    overview = Table(show_header=False, box=None, padding=(0, 2))
    overview.add_column(style="dim")
    overview.add_column()
    overview.add_row("messages", f"{summary.messages:,}")
    overview.add_row("chats", f"{len(summary.chats):,}")
    kinds = ", ".join(f"{kind} {summary.kinds[kind]:,}" for kind in MESSAGE_KINDS if summary.kinds[kind])
    overview.add_row("by kind", kinds)
    if summary.subkinds:
        subkinds = ", ".join(f"{name} {n:,}" for name, n in summary.subkinds.most_common())
        overview.add_row("by subkind", subkinds)
    overview.add_row("first", _when(summary.first))
    overview.add_row("last", _when(summary.last))
    for note in summary.date_notes:
        where = f" ({_clean(note.chat_id)})" if len(summary.date_notes) > 1 else ""
        overview.add_row(f"date order{where}", note.describe())
    console.print(overview)

    authors = Table(title=None, box=None, padding=(0, 2), show_edge=False)
    authors.add_column("author")
    authors.add_column("author id", style="dim")
    authors.add_column("messages", justify="right")
    for (author_id, author), count in summary.authors.most_common(TOP_AUTHORS):
        if not author and not author_id:  # the chat's own notices (a WhatsApp group line, a Telegram service)
            authors.add_row(Text("(no author: notices)", style="dim"), Text(""), f"{count:,}")
            continue
        authors.add_row(Text(_clean(author)), Text(_clean(author_id)), f"{count:,}")
    others = len(summary.authors) - TOP_AUTHORS
    if others > 0:
        rest = summary.messages - sum(c for _, c in summary.authors.most_common(TOP_AUTHORS))
        authors.add_row(Text(f"... {others:,} more authors"), Text(""), f"{rest:,}")
    console.print(authors)
    console.print()


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.isoformat(sep=" ", timespec="seconds")


def _clean(value: str) -> str:
    """Names come from the export file: no terminal control sequences or line breaks reach the terminal."""
    return _CONTROL_CHARS.sub(" ", value)
