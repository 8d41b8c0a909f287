"""File helpers shared by every stage: atomic, user-only outputs; tolerant text inputs."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from twinbot.errors import TwinbotError

USER_ONLY_FILE = 0o600
USER_ONLY_DIR = 0o700

# In every output folder of prepare and export: --overwrite replaces a folder only when it carries this
# file, so a mistyped --out (a home or documents folder) is never deleted.
OUTPUT_MARKER = ".twinbot-output"


def on_windows() -> bool:
    return os.name == "nt"


def cache_dir() -> Path:
    """`$TWINBOT_CACHE`, else `~/.cache/twinbot` (`%LOCALAPPDATA%/twinbot` on Windows)."""
    override = os.environ.get("TWINBOT_CACHE")
    if override:
        return Path(override).expanduser()
    if on_windows():
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "twinbot"
    return Path.home() / ".cache" / "twinbot"


def keyed_digest(purpose: str, *parts: str, length: int = 16) -> str:
    """An opaque id for `parts`: HMAC-SHA256 under this user's secret key for `purpose`.

    Chat ids and author ids can be phone numbers, which a plain hash does not hide (there are few enough
    to try them all); without the key, which stays in the user's cache folder, no guess can be tested.
    The same machine gives the same ids for the same input, so outputs stay reproducible.
    """
    message = "\0".join(parts).encode("utf-8", errors="surrogatepass")
    return hmac.new(_secret_key(purpose), message, hashlib.sha256).hexdigest()[:length]


_KEYS: dict[tuple[Path, str], bytes] = {}


def _secret_key(purpose: str) -> bytes:
    path = cache_dir() / "keys" / f"{purpose}.key"
    key = _KEYS.get((path, purpose))
    if key is None:
        key = _KEYS[(path, purpose)] = _read_or_create_key(path)
    return key


def _read_or_create_key(path: Path) -> bytes:
    for _ in range(3):
        try:
            key = path.read_bytes()
            if len(key) == 32:
                return key
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TwinbotError(
                f"cannot read the key file ({exc.strerror}); check its permissions", path
            ) from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        make_user_only(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
            make_user_only(tmp)
            try:  # link, not rename: when two processes race, the first key stays and both use it
                os.link(tmp, path)
            except FileExistsError:
                continue
            except OSError:
                os.replace(tmp, path)  # a file system without hard links
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def make_user_only(path: Path) -> None:
    """chmod to user-only (a no-op on Windows, where files inherit the profile's ACLs)."""
    with contextlib.suppress(OSError):
        path.chmod(USER_ONLY_DIR if path.is_dir() else USER_ONLY_FILE)


def check_output_dir(final: Path, overwrite: bool) -> None:
    """Raises unless `final` is absent or empty, or (with `overwrite`) an output folder of twinbot's."""
    if not final.exists():
        return
    if not final.is_dir():
        raise TwinbotError("output path is a file; pass a folder", final)
    if not any(final.iterdir()):
        return
    if not overwrite:
        raise TwinbotError("output folder exists and is not empty; pass --overwrite or pick another", final)
    if not (final / OUTPUT_MARKER).is_file():
        raise TwinbotError(
            f"output folder exists and twinbot did not write it (no {OUTPUT_MARKER}); --overwrite replaces "
            "only twinbot's own output folders: pick another",
            final,
        )


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False, marked: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final`, on error it is removed.

    `marked`: a user-facing output folder: it gets OUTPUT_MARKER, and replaces an existing folder only when
    that one has it too (check_output_dir). Unmarked folders are twinbot's internal ones (checkpoints).
    """
    final = Path(final)
    if marked or not overwrite:  # internal folders with `overwrite` are replaced unchecked
        check_output_dir(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    make_user_only(tmp)
    try:
        if marked:
            (tmp / OUTPUT_MARKER).write_text("written by twinbot; `--overwrite` may replace this folder\n")
        yield tmp
        for p in tmp.rglob("*"):
            make_user_only(p)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            try:
                tmp.rename(final)
            except BaseException:
                old.rename(final)  # the previous folder stays where it was
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp file path beside `final` (ending in `suffix`, for writers and readers that go by the
    extension); on success it is made user-only and renamed over `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        make_user_only(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(final: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file beside `final` for writing; it is renamed over `final` only on success."""
    with (
        atomic_path(final) as tmp,
        open(tmp, mode, encoding=None if "b" in mode else encoding, newline=None) as fh,
    ):
        yield fh


def write_json(path: Path, data: Any) -> None:
    with atomic_file(path) as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line is a TwinbotError naming it."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise TwinbotError(
            f"cannot read file ({exc.strerror}); check the path and permissions", path
        ) from exc
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise TwinbotError("not UTF-8 text; re-save the file as UTF-8", path, lineno) from exc
            except json.JSONDecodeError as exc:
                raise TwinbotError(f"not valid JSON ({exc.msg})", path, lineno) from exc
            if not isinstance(obj, dict):
                raise TwinbotError("expected a JSON object on each line", path, lineno)
            yield lineno, obj
