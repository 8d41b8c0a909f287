"""The one error type users see: printed as a single `error: ...` line, exit code 2."""

from __future__ import annotations

from pathlib import Path


class TwinbotError(Exception):
    """A problem the user can fix. `str()` is the whole one-line message (without the `error: ` prefix)."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}{self.message}"


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library exception as one short line for a TwinbotError message: its first line, without a
    trailing period, cut at `limit` characters (the type name when the message is empty)."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0].strip().rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."
