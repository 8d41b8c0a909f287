"""RUN/status.json: where a run stands, kept current while it trains, for `twinbot runs` and notifications.

The process that owns the run (the one `twinbot train` started; the parent when several processes train)
makes the `RunStatus` record when it starts. The file is first written when training begins (once RUN
itself is written: bad input leaves RUN untouched), updated at evaluations and checkpoints by the main
training process, and given its end state (finished, failed, interrupted) by the owner on every way out.
A run whose process died without writing its end state still says "running": `twinbot runs` checks
whether the recorded process is alive.

Numbers and one-line errors only: no message text, and no notification address (those are secrets).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from twinbot import console
from twinbot.errors import TwinbotError
from twinbot.fileio import write_json
from twinbot.runs import STATUS_FILE, read_json

RunState = Literal["running", "finished", "failed", "interrupted"]
RUN_STATES: tuple[RunState, ...] = ("running", "finished", "failed", "interrupted")

# Progress rows come every LOG_EVERY steps; between evaluations and checkpoints the file is rewritten at
# most this often.
PROGRESS_WRITE_SECONDS = 30.0


@dataclass
class RunStatus:
    state: RunState
    pid: int  # the process that owns the run
    hostname: str
    started: str  # UTC ISO 8601: when this session of the run started (a resumed run is a new session)
    updated: str
    preset: str
    base_model: str  # as the user named it
    step: int = 0
    total_steps: int | None = None
    tokens_seen: int = 0
    total_tokens: int | None = None
    wall_seconds: float = 0.0  # training time of the whole run (every session)
    eval_loss: float | None = None  # the last evaluation's; the final one once finished
    style_distance: float | None = None  # measured by `twinbot eval`, after training
    error: str | None = None  # the one-line error of a failed run
    twinbot_status: int = 1

    def same_session(self, other: RunStatus) -> bool:
        return (self.pid, self.hostname, self.started) == (other.pid, other.hostname, other.started)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def duration_text(seconds: float) -> str:
    """6h 12m, 4m 05s, 12s."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def new_status(preset: str, base_model: str) -> RunStatus:
    """The record of a run this process starts now."""
    now = utc_now()
    return RunStatus(
        state="running",
        pid=os.getpid(),
        hostname=socket.gethostname(),
        started=now,
        updated=now,
        preset=preset,
        base_model=base_model,
    )


def read_status(run_dir: Path) -> RunStatus | None:
    """RUN/status.json, or None when missing or not a status record (unknown keys are ignored)."""
    data = read_json(Path(run_dir) / STATUS_FILE)
    if data is None or data.get("state") not in RUN_STATES:
        return None
    known = {f.name for f in fields(RunStatus)}
    try:
        return RunStatus(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return None


def write_status(run_dir: Path, status: RunStatus) -> bool:
    """Atomic and user-only. A failed write is one line, never an error: the run goes on without it."""
    try:
        write_json(Path(run_dir) / STATUS_FILE, asdict(status))
    except (OSError, TwinbotError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        console.say(f"warning: could not write {STATUS_FILE} ({reason}); training goes on")
        return False
    return True


class StatusFile:
    """The main training process's writer of RUN/status.json for the owner's `record`."""

    def __init__(self, run_dir: Path, record: RunStatus) -> None:
        self.run_dir = Path(run_dir)
        self.record = replace(record)
        self._written_at = -float("inf")

    def begin(
        self,
        *,
        step: int,
        total_steps: int,
        tokens_seen: int,
        total_tokens: int,
        wall_seconds: float,
        eval_loss: float | None,
    ) -> None:
        """Training begins (RUN is written): the first write of this session."""
        self.record.total_steps, self.record.total_tokens = total_steps, total_tokens
        self.progress(step, tokens_seen, wall_seconds, eval_loss, force=True)

    def progress(
        self, step: int, tokens_seen: int, wall_seconds: float, eval_loss: float | None, force: bool = False
    ) -> None:
        """The counters after `step`; written when `force`d (evaluations, checkpoints) or now and then."""
        self.record.step, self.record.tokens_seen = step, tokens_seen
        self.record.wall_seconds = round(wall_seconds, 3)
        self.record.eval_loss = eval_loss
        if force or time.monotonic() - self._written_at >= PROGRESS_WRITE_SECONDS:
            self.record.updated = utc_now()
            write_status(self.run_dir, self.record)
            self._written_at = time.monotonic()


def end_status(run_dir: Path | None, owner: RunStatus, state: RunState, error: str | None) -> RunStatus:
    """The owner's last word: `state` (and `error`) written into RUN/status.json when training began in
    this session, with the progress the training process recorded there. Returns the final record (the
    owner's own when training never began, which leaves RUN untouched)."""
    on_disk = read_status(run_dir) if run_dir is not None else None
    began = on_disk is not None and on_disk.same_session(owner)
    final = replace(on_disk if began and on_disk is not None else owner, state=state, error=error)
    final.updated = utc_now()
    if began and run_dir is not None:
        write_status(run_dir, final)
    return final
