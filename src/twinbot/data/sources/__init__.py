"""Stage 1: export files -> normalized `Message` records. One module per source format.

Each format module defines:
    NAME: str                                   # the --format name, e.g. "discord-json"
    def sniff(path: Path) -> bool               # cheap content check (reads at most a few KB)
    def parse(path: Path, options: ParseOptions) -> Iterator[Message]
Records come out in time order within each chat (stable for equal times).
Errors the user can fix are raised as TwinbotError(message, path, line).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

from twinbot.data.records import Message
from twinbot.errors import TwinbotError

# Order matters for detection: the more specific formats are sniffed first.
FORMAT_MODULES: dict[str, str] = {
    "discord-package": "twinbot.data.sources.discord_package",
    "slack": "twinbot.data.sources.slack",
    "discord-json": "twinbot.data.sources.discord_json",
    "discord-csv": "twinbot.data.sources.discord_csv",
    "telegram": "twinbot.data.sources.telegram",
    "messenger": "twinbot.data.sources.messenger",
    "instagram": "twinbot.data.sources.instagram",
    "imessage": "twinbot.data.sources.imessage",
    "signal": "twinbot.data.sources.signal",
    "whatsapp": "twinbot.data.sources.whatsapp",
    "jsonl": "twinbot.data.sources.generic_jsonl",
    "csv": "twinbot.data.sources.generic_csv",
}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMAT_MODULES)


DateOrder = Literal["dmy", "mdy", "ymd"]
DATE_ORDERS: tuple[DateOrder, ...] = ("dmy", "mdy", "ymd")
DATE_ORDER_NAMES: dict[str, str] = {"dmy": "day-first", "mdy": "month-first", "ymd": "year-first"}


@dataclass(frozen=True, slots=True)
class DateOrderNote:
    """How a parser read a file's numeric dates (WhatsApp), for `parse`'s summary and report.json."""

    path: Path
    chat_id: str
    order: DateOrder
    reason: str  # "14 of 312 dates have a first field > 12", "given with --date-order", ...
    guessed: bool  # no evidence in the file: the locale-typical default

    def describe(self) -> str:
        return f"{DATE_ORDER_NAMES[self.order]}{' (a guess)' if self.guessed else ''}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ParseOptions:
    dayfirst: bool | None = None  # the older --dayfirst/--monthfirst: an alias of date_order dmy/mdy
    date_order: DateOrder | None = None  # WhatsApp: None = infer from the whole file
    # parsers append how they read each file's dates here (the caller reads them after parsing)
    date_notes: list[DateOrderNote] = field(default_factory=list, compare=False, hash=False)

    def forced_date_order(self) -> DateOrder | None:
        if self.date_order is not None:
            return self.date_order
        if self.dayfirst is None:
            return None
        return "dmy" if self.dayfirst else "mdy"


def format_module(name: str) -> ModuleType:
    if name not in FORMAT_MODULES:
        raise TwinbotError(f"unknown format {name!r}; use one of: {', '.join(FORMAT_NAMES)}")
    return importlib.import_module(FORMAT_MODULES[name])


def detect_format(path: Path) -> str:
    """Name of the first format whose sniff() accepts `path`; a TwinbotError when none does."""
    path = Path(path)
    if not path.exists():
        raise TwinbotError("no such file or folder; check the path", path)
    for name in FORMAT_NAMES:
        try:
            if format_module(name).sniff(path):
                return name
        except OSError as exc:
            raise TwinbotError(f"cannot read ({exc.strerror}); check the permissions", path) from exc
    raise TwinbotError(
        f"not a chat export this tool recognises; pass --format with one of: {', '.join(FORMAT_NAMES)}", path
    )


def parse_path(path: Path, fmt: str | None = None, options: ParseOptions | None = None) -> Iterator[Message]:
    """Messages of one export file or folder, auto-detecting the format unless `fmt` is given."""
    path = Path(path)
    if not path.exists():
        raise TwinbotError("no such file or folder; check the path", path)
    name = fmt or detect_format(path)
    try:
        yield from format_module(name).parse(path, options or ParseOptions())
    except TwinbotError:
        raise
    except OSError as exc:
        raise TwinbotError(f"cannot read ({exc.strerror}); check the path and permissions", path) from exc
