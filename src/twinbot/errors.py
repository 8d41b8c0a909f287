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
