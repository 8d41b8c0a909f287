"""Checkpoints: atomic folders, rotation, a complete round trip of weights, optimizer, scheduler and RNG."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from twinbot.errors import TwinbotError
from twinbot.finetune.checkpoint import (
    TrainState,
    capture_rng_state,
    load_checkpoint,
    read_state,
    restore_rng_state,
    save_checkpoint,
)
from twinbot.runs import latest_checkpoint, list_checkpoints


def _lora_model(model_dir: Path) -> torch.nn.Module:
    from twinbot.finetune.lora import apply_lora
    from twinbot.models.loading import load_model

    return apply_lora(load_model(str(model_dir)), r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])


def _training_objects(model_dir: Path, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    from transformers import get_scheduler

    torch.manual_seed(seed)
    model = _lora_model(model_dir)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=10)
    return model, optimizer, scheduler


def _one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: object) -> None:
    model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.float().pow(2).mean().backward()
    optimizer.step()
    scheduler.step()  # type: ignore[attr-defined]
    optimizer.zero_grad()


def _save(
    run: Path, step: int, model: torch.nn.Module, optimizer: object, scheduler: object, keep: int
) -> Path:
    return save_checkpoint(
        run,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=None,
        rng_states=[capture_rng_state()],
        state=TrainState(step=step, epoch=0, tokens_seen=10 * step, fingerprint={"seed": 1}),
        keep=keep,
    )


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model, optimizer, scheduler = _training_objects(tiny_model_dir, seed=0)
    for _ in range(2):
        _one_step(model, optimizer, scheduler)
    checkpoint = _save(tmp_path / "run", 2, model, optimizer, scheduler, keep=2)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    fresh, fresh_optimizer, fresh_scheduler = _training_objects(tiny_model_dir, seed=1)  # other LoRA init
    state = load_checkpoint(
        checkpoint, model=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler, scaler=None, rank=0
    )
    assert (state.step, state.tokens_seen, state.fingerprint) == (2, 20, {"seed": 1})
    assert (random.random(), np.random.rand()) == expected_draws[:2]
    assert torch.equal(torch.rand(3), expected_draws[2])
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name, param in fresh.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, trained[name]), name
    assert fresh_scheduler.state_dict()["last_epoch"] == 2  # type: ignore[attr-defined]
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()  # type: ignore[attr-defined]
    # the next step from the restored state equals the next step of the original
    _one_step(model, optimizer, scheduler)
    _one_step(fresh, fresh_optimizer, fresh_scheduler)
    for name, param in fresh.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param, trained[name], rtol=0, atol=0)


def test_rotation_keeps_the_newest_and_ignores_unfinished_folders(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    model, optimizer, scheduler = _training_objects(tiny_model_dir, seed=0)
    for step in (1, 2, 3, 4):
        _save(run, step, model, optimizer, scheduler, keep=2)
    # an interrupted save (temp folder) and a folder without state.json are not checkpoints
    (run / "checkpoints" / ".step-0000009.tmp-abc").mkdir()
    (run / "checkpoints" / "step-0000008").mkdir()
    assert [p.name for p in list_checkpoints(run)] == ["step-0000003", "step-0000004"]
    assert latest_checkpoint(run) == run / "checkpoints" / "step-0000004"
    assert latest_checkpoint(tmp_path / "nothing-here") is None
    files = {p.name for p in (run / "checkpoints" / "step-0000004").iterdir()}
    assert files == {"adapter", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"}
    adapter = {p.name for p in (run / "checkpoints" / "step-0000004" / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter


def test_rng_state_round_trip_is_exact() -> None:
    state = capture_rng_state()
    first = (random.random(), np.random.randint(1 << 30), torch.randn(4))
    restore_rng_state(state)
    second = (random.random(), np.random.randint(1 << 30), torch.randn(4))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_unreadable_state_is_a_twinbot_error(tmp_path: Path) -> None:
    folder = tmp_path / "step-0000001"
    folder.mkdir()
    (folder / "state.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TwinbotError, match="checkpoint state is unreadable"):
        read_state(folder)
