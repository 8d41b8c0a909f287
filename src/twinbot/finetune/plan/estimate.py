"""A whole run's seconds, by part: calibrated (measured seconds per token x the run's tokens) or analytic
(the run's FLOPs / this machine's matmul speed), and split between data-parallel processes. Also the one
plan line `train` prints before it starts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import torch

from twinbot.errors import one_line
from twinbot.finetune.batches import TrainData, batch_layout
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.lora import pick_attention
from twinbot.finetune.plan.flops import ModelShape, epoch_flops, model_shape
from twinbot.finetune.plan.machine import DTYPES, Bookkeeping, disk_seconds, matmul_gflops
from twinbot.finetune.plan.records import Calibration, Estimate, Workload
from twinbot.finetune.plan.schedule import format_clock, format_duration
from twinbot.finetune.plan.workload import count_workload
from twinbot.finetune.rows import Row
from twinbot.models.loading import supported_attention

# Forward-only cost per token as a share of a training step's, when evaluation could not be timed.
EVAL_COST_SHARE = 1 / 3


def extrapolate(
    workload: Workload,
    calibration: Calibration,
    setup_seconds: float,
    bookkeeping: Bookkeeping | None = None,
    log_every: int = 1,
) -> Estimate:
    """Measured seconds per token x the run's tokens, plus evaluations, checkpoint saves and logging; setup
    is reading and tokenizing the data, loading the model and the warm-up's extra cost.

    Evaluation: forward-only seconds per eval token as measured (else EVAL_COST_SHARE of a training
    token's). Checkpoints: one measured save per checkpoint, plus the final adapter save.
    """
    per_token = calibration.seconds_per_token
    if calibration.eval_tokens:
        eval_per_token = calibration.eval_seconds / calibration.eval_tokens
    else:
        eval_per_token = EVAL_COST_SHARE * per_token
    save = calibration.checkpoint_seconds or 0.0
    estimate = Estimate(
        method="calibrated",
        setup_seconds=setup_seconds + calibration.load_seconds + calibration.warmup_penalty_seconds,
        train_seconds=workload.tokens * per_token,
        eval_seconds=workload.evaluations * workload.eval_tokens_per_evaluation * eval_per_token,
        checkpoint_seconds=(workload.checkpoints + 1) * save,
        logging_seconds=bookkeeping.run_seconds(workload, log_every) if bookkeeping else 0.0,
    )
    return estimate.model_copy(update={"relative_error": calibrated_error(estimate, calibration)})


def calibrated_error(estimate: Estimate, calibration: Calibration) -> float | None:
    """Two standard errors of the training and evaluation parts (whose errors add up: the same machine is
    slower or faster at both), relative to the total; None when a part was timed on fewer than two batches.
    An evaluation that was not timed (no eval rows measured) is assumed at EVAL_COST_SHARE: no error known."""
    train = calibration.train_relative_error
    evaluation = calibration.eval_relative_error if calibration.eval_tokens else None
    if train is None or (evaluation is None and estimate.eval_seconds > 0):
        return None
    error = estimate.train_seconds * train + estimate.eval_seconds * (evaluation or 0.0)
    return 2 * error / max(estimate.total_seconds, 1e-9)


def analytic_estimate(
    config: TrainConfig,
    workload: Workload,
    shape: ModelShape,
    rows: Sequence[Row],
    eval_rows: Sequence[Row],
    device: str,
    precision: str,
    setup_seconds: float,
    bookkeeping: Bookkeeping | None = None,
    architecture: tuple[type, Any] | None = None,
) -> Estimate:
    """Rough: FLOPs of the run / this machine's matmul speed. Real training reaches only part of the matmul
    peak (small matrices, attention, optimizer, Python), so this usually comes out optimistic. The attention
    is the one training runs on the model of `architecture` (`training_attention`)."""
    layout = batch_layout(training_attention(config, device, precision, architecture))
    batches = TrainData(list(rows), workload.micro_batch, 1, 1, config.seed).epoch_micro_batches(0)
    tokens_per_epoch = sum(len(row.input_ids) for row in rows)
    per_epoch = epoch_flops(shape, batches, config.gradient_checkpointing, True, layout)
    train_flops = per_epoch * workload.tokens / max(tokens_per_epoch, 1)
    eval_batches = [
        eval_rows[i : i + workload.micro_batch] for i in range(0, len(eval_rows), workload.micro_batch)
    ]
    eval_flops = workload.evaluations * epoch_flops(shape, eval_batches, False, False, layout)
    speed = matmul_gflops(device, precision) * 1e9
    checkpoint_bytes = shape.lora_params * 12  # fp32 weights + AdamW's two moments
    return Estimate(
        method="analytic",
        setup_seconds=setup_seconds,
        train_seconds=train_flops / speed,
        eval_seconds=eval_flops / speed,
        checkpoint_seconds=(workload.checkpoints + 1) * disk_seconds(checkpoint_bytes),
        logging_seconds=bookkeeping.run_seconds(workload, config.log_every) if bookkeeping else 0.0,
    )


def training_attention(
    config: TrainConfig,
    device: str,
    precision: str,
    architecture: tuple[type, Any] | None,
    flash_attn: bool | None = None,
) -> str:
    """The attention training runs: what the run asks for (`pick_attention`) where the model of
    `architecture` (`twinbot.models.loading.causal_lm_class`: its class and config) supports it, else the
    fallback loading takes (`supported_attention`), e.g. whole-row sdpa for Gemma 3's sliding window.
    `flash_attn`: whether the machine planned for has flash-attn (None: this machine)."""
    dtype, target = DTYPES[precision], torch.device(device)
    requested = pick_attention(config.attn_implementation, target.type, dtype, config.packing, flash_attn)
    return supported_attention(requested, dtype, target, architecture, flash_attn)


def split_between_processes(estimate: Estimate, processes: int) -> Estimate:
    """The estimate of one process's speed for `processes` processes that share the training and the
    evaluation (setup, checkpoints and logging happen once, as in one process)."""
    if processes == 1:
        return estimate
    return estimate.model_copy(
        update={
            "train_seconds": estimate.train_seconds / processes,
            "eval_seconds": estimate.eval_seconds / processes,
        }
    )


def startup_line(
    config: TrainConfig,
    model: Any,
    rows: Sequence[Row],
    eval_rows: Sequence[Row],
    micro_batch: int,
    device: str,
    precision: str,
    processes: int = 1,
) -> str:
    """The one plan line `train` prints before it starts: the analytic estimate from the loaded model (about a
    second: the counts and a short matmul measurement). With several processes the work is split between
    them, each at the matmul speed measured in this one. Never raises: it is only information."""
    try:
        workload = count_workload(config, rows, eval_rows, micro_batch, processes=processes)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        estimate = analytic_estimate(
            config,
            workload,
            model_shape(model),
            rows,
            eval_rows,
            device,
            precision,
            setup_seconds=0.0,
            architecture=(type(base), base.config),
        )
    except Exception as exc:
        return f"plan: no estimate ({type(exc).__name__}: {one_line(exc, limit=160)})"
    seconds = split_between_processes(estimate, processes).total_seconds
    done = datetime.now() + timedelta(seconds=seconds)
    return (
        f"plan: at least {format_duration(seconds)} for {workload.steps:,} steps, "
        f"{workload.tokens:,} tokens (done {format_clock(done)} at the earliest; rough analytic lower bound "
        "from this machine's matmul speed; `twinbot plan --data DIR` measures it)"
    )
