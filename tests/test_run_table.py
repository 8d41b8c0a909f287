"""`twinbot runs [DIR]` (twinbot.finetune.run_table): run folders built by hand for each kind of run, and the
tiny run `twinbot train` really trained."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support.runs import TINY_RUN_STEPS, TrainedRun
from twinbot.cli import app
from twinbot.errors import TwinbotError
from twinbot.finetune.run_table import eta_seconds, list_runs
from twinbot.finetune.status import RunStatus, write_status

HOUR = 3600.0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _status(**changes: Any) -> RunStatus:
    now = datetime.now(UTC)
    record = RunStatus(
        state="running",
        pid=os.getpid(),
        hostname=socket.gethostname(),
        started=_iso(now),  # after this process started: it is the trainer of a running run
        updated=_iso(now),
        preset="fast",
        base_model="smollm2-135m-instruct",
        step=500,
        total_steps=1000,
        tokens_seen=1_000_000,
        total_tokens=2_000_000,
        wall_seconds=2 * HOUR,
        eval_loss=2.5,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """One run folder of each kind, as training (and `twinbot eval`) leave them."""
    root = tmp_path / "runs"
    now = datetime.now(UTC)
    # finished, and evaluated
    (root / "done").mkdir(parents=True)
    write_status(
        root / "done",
        _status(state="finished", step=1000, tokens_seen=2_000_000, started=_iso(now - timedelta(days=1))),
    )
    _write(
        root / "done" / "eval" / "eval.json",
        {"adapter": {"eval_loss": 2.4, "style_distance": {"score": 0.123}}},
    )
    # this process is its trainer: still running
    (root / "live").mkdir()
    write_status(root / "live", _status())
    # its process died without a word (killed, the machine went down)
    (root / "killed").mkdir()
    write_status(root / "killed", _status(pid=_dead_pid(), started=_iso(now - timedelta(hours=3))))
    # the recorded pid now belongs to a process that started after the run: only the pid was reused
    (root / "reused").mkdir()
    write_status(root / "reused", _status(started=_iso(now - timedelta(days=30))))
    # failed, with its one-line error
    (root / "broke").mkdir()
    error = "training diverged: loss or gradients were not finite for 3 steps in a row (up to step 40)"
    write_status(
        root / "broke", _status(state="failed", step=40, error=error, started=_iso(now - timedelta(hours=5)))
    )
    # trained before status.json existed: finished ...
    _write(root / "old-done" / "run.json", {"twinbot_run": 1, "base_model": "smollm2-135m-instruct"})
    summary = {"steps": 24, "tokens_seen": 5000, "wall_seconds": 95.5, "final_eval_loss": 3.1}
    _write(
        root / "old-done" / "summary.json",
        {**summary, "base_model": "smollm2-135m-instruct", "config": {"preset": "baseline"}},
    )
    # ... and stopped, with a checkpoint
    _write(root / "old-killed" / "run.json", {"twinbot_run": 1, "base_model": "HuggingFaceTB/SmolLM2-360M"})
    state = {"step": 3, "tokens_seen": 700, "elapsed_seconds": 12.0, "eval_loss": None, "fingerprint": {}}
    _write(root / "old-killed" / "checkpoints" / "step-0000003" / "state.json", state)
    # not runs
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("x")
    (root / "readme.txt").write_text("x")
    return root


def test_each_kind_of_run_gets_its_row(runs_dir: Path) -> None:
    rows = {row.name: row for row in list_runs(runs_dir)}
    assert set(rows) == {"done", "live", "killed", "reused", "broke", "old-done", "old-killed"}
    assert {name: row.status for name, row in rows.items()} == {
        "done": "finished",
        "live": "running",
        "killed": "interrupted",
        "reused": "interrupted",
        "broke": "failed",
        "old-done": "finished",
        "old-killed": "interrupted",
    }
    done = rows["done"]
    assert (done.step, done.total_steps, done.eval_loss, done.style_distance) == (1000, 1000, 2.5, 0.123)
    assert done.eta_seconds is None and done.error is None and done.recorded_in == "status.json"

    live = rows["live"]
    assert live.eta_seconds == pytest.approx(2 * HOUR, abs=60)  # half the tokens in 2 h: 2 h left
    assert (live.preset, live.base_model) == ("fast", "smollm2-135m-instruct")
    assert rows["killed"].eta_seconds is None
    assert rows["broke"].error is not None and rows["broke"].error.startswith("training diverged")

    old = rows["old-done"]
    assert (old.preset, old.step, old.total_steps, old.tokens_seen) == ("baseline", 24, 24, 5000)
    assert (old.wall_seconds, old.eval_loss, old.recorded_in) == (95.5, 3.1, "summary.json")
    assert old.started is not None  # from run.json, written when training began
    stopped = rows["old-killed"]
    assert (stopped.step, stopped.tokens_seen, stopped.wall_seconds) == (3, 700, 12.0)
    assert (stopped.base_model, stopped.preset, stopped.recorded_in) == (
        "HuggingFaceTB/SmolLM2-360M",
        None,
        "checkpoint",
    )


def test_runs_are_listed_newest_first(runs_dir: Path) -> None:
    names = [row.name for row in list_runs(runs_dir) if row.recorded_in == "status.json"]
    assert names == ["live", "killed", "broke", "done", "reused"]


def test_a_run_recorded_on_another_machine_is_not_taken_for_running(runs_dir: Path) -> None:
    write_status(runs_dir / "live", _status(hostname=socket.gethostname() + "-elsewhere"))
    assert {row.name: row.status for row in list_runs(runs_dir)}["live"] == "interrupted"


def test_eta_counts_from_the_last_update() -> None:
    record = _status(updated=_iso(datetime.now(UTC) - timedelta(minutes=30)))
    assert eta_seconds(record) == pytest.approx(1.5 * HOUR, abs=60)
    assert eta_seconds(_status(tokens_seen=0)) is None
    assert eta_seconds(_status(updated=_iso(datetime.now(UTC) - timedelta(days=1)))) == 0


def test_the_table_shows_every_run(runs_dir: Path) -> None:
    result = CliRunner().invoke(app, ["runs", str(runs_dir)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    out = result.output
    for name in ("done", "live", "killed", "broke", "old-done", "old-killed"):
        assert name in out
    assert "2h 00m" in out
    assert "left" in out and "0.123" in out and "500/1,000" in out and "notes" not in out
    assert out.rstrip().splitlines()[-1] == (
        "broke failed: training diverged: loss or gradients were not finite for 3 steps in a row (up to step 40)"
    )


def test_json_is_the_rows(runs_dir: Path) -> None:
    result = CliRunner().invoke(app, ["runs", str(runs_dir), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == [row.name for row in list_runs(runs_dir)]
    assert {row["name"]: row["status"] for row in rows}["killed"] == "interrupted"
    assert set(rows[0]) == set(asdict(list_runs(runs_dir)[0]))


def test_one_run_folder_or_an_empty_folder(runs_dir: Path, tmp_path: Path) -> None:
    assert [row.name for row in list_runs(runs_dir / "broke")] == ["broke"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["runs", str(empty)])
    assert result.exit_code == 0 and result.output.startswith("no runs in")
    assert CliRunner().invoke(app, ["runs", str(empty), "--json"]).output.strip() == "[]"
    with pytest.raises(TwinbotError, match="no such folder"):
        list_runs(tmp_path / "missing")


def test_the_default_folder_is_runs(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs_dir.parent)
    result = CliRunner().invoke(app, ["runs", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 7


def test_a_run_that_train_finished(tiny_run: TrainedRun) -> None:
    (row,) = list_runs(tiny_run.path)
    summary = json.loads((tiny_run.path / "summary.json").read_text())
    assert row.status == "finished" and row.recorded_in == "status.json"
    assert (row.step, row.total_steps) == (TINY_RUN_STEPS, TINY_RUN_STEPS)
    assert row.tokens_seen == summary["tokens_seen"] and row.eval_loss == pytest.approx(
        summary["final_eval_loss"]
    )
    assert row.preset == tiny_run.config.preset and row.base_model == tiny_run.config.base_model
    started = datetime.fromisoformat(row.started or "")
    assert abs(started.timestamp() - time.time()) < 24 * HOUR
