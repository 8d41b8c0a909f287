"""What training writes into RUN besides its logs: the folder itself, checkpoints, and the adapter.

`start_run_dir` (re)creates RUN with its run.json marker once everything is loaded and valid.
`save_checkpoint` writes RUN/checkpoints/step-NNNNNNN/ atomically and keeps the newest KEEP_CHECKPOINTS;
a checkpoint holds everything `--resume` needs to continue exactly where the run stopped:

    adapter/            the LoRA weights (PEFT format, the same files as RUN/adapter)
    optimizer.pt        AdamW state
    scheduler.pt        LR scheduler state
    scaler.pt           fp16 loss-scaler state (only when loss scaling is on)
    rng.pt              python / numpy / torch / cuda RNG states, one entry per process
    state.json          counters and data position (TrainState), written last

`run_fingerprint` is what a run was started with, and `check_resumable` refuses to resume with settings
or data that would change the result. `save_adapter` writes the final RUN/adapter. A checkpoint or adapter
that cannot be written (a full disk) stops the run with one line, the checkpoints before it intact
(`run_folder_write`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.fileio import atomic_dir, make_user_only, write_json
from twinbot.finetune.config import TrainConfig
from twinbot.runs import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    CHECKPOINT_STATE,
    CHECKPOINTS_DIR,
    PERSONA_FILE,
    RUN_MARKER,
    PersonaInfo,
    checkpoint_name,
    file_sha256,
    list_checkpoints,
    write_persona_info,
)

# Inside a checkpoint folder (its adapter/ and state.json are RUN names: `twinbot.runs`)
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
RNG_FILE = "rng.pt"

FULL_DISK_BYTES = 64 << 20  # a write failed with less free than this: the disk filled up

# Settings that may differ on --resume: they change neither the data order nor the update math.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "max_steps",
        "eval_every",
        "eval_max_samples",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "fused_lora",  # the same computation either way
        "torch_compile",
        "gradient_checkpointing",  # recomputes what it frees: the same values, less memory
    }
)


@dataclass
class TrainState:
    """Where training stands after `step` optimizer steps (the data position is (epoch, step))."""

    step: int = 0
    epoch: int = 0
    tokens_seen: int = 0
    supervised_tokens: int = 0
    computed_tokens: int = 0  # fewer than tokens_seen where samples share a beginning (batches.make_batch)
    elapsed_seconds: float = 0.0
    nonfinite_in_a_row: int = 0
    train_loss: float | None = None
    eval_loss: float | None = None
    # What the run was started with: resume refuses settings or data that would change the result.
    fingerprint: dict[str, Any] = field(default_factory=dict)


def start_run_dir(run_dir: Path, fresh: bool, marker: dict[str, Any]) -> None:
    """A fresh run replaces the old one (the caller made sure it is a run folder); resume keeps it."""
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    make_user_only(run_dir)
    write_json(run_dir / RUN_MARKER, {"twinbot_run": 1, **marker})


def save_adapter(peft_model: Any, tokenizer: Any, adapter_dir: Path, persona: PersonaInfo) -> None:
    """RUN/adapter: PEFT files (adapter_config.json + adapter_model.safetensors), the tokenizer and
    twinbot.json (the persona's system prompt and the base model)."""
    with run_folder_write(adapter_dir, "the adapter", adapter_dir.parent) as tmp:
        peft_model.save_pretrained(tmp, save_embedding_layers=False)
        tokenizer.save_pretrained(tmp)
        write_persona_info(tmp / PERSONA_FILE, persona)


@contextlib.contextmanager
def run_folder_write(final: Path, what: str, run_dir: Path) -> Iterator[Path]:
    """`atomic_dir(final)` for a checkpoint or the adapter: a temp folder that replaces `final` when complete
    and is removed on failure, so the checkpoints before it stay to resume from. A failure (a full disk,
    ...) stops the run with one line. Any exception counts: torch.save reports a full disk as a
    RuntimeError ("unexpected pos ...")."""
    try:
        with atomic_dir(final, overwrite=True) as tmp:
            try:
                yield tmp
            except TwinbotError:
                raise
            except Exception as exc:  # here the free space is measured before the partial folder goes
                raise write_error(what, run_dir, exc) from exc
    except TwinbotError:
        raise
    except Exception as exc:  # creating or renaming the folder
        raise write_error(what, run_dir, exc) from exc


def write_error(what: str, run_dir: Path, exc: Exception) -> TwinbotError:
    full = (
        isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    ) or free_bytes(run_dir) < FULL_DISK_BYTES
    reason = "the disk is full" if full else (getattr(exc, "strerror", None) or one_line(exc))
    last = list_checkpoints(run_dir)
    kept = f"the last checkpoint ({last[-1].name}) is intact" if last else "no checkpoint was saved before it"
    return TwinbotError(
        f"cannot write {what} ({reason}); training stopped and {kept}: "
        f"{'free disk space' if full else 'check the run folder'}, then run the same command with --resume",
        run_dir,
    )


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return FULL_DISK_BYTES  # unknown: not reported as full


def run_fingerprint(
    config: TrainConfig, batch_size: int, processes: int, base_model: str, train_file: Path
) -> dict[str, Any]:
    """What decides a run's result: its settings (not where its folders are), the micro-batch it chose,
    its processes, the base model as the user named it, and the training data's hash."""
    return {
        **config.model_dump(mode="json", exclude={"data_dir", "output_dir", "preset", "device", "resume"}),
        "batch_size": batch_size,
        "processes": processes,
        "base_model": base_model,
        "train_data_sha256": file_sha256(train_file),
    }


def check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """A TwinbotError naming what changed since the run started, unless only RESUMABLE_CHANGES did."""
    changed = sorted(
        k
        for k in saved.keys() | current.keys()
        if k not in RESUMABLE_CHANGES and saved.get(k) != current.get(k)
    )
    if changed:
        what = ", ".join(
            "the training data"
            if k == "train_data_sha256"
            else f"{k.upper()} ({saved.get(k)} -> {current.get(k)})"
            for k in changed
        )
        raise TwinbotError(
            f"cannot resume: changed since the run started: {what}; use the same settings, "
            f"or start again with --overwrite",
            checkpoint,
        )


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states, as plain Python values and tensors (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any | None,
    rng_states: list[dict[str, Any]],
    state: TrainState,
    keep: int,
) -> Path:
    """Write RUN/checkpoints/step-N atomically, then delete all but the newest `keep` checkpoints.

    `model` is the (unwrapped) PEFT model; `rng_states` has one entry per process, indexed by rank.
    Call it on the main process only.
    """
    final = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(state.step)
    with run_folder_write(final, f"checkpoint {final.name}", Path(run_dir)) as tmp:
        model.save_pretrained(tmp / ADAPTER_DIR, save_embedding_layers=False)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER_FILE)
        torch.save(rng_states, tmp / RNG_FILE)
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    make_user_only(final.parent)
    for old in list_checkpoints(run_dir)[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(checkpoint: Path) -> TrainState:
    path = Path(checkpoint) / CHECKPOINT_STATE
    try:
        return TrainState(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise TwinbotError(
            "checkpoint state is unreadable; delete this checkpoint folder and --resume again", path
        ) from exc


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Load saved LoRA weights into a PEFT model that has the same LoRA layout."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(Path(adapter_dir) / ADAPTER_WEIGHTS, device=str(_device_of(model)))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise TwinbotError(
            "checkpoint adapter does not match this model's LoRA layers; resume with the same "
            "BASE_MODEL and LORA_* settings, or start again with --overwrite",
            adapter_dir,
        )


def load_checkpoint(
    checkpoint: Path,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any | None,
    rank: int,
) -> TrainState:
    """Restore weights, optimizer, scheduler, scaler and this process's RNG states; return the counters."""
    checkpoint = Path(checkpoint)
    state = read_state(checkpoint)
    load_adapter_weights(model, checkpoint / ADAPTER_DIR)
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / SCHEDULER_FILE, map_location="cpu", weights_only=True))
    scaler_file = checkpoint / SCALER_FILE
    if scaler is not None and scaler_file.is_file():
        scaler.load_state_dict(torch.load(scaler_file, weights_only=True))
    rng_states = torch.load(checkpoint / RNG_FILE, weights_only=True)
    restore_rng_state(rng_states[rank % len(rng_states)])
    return state


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device
