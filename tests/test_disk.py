"""Disk space: the estimate of what a run writes, the refusal before training when it would not fit, and a
checkpoint that cannot be written (a full disk) stopping the run with the previous checkpoint intact."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch

from support.training import make_config, train_only_data
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_dir
from twinbot.finetune import checkpoint as checkpoint_module
from twinbot.finetune import disk
from twinbot.finetune import recipe as train
from twinbot.finetune.checkpoint import (
    OPTIMIZER_FILE,
    TrainState,
    capture_rng_state,
    read_state,
    save_checkpoint,
)
from twinbot.finetune.config import TrainConfig
from twinbot.runs import list_checkpoints

DiskUsage = namedtuple("DiskUsage", "total used free")


def _fake_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 * free + 1, 9 * free, free))


def test_estimate_counts_kept_checkpoints_adapter_and_logs(tmp_path: Path) -> None:
    trainable = [
        torch.nn.Parameter(torch.zeros(1000)),
        torch.nn.Parameter(torch.zeros(500, dtype=torch.bfloat16)),
    ]
    weights = 1000 * 4 + 500 * 2
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 3000)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 99999)  # the base weights are not saved with the run
    config = TrainConfig(keep_checkpoints=2, log_every=1)

    estimate = disk.estimate_run_disk(
        trainable, config, total_steps=100, save_every=10, processes=2, model_path=tmp_path
    )
    adapter = weights + 2 * disk.TENSOR_OVERHEAD_BYTES
    optimizer = 2 * weights + 2 * 3 * disk.TENSOR_OVERHEAD_BYTES
    assert (
        estimate.checkpoint_bytes
        == adapter + optimizer + 2 * disk.RNG_STATE_BYTES + disk.CHECKPOINT_FIXED_BYTES
    )
    assert estimate.checkpoints_at_once == 3  # 10 saves; 2 kept and the one being written
    assert estimate.adapter_bytes == adapter + 3000
    assert estimate.log_bytes == (100 + 20) * disk.LOG_ROW_BYTES + disk.LOG_FIXED_BYTES
    assert estimate.total_bytes == 3 * estimate.checkpoint_bytes + estimate.adapter_bytes + estimate.log_bytes

    short = disk.estimate_run_disk(
        trainable, config, total_steps=3, save_every=2, processes=1, model_path="org/id"
    )
    assert short.checkpoints_at_once == 2  # saves at steps 2 and 3 only
    assert short.adapter_bytes == adapter + disk.TOKENIZER_ALLOWANCE_BYTES  # a hub id: an allowance


def test_free_space_counts_what_the_run_folder_already_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    estimate = disk.DiskEstimate(
        checkpoint_bytes=400 * 10**6,
        checkpoints_at_once=3,
        adapter_bytes=10**8,
        log_bytes=10**6,
        keep_checkpoints=2,
    )
    _fake_free_space(monkeypatch, 10**9)
    space = disk.disk_space(estimate, tmp_path / "runs" / "new")
    assert space.folder == tmp_path  # the nearest folder that exists
    assert space.needed_bytes == estimate.total_bytes + space.margin_bytes and not space.enough
    error = str(space.error())
    assert error.startswith(
        f"not enough disk space: the run needs about 1.6 GB in {tmp_path} (3 checkpoint(s) of 400 MB"
    )
    assert (
        "1.0 GB free; free space, lower KEEP_CHECKPOINTS (now 2), or pick an --out on another disk" in error
    )

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "blob").write_bytes(b"x" * 10**6)
    assert disk.disk_space(estimate, run).reused_bytes == 10**6


def test_a_run_that_would_not_fit_is_refused_before_anything_is_written(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_free_space(monkeypatch, 100 * 10**6)  # under the margin alone
    run = tmp_path / "run"
    with pytest.raises(
        TwinbotError, match=r"not enough disk space: the run needs about \d+ MB in .*, 100 MB free"
    ):
        train.main(make_config(tiny_model_dir, run, train_only_data(tmp_path), max_steps=1))
    assert not run.exists()


def test_the_start_lines_say_what_the_run_writes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train.main(make_config(tiny_model_dir, tmp_path / "run", train_only_data(tmp_path), max_steps=1))
    err = capsys.readouterr().err
    assert "disk: the run writes about " in err and "1 checkpoint(s) of " in err and " free in " in err


def _failing_checkpoint(monkeypatch: pytest.MonkeyPatch, failure: BaseException, on_checkpoint: int) -> None:
    """torch.save writes part of optimizer.pt of the `on_checkpoint`th checkpoint from now, then fails."""
    original = torch.save
    calls = {"optimizer": 0}

    def save(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == OPTIMIZER_FILE:
            calls["optimizer"] += 1
            if calls["optimizer"] == on_checkpoint:
                Path(path).write_bytes(b"partial")
                raise failure
        original(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)


def _assert_only_the_first_checkpoint(run: Path) -> None:
    checkpoints = list_checkpoints(run)
    assert [p.name for p in checkpoints] == ["step-0000001"]
    assert read_state(checkpoints[0]).step == 1
    torch.load(checkpoints[0] / OPTIMIZER_FILE, weights_only=True)  # complete
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000001"]  # no temp folder left
    assert not (run / "adapter").exists() and not (run / "summary.json").exists()


def test_full_disk_while_checkpointing_stops_the_run_and_keeps_the_last_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    config = make_config(tiny_model_dir, run, train_only_data(tmp_path), max_steps=2, save_every=1)
    _failing_checkpoint(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), on_checkpoint=2)
    with pytest.raises(TwinbotError) as failure:
        train.main(config)
    message = str(failure.value)
    assert message == (
        f"{run}: cannot write checkpoint step-0000002 (the disk is full); training stopped and the last "
        f"checkpoint (step-0000001) is intact: free disk space, then run the same command with --resume"
    )
    _assert_only_the_first_checkpoint(run)

    monkeypatch.undo()  # space freed: the run continues from step 1
    assert train.main(config, resume=True).steps == 2


def test_torch_reports_a_full_disk_as_a_runtime_error(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save's zip writer says "unexpected pos ..." when the disk fills: the free space tells."""
    from twinbot.finetune.lora import apply_lora
    from twinbot.models.loading import load_model

    model = apply_lora(load_model(str(tiny_model_dir)), r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    run = tmp_path / "run"

    def save(step: int) -> Path:
        state = TrainState(step=step)
        return save_checkpoint(
            run, model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
            rng_states=[capture_rng_state()], state=state, keep=2,
        )  # fmt: skip

    save(1)
    torch_full = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    _failing_checkpoint(monkeypatch, torch_full, on_checkpoint=1)

    def disk_usage(path: Any) -> DiskUsage:  # full while the partial checkpoint is there, as on a real disk
        partial = any((run / "checkpoints").glob(".step-*"))
        return DiskUsage(10**11, 10**11 - 4096, 4096) if partial else DiskUsage(10**11, 10**10, 9 * 10**10)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    with pytest.raises(TwinbotError, match=r"cannot write checkpoint step-0000002 \(the disk is full\)"):
        save(2)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000001"]

    # another failure, with space left, is reported as itself
    monkeypatch.undo()
    _fake_free_space(monkeypatch, 10**10)
    _failing_checkpoint(monkeypatch, OSError(errno.EACCES, "Permission denied"), on_checkpoint=1)
    with pytest.raises(TwinbotError, match=r"\(Permission denied\); .*: check the run folder, then run"):
        save(3)


def test_a_failed_rename_puts_the_previous_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "step-0000002"
    final.mkdir()
    (final / "state.json").write_text("old", encoding="utf-8")
    original = Path.rename

    def rename(self: Path, target: Any) -> Path:
        if ".tmp-" in self.name:
            raise OSError(errno.EIO, "Input/output error")
        return original(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError), atomic_dir(final, overwrite=True) as tmp:
        (tmp / "state.json").write_text("new", encoding="utf-8")
    assert (final / "state.json").read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000002"]
