"""`twinbot runs [DIR]`: the training runs in a folder, one row each: how each stands and what it gave.

A row comes from RUN/status.json (`twinbot.finetune.status`); a run recorded as running is running only
while its process is alive on this machine, else it was interrupted (killed, or the machine went down)
without writing its end state. Runs trained before status.json existed are read from summary.json (a
finished run) or their last checkpoint's state.json (an interrupted one). The style distance is the one
`twinbot eval` measured (RUN/eval/eval.json), when it ran.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twinbot.errors import TwinbotError
from twinbot.finetune.status import RunState, RunStatus, duration_text, read_status
from twinbot.runs import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    CHECKPOINT_STATE,
    EVAL_DIR,
    EVAL_FILE,
    RUN_MARKER,
    STATUS_FILE,
    SUMMARY_FILE,
    adapter_base_model,
    latest_checkpoint,
    read_json,
)

# A process created this long after the run's recorded start is another one that got the pid.
_PID_REUSE_SLACK_SECONDS = 5.0
_STATE_STYLES = {"running": "cyan", "finished": "green", "failed": "red", "interrupted": "yellow"}


@dataclass
class RunRow:
    name: str
    path: str
    status: RunState
    preset: str | None
    base_model: str | None
    step: int | None
    total_steps: int | None
    tokens_seen: int | None
    total_tokens: int | None
    started: str | None  # UTC ISO 8601
    wall_seconds: float | None  # training time so far
    eta_seconds: float | None  # a running run's time left, from its tokens per second so far
    eval_loss: float | None
    style_distance: float | None  # from `twinbot eval`
    error: str | None
    recorded_in: str  # status.json | summary.json | checkpoint | folder


def run_runs(folder: Path, as_json: bool = False) -> list[RunRow]:
    """Print the table (or JSON) of the runs in `folder`."""
    rows = list_runs(folder)
    if as_json:
        print(json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False))
    elif not rows:
        print(
            f"no runs in {folder} (a run folder holds {STATUS_FILE}, {SUMMARY_FILE}, checkpoints or an adapter)"
        )
    else:
        from rich.console import Console

        console = Console()
        console.print(render_table(rows))
        for line in error_lines(rows):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    return rows


def list_runs(folder: Path) -> list[RunRow]:
    """`folder` itself when it is a run, else the runs directly inside it; the newest first."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TwinbotError("no such folder; pass the folder your runs are in: twinbot runs DIR", folder)
    paths = [folder] if is_run(folder) else [p for p in sorted(folder.iterdir()) if p.is_dir() and is_run(p)]
    rows = [read_row(path) for path in paths]
    return sorted(rows, key=lambda row: row.started or "", reverse=True)


def is_run(path: Path) -> bool:
    return (
        (path / STATUS_FILE).is_file()
        or (path / SUMMARY_FILE).is_file()
        or (path / RUN_MARKER).is_file()
        or (path / ADAPTER_DIR / ADAPTER_CONFIG).is_file()
        or latest_checkpoint(path) is not None
    )


def read_row(path: Path) -> RunRow:
    status = read_status(path)
    row = row_from_status(path, status) if status is not None else row_from_files(path)
    evaluated = read_json(path / EVAL_DIR / EVAL_FILE) or {}
    distance = _number(_dig(evaluated, "adapter", "style_distance", "score"))
    if distance is not None:
        row.style_distance = distance
    if row.eval_loss is None:
        row.eval_loss = _number(_dig(evaluated, "adapter", "eval_loss"))
    return row


def row_from_status(path: Path, status: RunStatus) -> RunRow:
    state = status.state
    if state == "running" and not process_alive(status):
        state = "interrupted"
    return RunRow(
        name=path.name,
        path=str(path),
        status=state,
        preset=status.preset,
        base_model=status.base_model,
        step=status.step,
        total_steps=status.total_steps,
        tokens_seen=status.tokens_seen,
        total_tokens=status.total_tokens,
        started=status.started,
        wall_seconds=status.wall_seconds,
        eta_seconds=eta_seconds(status) if state == "running" else None,
        eval_loss=status.eval_loss,
        style_distance=status.style_distance,
        error=status.error if state == "failed" else None,
        recorded_in=STATUS_FILE,
    )


def row_from_files(path: Path) -> RunRow:
    """A run from before status.json: finished when it has summary.json, else interrupted."""
    marker = read_json(path / RUN_MARKER) or {}
    started = _mtime_iso(path / RUN_MARKER)  # run.json is written when training begins
    base_model = _text(marker.get("base_model")) or adapter_base_model(path / ADAPTER_DIR)
    summary = read_json(path / SUMMARY_FILE)
    if summary is not None:
        config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
        steps = _int(summary.get("steps"))
        return RunRow(
            name=path.name,
            path=str(path),
            status="finished",
            preset=_text(config.get("preset")),
            base_model=_text(summary.get("base_model")) or base_model,
            step=steps,
            total_steps=steps,
            tokens_seen=_int(summary.get("tokens_seen")),
            total_tokens=_int(summary.get("tokens_seen")),
            started=started,
            wall_seconds=_number(summary.get("wall_seconds")),
            eta_seconds=None,
            eval_loss=_number(summary.get("final_eval_loss")),
            style_distance=None,
            error=None,
            recorded_in=SUMMARY_FILE,
        )
    checkpoint = latest_checkpoint(path)
    state = (read_json(checkpoint / CHECKPOINT_STATE) if checkpoint is not None else None) or {}
    fingerprint = state.get("fingerprint") if isinstance(state.get("fingerprint"), dict) else {}
    return RunRow(
        name=path.name,
        path=str(path),
        status="interrupted",
        preset=None,  # not in a checkpoint (a preset only sets other settings)
        base_model=_text(fingerprint.get("base_model")) or base_model,
        step=_int(state.get("step")),
        total_steps=None,
        tokens_seen=_int(state.get("tokens_seen")),
        total_tokens=None,
        started=started,
        wall_seconds=_number(state.get("elapsed_seconds")),
        eta_seconds=None,
        eval_loss=_number(state.get("eval_loss")),
        style_distance=None,
        error=None,
        recorded_in="checkpoint" if checkpoint is not None else "folder",
    )


def process_alive(status: RunStatus) -> bool:
    """Whether the process that recorded `status` still runs: on this machine, with that pid, started
    no later than the run (a newer process has only reused the pid)."""
    import psutil

    if status.hostname != socket.gethostname():
        return False
    try:
        process = psutil.Process(status.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.Error:
        return False
    started = _timestamp(status.started)
    return started is None or created <= started + _PID_REUSE_SLACK_SECONDS


def eta_seconds(status: RunStatus, now: float | None = None) -> float | None:
    """Time left at the tokens per second so far, counted from the record's last update."""
    if not status.total_tokens or status.tokens_seen <= 0 or status.wall_seconds <= 0:
        return None
    rate = status.tokens_seen / status.wall_seconds
    left_then = max(0, status.total_tokens - status.tokens_seen) / rate
    updated = _timestamp(status.updated)
    since = max(0.0, (time.time() if now is None else now) - updated) if updated is not None else 0.0
    return round(max(0.0, left_then - since), 1)


def render_table(rows: list[RunRow]) -> Any:
    """The rows as a rich table (the errors of failed runs are `error_lines`, printed below it)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    table.add_column("run", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("preset / model", overflow="fold")
    table.add_column("steps / tokens", justify="right", overflow="fold")
    table.add_column("started", overflow="fold")
    table.add_column("time", justify="right", overflow="fold")
    table.add_column("eval loss", justify="right")
    table.add_column("style", justify="right")
    for row in rows:
        table.add_row(
            Text(row.name),
            Text(row.status, style=_STATE_STYLES.get(row.status, "")),
            Text(f"{row.preset or '?'}\n{_model_text(row.base_model)}"),
            Text(_progress_text(row)),
            Text(_local_time(row.started)),
            Text(_time_text(row)),
            Text("-" if row.eval_loss is None else f"{row.eval_loss:.3f}"),
            Text("-" if row.style_distance is None else f"{row.style_distance:.3f}"),
        )
    return table


def error_lines(rows: list[RunRow]) -> list[str]:
    return [f"{row.name} failed: {row.error}" for row in rows if row.error]


def _model_text(base_model: str | None) -> str:
    """A hub id as it is; a local folder or file by its name."""
    if not base_model:
        return "?"
    path = Path(base_model)
    return path.name if path.is_absolute() or path.suffix == ".gguf" else base_model


def _progress_text(row: RunRow) -> str:
    if row.step is None:
        return "-"
    total = f"/{row.total_steps:,}" if row.total_steps is not None else ""
    tokens = f"\n{_count(row.tokens_seen)} tok" if row.tokens_seen else ""
    return f"{row.step:,}{total}{tokens}"


def _time_text(row: RunRow) -> str:
    spent = "-" if row.wall_seconds is None else duration_text(row.wall_seconds)
    if row.status == "running":
        left = "?" if row.eta_seconds is None else duration_text(row.eta_seconds)
        return f"{spent}\n{left} left"
    return spent


def _count(value: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.1f}{suffix}"
    return str(value)


def _local_time(iso: str | None) -> str:
    stamp = _timestamp(iso)
    return "-" if stamp is None else datetime.fromtimestamp(stamp).strftime("%Y-%m-%d\n%H:%M")


def _timestamp(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _mtime_iso(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except OSError:
        return None


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
