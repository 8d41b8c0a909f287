"""Helpers shared by the source parsers: reading text, folders and .zip archives, timestamps, chat order,
and pausing the garbage collector while millions of records are built (`prepare` uses that too).

Everything here raises `TwinbotError` (naming the file) for problems the user can fix, except the
timestamp helpers, which raise `ValueError` so the caller can add the file and line.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TextIO

from twinbot.data.chat_order import UNIX_EPOCH, sort_chat
from twinbot.data.records import Message
from twinbot.errors import TwinbotError

UTF8_BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 8192

_FOLDER_SNIFF_FILES = 20  # how many files of a folder detection looks at
_DAMAGED_ZIP = "not a readable .zip archive (damaged, incomplete or unsupported); download it again"

# What one archive may unpack to, in MB (environment variables raise them): a zip bomb (kilobytes that
# inflate to gigabytes) ends in an error instead of exhausting the memory. Real chat exports stay far below.
ZIP_MEMBER_MB = ("TWINBOT_ZIP_MEMBER_MB", 2048)
ZIP_TOTAL_MB = ("TWINBOT_ZIP_TOTAL_MB", 8192)
_READ_CHUNK = 1 << 20


def _megabytes(setting: tuple[str, int]) -> int:
    name, default = setting
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise TwinbotError(f"{name}={text!r} is not a whole number of megabytes; set it to e.g. {default}")
    return int(text)


# --- text -----------------------------------------------------------------------------------------


def read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first `size` bytes of a regular file, UTF-8 BOM removed; b"" for anything that is not a file.

    For `sniff()`: OSError (unreadable file) propagates so detection can report it.
    """
    path = Path(path)
    if not path.is_file():
        return b""
    with path.open("rb") as fh:
        data = fh.read(size)
    return data.removeprefix(UTF8_BOM)


def head_text(path: Path, size: int = SNIFF_BYTES) -> str:
    """`read_head` decoded leniently (a character cut at the end is dropped), newlines normalized to \\n.

    Returns "" when the head is not UTF-8 text or contains NUL bytes (binary files).
    """
    data = read_head(path, size)
    if b"\x00" in data:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 3:  # not just a character cut by the size limit
            return ""
        text = data[: exc.start].decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n")


@contextlib.contextmanager
def _opening(path: Path) -> Iterator[None]:
    """Turn the OSError of opening `path` into a TwinbotError naming it."""
    try:
        yield
    except IsADirectoryError as exc:
        raise TwinbotError("expected a file but this is a folder", path) from exc
    except OSError as exc:
        raise TwinbotError(
            f"cannot read file ({exc.strerror}); check the path and permissions", path
        ) from exc


def open_text(path: Path, newline: str | None = None) -> TextIO:
    """Open a UTF-8 text file for reading (BOM skipped). `newline=""` for the csv module.

    Decoding errors surface as UnicodeDecodeError while reading; callers turn them into TwinbotError.
    """
    with _opening(path):
        return Path(path).open(encoding="utf-8-sig", newline=newline)


def open_binary(path: Path) -> BinaryIO:
    """Open a file for binary reading with a TwinbotError for unreadable paths; a leading BOM is skipped."""
    with _opening(path):
        fh = Path(path).open("rb")
    skip_bom(fh)
    return fh


def skip_bom(fh: BinaryIO) -> None:
    """Advance a seekable binary stream past a UTF-8 BOM if it starts with one."""
    start = fh.tell()
    if fh.read(3) != UTF8_BOM:
        fh.seek(start)


def decode_text(data: bytes, path: Path | str) -> str:
    """Strict UTF-8 decode (BOM removed, CRLF/CR -> LF); a TwinbotError naming `path` when undecodable."""
    try:
        text = data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TwinbotError(
            "not UTF-8 text; export the chat again or convert the file to UTF-8", path, line
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- folders and .zip archives --------------------------------------------------------------------


def files_under(folder: Path, suffix: str) -> list[Path]:
    """The regular files below `folder` (any depth) whose name ends in `suffix` (any case), sorted."""
    try:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() == suffix and p.is_file())
    except OSError as exc:
        raise TwinbotError(f"cannot list folder ({exc.strerror}); check the permissions", folder) from exc


def sniff_folder(folder: Path, suffix: str, sniff_file: Callable[[Path], bool]) -> bool:
    """Whether one of the first few `suffix` files below `folder` passes `sniff_file`."""
    return any(sniff_file(p) for p in files_under(folder, suffix)[:_FOLDER_SNIFF_FILES])


def export_files(
    path: Path, suffix: str, none_found: str, accept: Callable[[Path], bool] | None = None
) -> list[Path]:
    """`path` itself, or the `suffix` files below the folder `path` that `accept` takes (all by default);
    a TwinbotError saying `none_found` when the folder holds none."""
    if not path.is_dir():
        return [path]
    files = [p for p in files_under(path, suffix) if accept is None or accept(p)]
    if not files:
        raise TwinbotError(none_found, path)
    return files


def is_zip(path: Path) -> bool:
    """Cheap content check: a regular file that starts like a zip archive."""
    head = read_head(path, 4)
    return head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06")


def check_zip_member(size: int, unpacked_before: int, where: Path) -> None:
    """Raises when a member of `size` bytes, after `unpacked_before` bytes of the same archive, passes the
    ZIP_MEMBER_MB or ZIP_TOTAL_MB cap."""
    member_limit = _megabytes(ZIP_MEMBER_MB) << 20
    total_limit = _megabytes(ZIP_TOTAL_MB) << 20
    if size > member_limit:
        raise TwinbotError(
            f"this archive member unpacks to more than {member_limit >> 20:,} MB (a zip bomb?); unpack "
            f"the archive and pass the folder, or raise {ZIP_MEMBER_MB[0]}",
            where,
        )
    if unpacked_before + size > total_limit:
        raise TwinbotError(
            f"the archive unpacks to more than {total_limit >> 20:,} MB (a zip bomb?); unpack it and "
            f"pass the folder, or raise {ZIP_TOTAL_MB[0]}",
            where,
        )


class ExportTree:
    """A folder or a .zip archive seen the same way: relative POSIX member names and their bytes.

    Use as a context manager. `names` lists regular files only (macOS `__MACOSX/` junk skipped).
    Error messages name `display(name)`, i.e. `archive.zip/inner/path` or the real file path.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._zip: zipfile.ZipFile | None = None
        self._unpacked = 0  # bytes read from the archive so far
        if self.root.is_dir():
            try:
                self.names = sorted(
                    p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
                )
            except OSError as exc:
                raise TwinbotError(
                    f"cannot list folder ({exc.strerror}); check the permissions", root
                ) from exc
            return
        try:
            self._zip = zipfile.ZipFile(self.root)
            infos = self._zip.infolist()
        except OSError as exc:
            if exc.filename is not None:  # opening failed (otherwise: a seek or read inside damaged data)
                raise TwinbotError(
                    f"cannot read file ({exc.strerror}); check the path and permissions", root
                ) from exc
            raise TwinbotError(_DAMAGED_ZIP, root) from exc
        except Exception as exc:  # zipfile raises many types on damaged archives (BadZipFile, struct.error)
            raise TwinbotError(_DAMAGED_ZIP, root) from exc
        self.names = sorted(
            info.filename for info in infos if not info.is_dir() and not info.filename.startswith("__MACOSX/")
        )

    def __enter__(self) -> ExportTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def display(self, name: str) -> Path:
        return self.root / PurePosixPath(name)

    def open_binary(self, name: str) -> BinaryIO:
        """A readable binary stream of one member (seekable for folders; zip members are read whole)."""
        if self._zip is None:
            return open_binary(self.display(name))
        return io.BytesIO(self.read_bytes(name).removeprefix(UTF8_BOM))

    def read_bytes(self, name: str) -> bytes:
        if self._zip is None:
            try:
                return self.display(name).read_bytes()
            except OSError as exc:
                raise TwinbotError(
                    f"cannot read ({exc.strerror}); check the permissions", self.display(name)
                ) from exc
        try:
            return self._read_member(name)
        except TwinbotError:
            raise
        except NotImplementedError as exc:
            raise TwinbotError(
                "cannot extract this file (unsupported compression); unpack the archive and pass the folder",
                self.display(name),
            ) from exc
        except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
            raise TwinbotError(
                "cannot extract this file (the archive is password-protected); unpack it and pass the folder",
                self.display(name),
            ) from exc
        except (
            Exception
        ) as exc:  # damaged data: BadZipFile, zlib.error, EOFError, OSError from a bad seek, ...
            raise TwinbotError(
                "cannot extract this file from the archive (damaged); download it again", self.display(name)
            ) from exc

    def read_head(self, name: str, size: int = SNIFF_BYTES) -> bytes:
        """The first `size` bytes of a member (for sniffing: the rest is not read), BOM removed."""
        if self._zip is None:
            return read_head(self.display(name), size)
        try:
            with self._zip.open(name) as member:
                return member.read(size).removeprefix(UTF8_BOM)
        except Exception as exc:  # damaged, encrypted or unsupported: reading it whole says which
            raise TwinbotError(
                "cannot extract this file from the archive (damaged, encrypted or unsupported compression)",
                self.display(name),
            ) from exc

    def _read_member(self, name: str) -> bytes:
        """A zip member, read in chunks within the ZIP_MEMBER_MB and ZIP_TOTAL_MB caps."""
        assert self._zip is not None
        where = self.display(name)
        # zipfile stops reading a member at its declared size, so a declared size within the caps bounds
        # the read; the count below also covers data that does not keep to its declared size
        check_zip_member(self._zip.getinfo(name).file_size, self._unpacked, where)
        size = 0
        chunks: list[bytes] = []
        with self._zip.open(name) as member:
            while chunk := member.read(_READ_CHUNK):
                size += len(chunk)
                check_zip_member(size, self._unpacked, where)
                chunks.append(chunk)
        self._unpacked += size
        return b"".join(chunks)

    def read_text(self, name: str) -> str:
        """A member as text: UTF-8 (BOM removed), newlines normalized; TwinbotError when undecodable."""
        return decode_text(self.read_bytes(name), self.display(name))


# --- timestamps -----------------------------------------------------------------------------------

_LONG_FRACTION = re.compile(r"([.,]\d{6})\d+")


def parse_iso_datetime(text: str) -> datetime:
    """ISO 8601 date-time: `T` or space separator, 0-9 fractional digits, `Z` or an offset, or no zone.

    Aware when the text has a zone, naive otherwise. ValueError when it is not a date-time.
    """
    try:
        return datetime.fromisoformat(text)
    except (ValueError, TypeError):
        pass
    if not isinstance(text, str):
        raise ValueError("timestamp is not a string")
    cleaned = _LONG_FRACTION.sub(r"\1", text.strip())
    if cleaned.endswith(("z", "Z")):
        cleaned = cleaned[:-1] + "+00:00"
    return datetime.fromisoformat(cleaned)


_UNIX_MIN = -62135596800  # 0001-01-01
_UNIX_MAX = 253402300799  # 9999-12-31T23:59:59


def from_unix_seconds(value: float | int | str) -> datetime:
    """Seconds since 1970-01-01 UTC (int, float or numeric string) -> aware UTC datetime, else ValueError."""
    if isinstance(value, bool):
        raise ValueError("not a number of seconds")
    seconds = float(value)
    if not (_UNIX_MIN <= seconds <= _UNIX_MAX):  # also rejects nan
        raise ValueError("unix time out of range")
    return UNIX_EPOCH + timedelta(seconds=seconds)


def fill_missing_times(times: Iterable[datetime | None]) -> list[datetime]:
    """`times` with each missing one (None) borrowed from the message before, so every message keeps its
    place: a chat's leading messages borrow its first known time, the Unix epoch when none is known."""
    times = list(times)
    previous = next((time for time in times if time is not None), UNIX_EPOCH)
    filled: list[datetime] = []
    for time in times:
        if time is not None:
            previous = time
        filled.append(previous)
    return filled


# --- chat order and memory -----------------------------------------------------------------------


@contextlib.contextmanager
def gc_paused(*, freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of records.

    With that many live objects every collection walks the whole heap again (it doubled `prepare`'s run
    time); nothing built here forms reference cycles, so reference counting still frees what is dropped.
    `freeze=True` moves the survivors out of the collector's generations on the way out: re-enabling the
    collector would otherwise walk all of them once more. Do not yield records to the caller inside this
    block.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


def in_chat_order(messages: Iterable[Message]) -> Iterator[Message]:
    """All of `messages` grouped by chat (chats in order of first appearance), each chat in time order.

    Time order needs whole chats, so everything is read (with the collector paused) before the first yield.
    """
    chats: dict[str, list[Message]] = {}
    with gc_paused():
        for message in messages:
            chats.setdefault(message.chat_id, []).append(message)
    for chat in chats.values():
        yield from sort_chat(chat)
