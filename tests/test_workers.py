"""Training on a CPU in several processes that `twinbot train` starts itself (`PROCESSES`, twinbot.finetune.workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import torch.distributed

from support.training import FIXTURE_DATA, TINY_TRAINING, assert_same_adapter, set_options, train_only_data
from twinbot.errors import TwinbotError
from twinbot.finetune import recipe as train
from twinbot.finetune import workers
from twinbot.finetune.checkpoint import read_state
from twinbot.finetune.config import ENV_KEYS, TrainConfig, resolve_train_config
from twinbot.finetune.status import read_status
from twinbot.runs import list_checkpoints

needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed with gloo, so it cannot run CPU processes together",
)

SETTINGS: dict[str, Any] = {**TINY_TRAINING, "eval_max_samples": 4}


def _config(**changes: Any) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, **changes})


# --- how many processes --------------------------------------------------------------------------------


@pytest.fixture
def cores(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend this machine has N cores (torch's intra-op threads) and memory for any number of processes."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(workers, "processes_memory_allows", lambda config: sys.maxsize)

    def set_cores(count: int) -> None:
        monkeypatch.setattr(torch, "get_num_threads", lambda: count)

    return set_cores


@pytest.mark.parametrize(
    ("count", "batch_size", "expected"),
    [
        (2, "auto", (2, 1, 2)),  # the reference machine: 2 processes of 1 thread, 2 of the 4 rows each
        (3, "auto", (2, 1, 2)),  # 3 does not divide 4 rows
        (8, "auto", (4, 2, 1)),  # one row each; the other cores become threads
        (4, 6, (3, 1, 2)),
        (1, "auto", (1, 1, "auto")),
        (16, 1, (1, 16, 1)),  # one row cannot be split
    ],
)
def test_auto_takes_one_process_per_core_that_splits_the_micro_batch_evenly(
    cores: Any, count: int, batch_size: int | str, expected: tuple[int, int, int | str]
) -> None:
    cores(count)
    plan = workers.process_plan(_config(processes="auto", batch_size=batch_size))
    assert (plan.count, plan.threads, plan.micro_batch) == expected


def test_auto_takes_no_more_processes_than_memory_allows(cores: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cores(8)
    monkeypatch.setattr(workers, "processes_memory_allows", lambda config: 2)
    plan = workers.process_plan(_config(processes="auto", batch_size="auto"))
    assert (plan.count, plan.threads, plan.micro_batch) == (2, 4, 2)


def test_memory_allows_a_process_per_two_copies_of_the_weights_in_half_the_free_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * 1000)
    (model / "tokenizer.json").write_bytes(b"\0" * 10**6)  # not weights
    free = type("Memory", (), {"available": 10_000})()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: free)
    assert workers.processes_memory_allows(_config(base_model=str(model))) == 1 + 10_000 // 2 // 2000
    assert workers.processes_memory_allows(_config(base_model="some-org/some-hub-model")) == sys.maxsize


def test_processes_must_split_the_micro_batch_evenly(cores: Any) -> None:
    cores(4)
    with pytest.raises(TwinbotError, match=r"BATCH_SIZE=3 does not split evenly between PROCESSES=2"):
        workers.process_plan(_config(processes=2, batch_size=3))
    with pytest.raises(TwinbotError, match=r"BATCH_SIZE=auto \(4 rows on a CPU\) .* PROCESSES=3"):
        workers.process_plan(_config(processes=3, batch_size="auto"))
    plan = workers.process_plan(_config(processes=2, batch_size=6))
    assert (plan.count, plan.threads, plan.micro_batch) == (2, 2, 3)


def test_one_process_on_a_gpu_under_a_launcher_or_when_asked(
    cores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cores(8)
    assert workers.process_plan(_config(processes=1, batch_size=4)).count == 1
    monkeypatch.setattr(workers, "pick_device", lambda requested: "cuda")
    assert workers.process_plan(_config(processes="auto", batch_size=4)).count == 1
    with pytest.raises(TwinbotError, match="PROCESSES=2 is for training on a CPU"):
        workers.process_plan(_config(processes=2, batch_size=4))
    monkeypatch.setattr(workers, "pick_device", lambda requested: "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # accelerate launch / torchrun already started the processes
    assert workers.process_plan(_config(processes="auto", batch_size=4)).count == 1


def test_auto_is_one_process_on_windows_where_torch_distributed_is_little_tested(
    cores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cores(8)
    monkeypatch.setattr(sys, "platform", "win32")
    assert workers.process_plan(_config(processes="auto", batch_size=4)).count == 1
    assert workers.process_plan(_config(processes=2, batch_size=4)).count == 2  # on request


def test_the_fast_preset_trains_in_one_process_per_core_the_others_in_one() -> None:
    fast = resolve_train_config(cli={"preset": "fast"}, environ={}, dotenv_path=None).config
    baseline = resolve_train_config(cli={"preset": "baseline"}, environ={}, dotenv_path=None).config
    assert fast.processes == "auto" and baseline.processes == 1


# --- training in two processes -----------------------------------------------------------------------------


@needs_gloo
def test_two_processes_train_the_adapter_one_process_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    common = {"base_model": str(tiny_model_dir), "data_dir": FIXTURE_DATA, "batch_size": 2, "max_steps": 3}
    common |= {"eval_every": 3, "save_every": 2}
    shared = train.main(_config(**common, processes=2, output_dir=tmp_path / "two"))
    alone = train.main(_config(**common, processes=1, output_dir=tmp_path / "one"))

    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["micro_batch"] == 1
    assert (shared.steps, shared.tokens_seen, shared.supervised_tokens) == (
        alone.steps,
        alone.tokens_seen,
        alone.supervised_tokens,
    )
    assert shared.final_train_loss == pytest.approx(alone.final_train_loss, abs=1e-5)
    assert shared.final_eval_loss == pytest.approx(alone.final_eval_loss, abs=1e-5)
    assert_same_adapter(tmp_path / "two" / "adapter", tmp_path / "one" / "adapter")
    assert [read_state(p).step for p in list_checkpoints(tmp_path / "two")] == [2, 3]
    assert (tmp_path / "two" / "adapter").stat().st_mode & 0o077 == 0
    # status.json: the progress from process 0, the end from this one (their parent, which owns the run)
    status = read_status(tmp_path / "two")
    assert status is not None and status.state == "finished" and status.pid == os.getpid()
    assert (status.step, status.total_steps, status.tokens_seen) == (3, 3, shared.tokens_seen)
    assert status.eval_loss == pytest.approx(shared.final_eval_loss)


def _start_cli_train(data: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen[str]:
    args = ["--data", str(data), "--out", str(out), "--model", str(model), "--set", "PROCESSES=2"]
    args += ["--set", "BATCH_SIZE=2", *extra]
    args += set_options(SETTINGS)
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS.values()}
    return subprocess.Popen(
        [sys.executable, "-m", "twinbot", "train", *args],
        cwd=out.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _metrics_lines(run: Path) -> int:
    path = run / "metrics.csv"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _training_processes(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """The processes `twinbot train` (`process`) started to train in (multiprocessing's spawned children)."""
    return [p for p in psutil.Process(process.pid).children() if "spawn_main" in " ".join(p.cmdline())]


def _start_endless_run(
    model: Path, tmp_path: Path, steps_done: int
) -> tuple[Path, Path, subprocess.Popen[str]]:
    """A 2-process CLI run with more steps than any test waits for, once `steps_done` steps are logged."""
    data, run = train_only_data(tmp_path), tmp_path / "run"
    process = _start_cli_train(data, run, model, "--max-steps", "100000", "--set", "SAVE_EVERY=100000")
    from test_train import _wait_for

    # on timeout, end the whole process group: the parent and its training processes
    _wait_for(
        lambda: _metrics_lines(run) >= 1 + steps_done,
        process,
        kill=lambda: os.killpg(process.pid, signal.SIGKILL),
    )
    return data, run, process


@needs_gloo
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and signals")
def test_ctrl_c_stops_every_process_with_a_checkpoint_and_the_run_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data, run, process = _start_endless_run(tiny_model_dir, tmp_path, steps_done=2)
    started = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends: the whole foreground process group
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("interrupted: checkpoint saved at step") and "--resume" in last_line
    checkpoints = list_checkpoints(run)
    assert len(checkpoints) == 1
    stopped_at = read_state(checkpoints[0]).step
    assert stopped_at >= 2 and f"step {stopped_at};" in last_line
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive  # no process left behind

    config = _config(base_model=str(tiny_model_dir), data_dir=data, output_dir=run, batch_size=2, processes=2)
    summary = train.main(config.model_copy(update={"max_steps": stopped_at + 1}), resume=True)
    assert summary.steps == stopped_at + 1


@needs_gloo
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_process_that_dies_ends_the_others_and_the_run_says_so(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    _, _, process = _start_endless_run(tiny_model_dir, tmp_path, steps_done=1)
    trainers = _training_processes(process)
    trainers[1].kill()  # as the kernel's out-of-memory killer would
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: training process 1 of 2 was killed by signal 9")
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(trainers, timeout=10)
    assert not alive


@needs_gloo
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_processes_whose_parent_is_killed_stop_with_a_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Killing `twinbot train` itself (SIGKILL: no handler runs) must not leave its processes training on."""
    _, run, process = _start_endless_run(tiny_model_dir, tmp_path, steps_done=2)
    trainers = _training_processes(process)
    assert len(trainers) == 2
    os.kill(process.pid, signal.SIGKILL)  # the parent only, not its process group
    process.communicate(timeout=180)  # the pipes close once the processes have exited too
    _, alive = psutil.wait_procs(trainers, timeout=30)
    assert not alive
    checkpoints = list_checkpoints(run)
    assert len(checkpoints) == 1 and read_state(checkpoints[0]).step >= 2


@needs_gloo
def test_an_error_in_the_processes_is_one_line_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    (data / "train.jsonl").write_text("{not json\n", encoding="utf-8")
    process = _start_cli_train(data, run, tiny_model_dir, "--max-steps", "2")
    _, err = process.communicate(timeout=180)
    assert process.returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.jsonl" in errors[0]
    assert "Traceback" not in err
    assert not run.exists()


def test_resume_with_auto_continues_in_the_processes_the_run_started_with(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started in one process (before PROCESSES existed, or with PROCESSES=1) resumes under the new
    default `auto` on a 2-core machine as it began, in one process, instead of refusing a changed setting."""
    common = {"base_model": str(tiny_model_dir), "data_dir": FIXTURE_DATA, "output_dir": tmp_path / "run"}
    common |= {"batch_size": 2, "save_every": 1, "eval_max_samples": 1}
    train.main(_config(**common, processes=1, max_steps=2))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # auto would now take 2 processes
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    summary = train.main(_config(**common, processes="auto", max_steps=3), resume=True)
    assert summary.steps == 3
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["processes"] == 1
