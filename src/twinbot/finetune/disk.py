"""Disk space: what a run will write into RUN, checked against the free space before anything is written.

A run writes checkpoints (`checkpoint.save_checkpoint`: the LoRA weights, AdamW's two moments per weight,
the schedule and one RNG state per process), of which it keeps KEEP_CHECKPOINTS and briefly one more (the
new one is complete before the oldest is deleted), then the final adapter with its tokenizer, and the logs
(metrics.csv, TensorBoard events, loss.png). The sizes follow from the trainable weights and their dtype;
the small files get generous allowances, and the check keeps a margin on top.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from twinbot.errors import TwinbotError
from twinbot.finetune.config import TrainConfig

KIB, MIB = 1 << 10, 1 << 20
TENSOR_OVERHEAD_BYTES = 1 * KIB  # per tensor in a saved file: its safetensors / pickle header entry
RNG_STATE_BYTES = 64 * KIB  # one process's python, numpy, torch and CUDA RNG states (~25 KiB measured)
CHECKPOINT_FIXED_BYTES = 64 * KIB  # scheduler.pt, scaler.pt, state.json, adapter_config.json
LOG_ROW_BYTES = 1 * KIB  # a metrics.csv row and its TensorBoard scalars (~0.6 KiB measured)
LOG_FIXED_BYTES = 2 * MIB  # loss.png (redrawn through a temp file), run.json, summary.json, persona
TOKENIZER_ALLOWANCE_BYTES = 32 * MIB  # saved with the adapter, when the base model's files are not local
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges*", "special_tokens_map*", "added_tokens*", "*.model")
MARGIN_SHARE = 0.10
MARGIN_MIN_BYTES = 256 * MIB
ADAM_MOMENTS = 2  # exp_avg and exp_avg_sq, each the size and dtype of its weight


@dataclass(frozen=True)
class DiskEstimate:
    """What a run writes into RUN, at the most at once."""

    checkpoint_bytes: int  # one checkpoint
    checkpoints_at_once: int  # KEEP_CHECKPOINTS plus the one being written (fewer when the run saves less)
    adapter_bytes: int  # RUN/adapter: the weights and the tokenizer
    log_bytes: int
    keep_checkpoints: int

    @property
    def total_bytes(self) -> int:
        return self.checkpoint_bytes * self.checkpoints_at_once + self.adapter_bytes + self.log_bytes

    def parts(self) -> str:
        return (
            f"{self.checkpoints_at_once} checkpoint(s) of {format_bytes(self.checkpoint_bytes)}, "
            f"adapter {format_bytes(self.adapter_bytes)}, logs {format_bytes(self.log_bytes)}"
        )


@dataclass(frozen=True)
class DiskSpace:
    """The estimate next to the free space where RUN is."""

    estimate: DiskEstimate
    folder: Path  # where the free space was measured: RUN, or its nearest existing parent
    free_bytes: int
    reused_bytes: int  # already in RUN: a resumed run's checkpoints are replaced, a replaced run is deleted
    margin_bytes: int

    @property
    def needed_bytes(self) -> int:
        return max(0, self.estimate.total_bytes - self.reused_bytes) + self.margin_bytes

    @property
    def enough(self) -> bool:
        return self.free_bytes >= self.needed_bytes

    def start_line(self) -> str:
        return (
            f"disk: the run writes about {format_bytes(self.estimate.total_bytes)} "
            f"({self.estimate.parts()}); {format_bytes(self.free_bytes)} free in {self.folder}"
        )

    def error(self) -> TwinbotError:
        lower = (
            f"lower KEEP_CHECKPOINTS (now {self.estimate.keep_checkpoints}), "
            if self.estimate.keep_checkpoints > 1
            else ""
        )
        return TwinbotError(
            f"not enough disk space: the run needs about {format_bytes(self.needed_bytes)} in {self.folder} "
            f"({self.estimate.parts()}, {format_bytes(self.margin_bytes)} to spare), "
            f"{format_bytes(self.free_bytes)} free; free space, {lower}or pick an --out on another disk"
        )


def estimate_run_disk(
    trainable: Sequence[torch.nn.Parameter],
    config: TrainConfig,
    total_steps: int,
    save_every: int,
    processes: int,
    model_path: str | Path,
) -> DiskEstimate:
    """The estimate for a run that trains `trainable` for `total_steps` steps, saving every `save_every`."""
    weight_bytes = sum(p.numel() * p.element_size() for p in trainable)
    tensors = len(trainable)
    adapter_weights = weight_bytes + tensors * TENSOR_OVERHEAD_BYTES
    # the moments, and a step count per weight (a tensor with the fused optimizer)
    optimizer = ADAM_MOMENTS * weight_bytes + tensors * (ADAM_MOMENTS + 1) * TENSOR_OVERHEAD_BYTES
    checkpoint = adapter_weights + optimizer + processes * RNG_STATE_BYTES + CHECKPOINT_FIXED_BYTES
    saves = max(1, math.ceil(total_steps / max(1, save_every)))
    log_rows = math.ceil(total_steps / config.log_every) + 20  # and the evaluations' rows
    return DiskEstimate(
        checkpoint_bytes=checkpoint,
        checkpoints_at_once=min(saves, config.keep_checkpoints + 1),
        adapter_bytes=adapter_weights + tokenizer_bytes(model_path),
        log_bytes=log_rows * LOG_ROW_BYTES + LOG_FIXED_BYTES,
        keep_checkpoints=config.keep_checkpoints,
    )


def tokenizer_bytes(model_path: str | Path) -> int:
    """The size of the tokenizer files saved beside the adapter: the base model's own, when it is a local
    folder, else an allowance."""
    folder = Path(model_path)
    if not folder.is_dir():
        return TOKENIZER_ALLOWANCE_BYTES
    files = {path for pattern in TOKENIZER_FILES for path in folder.glob(pattern) if path.is_file()}
    return sum(path.stat().st_size for path in files) or TOKENIZER_ALLOWANCE_BYTES


def disk_space(estimate: DiskEstimate, run_dir: Path) -> DiskSpace:
    folder = existing_folder(run_dir)
    margin = max(MARGIN_MIN_BYTES, int(estimate.total_bytes * MARGIN_SHARE))
    return DiskSpace(
        estimate=estimate,
        folder=folder,
        free_bytes=shutil.disk_usage(folder).free,
        reused_bytes=folder_bytes(run_dir),
        margin_bytes=margin,
    )


def check_disk_space(estimate: DiskEstimate, run_dir: Path) -> DiskSpace:
    """The free space where RUN goes, or a TwinbotError when the run would not fit (with the margin)."""
    space = disk_space(estimate, run_dir)
    if not space.enough:
        raise space.error()
    return space


def existing_folder(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    return next(folder for folder in (path, *path.parents) if folder.is_dir())


def folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def format_bytes(count: int) -> str:
    """Decimal units, as disks are sold and file managers count: 1.2 GB, 340 MB, 12 kB."""
    if count >= 10**9:
        return f"{count / 10**9:.1f} GB"
    if count >= 10**6:
        return f"{count / 10**6:.0f} MB"
    return f"{max(count, 0) / 10**3:.0f} kB"
