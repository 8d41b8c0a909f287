"""Generic CSV: the same schema as the generic JSON Lines format, one message per row, a header row first.

Columns by name (any order, any case): `timestamp`, `author`, `text` required; `chat`, `id`, `author_id`,
`reply_to`, `kind`, `attachments`, `is_bot` optional (an empty cell means "not given"). The delimiter is
a comma, a semicolon or a tab, taken from the header. Values may span lines when quoted.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.common import head_text, in_chat_order, open_text
from twinbot.data.sources.generic_jsonl import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    SCHEMA_HINT,
    input_files,
    message_from_record,
)
from twinbot.errors import TwinbotError

NAME = "csv"
_DELIMITERS = (",", ";", "\t")


def sniff(path: Path) -> bool:
    head = head_text(Path(path), 4096)
    if "\n" not in head:
        return False
    return _header_delimiter(head.split("\n", 1)[0]) is not None


def _header_delimiter(line: str) -> str | None:
    for delimiter in _DELIMITERS:
        try:
            header = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error:
            return None
        names = {name.strip().lower() for name in header}
        if all(field in names for field in REQUIRED_FIELDS):
            return delimiter
    return None


def parse(path: Path, options: ParseOptions) -> Iterator[Message]:
    yield from in_chat_order(
        message for file in input_files(Path(path), ".csv") for message in _parse_file(file)
    )


def _parse_file(path: Path) -> Iterator[Message]:
    default_chat = path.stem
    with open_text(path, newline="") as fh:
        reader = None
        try:
            first_line = fh.readline()
            if not first_line.strip():
                raise TwinbotError(f"the file is empty or has no header row; {SCHEMA_HINT}", path, 1)
            delimiter = _header_delimiter(first_line.rstrip("\r\n"))
            if delimiter is None:
                raise TwinbotError(
                    f"the header row must name the columns timestamp, author and text; {SCHEMA_HINT}", path, 1
                )
            columns = [name.strip().lower() for name in next(csv.reader([first_line], delimiter=delimiter))]
            known = set(REQUIRED_FIELDS) | set(OPTIONAL_FIELDS)
            wanted = [(i, name) for i, name in enumerate(columns) if name in known]
            reader = csv.reader(fh, delimiter=delimiter)
            row_number = 0
            for row in reader:
                line = reader.line_num + 1  # the header line was read before the reader started counting
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                row_number += 1
                if len(row) > len(columns):
                    raise TwinbotError(
                        f"row has {len(row)} columns but the header names {len(columns)} "
                        "(a value with the delimiter in it must be quoted)",
                        path,
                        line,
                    )
                record = {name: row[i] for i, name in wanted if i < len(row) and row[i] != ""}
                if "\r" in record.get("text", ""):
                    record["text"] = record["text"].replace("\r\n", "\n").replace("\r", "\n")
                for name in ("text", "author", "timestamp"):
                    if name not in record and columns.index(name) < len(row):
                        record[name] = ""  # present but empty: let the record check say what is wrong
                yield message_from_record(record, NAME, default_chat, str(row_number), path, line)
        except csv.Error as exc:
            line = reader.line_num + 1 if reader is not None else 1
            raise TwinbotError(f"malformed CSV ({exc}); check the quoting", path, line) from exc
        except UnicodeDecodeError as exc:
            line = reader.line_num + 2 if reader is not None else 1  # the line being read
            raise TwinbotError("not UTF-8 text; save the file as UTF-8", path, line) from exc
