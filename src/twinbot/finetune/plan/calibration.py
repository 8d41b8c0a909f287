"""Calibration: a short real training run of one preset on this machine, with the user's own rows.

After a warm-up that starts with the largest micro-batch (so the peak memory is the run's), it times
training micro-batches in an order spread over their lengths, then evaluation and one checkpoint save.
"""

from __future__ import annotations

import contextlib
import gc
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.finetune.batches import BatchLayout, TrainData, make_batch
from twinbot.finetune.checkpoint import TrainState, capture_rng_state, save_checkpoint
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.lora import auto_batch_size, load_training_model, make_optimizer, maybe_compile
from twinbot.finetune.plan.machine import PeakMemory, synchronize
from twinbot.finetune.plan.records import Calibration
from twinbot.finetune.rows import Row
from twinbot.finetune.runtime import any_process, make_accelerator
from twinbot.finetune.steps import evaluate, forward_loss

if TYPE_CHECKING:
    from accelerate import Accelerator

# Shares of the calibration budget: warm-up ends at the first, training measurement at the second, eval
# measurement at the third; the checkpoint save comes last.
WARMUP_SHARE, TRAIN_SHARE, EVAL_SHARE = 0.1, 0.8, 0.95


def calibrate(
    config: TrainConfig,
    rows: list[Row],
    eval_rows: list[Row],
    pad_id: int,
    budget_seconds: float,
    stop: Any = None,
) -> Calibration:
    """Train `config` for about `budget_seconds` on random micro-batches of `rows`, after a warm-up that
    includes the largest micro-batch (so the peak memory is the run's); then time evaluation and one
    checkpoint save. Out of memory and other failures come back as a status, never as an exception.
    In each of several training processes (`twinbot.finetune.workers`) it measures one process's share of the
    run, gradient all-reduce and waiting for the slowest process included; `stop` (an event, Ctrl-C)
    ends the measurement early."""
    accelerator, precision = make_accelerator(config)
    device = accelerator.device
    result = Calibration(
        status="ok",
        device=str(device),
        precision=precision.name,
        budget_seconds=budget_seconds,
        processes=accelerator.num_processes,
    )
    peak = PeakMemory(device)
    peft_model: Any = None
    model: Any = None
    optimizer: Any = None
    try:
        with peak:
            started = time.perf_counter()
            peft_model, layout = load_training_model(config, accelerator.device, precision)
            if config.batch_size == "auto":
                micro_batch = auto_batch_size(peft_model, rows, accelerator, pad_id, layout)
            else:
                micro_batch = config.batch_size
            result.micro_batch = micro_batch
            trainable = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = make_optimizer(trainable, config)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
            compiled = maybe_compile(peft_model, config, device.type)
            model, optimizer = accelerator.prepare(compiled, optimizer)
            model.train()
            result.load_seconds = time.perf_counter() - started
            _measure(
                config,
                result,
                model,
                optimizer,
                rows,
                eval_rows,
                micro_batch,
                pad_id,
                accelerator,
                layout,
                stop,
            )
            result.checkpoint_seconds = _time_checkpoint(peft_model, optimizer, scheduler, accelerator)
    except TwinbotError as exc:  # e.g. the micro-batch probe: not even one row fits
        result.status = "out_of_memory" if "memory" in exc.message else "failed"
        result.detail = exc.message
    except Exception as exc:
        if accelerator.num_processes > 1:
            raise  # the other processes wait in a collective: the process must end, and the run with it
        if is_out_of_memory(exc):
            result.status, result.detail = "out_of_memory", "out of memory"
        else:
            result.status, result.detail = "failed", f"{type(exc).__name__}: {one_line(exc, limit=160)}"
    finally:
        if accelerator.num_processes > 1:
            # together, while the model lives: freeing a DDP model whose peer has already gone can hang in
            # gloo's teardown (seen: ~ProcessGroupGloo joining its threads)
            accelerator.wait_for_everyone()
            accelerator.end_training()
        peft_model = model = optimizer = None
        with contextlib.suppress(Exception):
            accelerator.free_memory()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result.peak_memory_bytes = peak.peak or None
    result.peak_memory_kind = peak.kind
    if result.status == "ok" and result.train_tokens == 0:
        result.status, result.detail = "failed", "no micro-batch could be timed"
    return result


def run_micro_batch(
    model: Any, rows: list[Row], pad_id: int, accelerator: Accelerator, layout: BatchLayout
) -> int:
    """Forward + backward of one micro-batch exactly as `train.fit` does it; returns its real token count."""
    batch = make_batch(rows, pad_id, accelerator.device, layout)
    loss = forward_loss(model, batch)
    accelerator.backward(loss / max(batch.num_supervised, 1))
    return batch.num_tokens


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _measure(
    config: TrainConfig,
    result: Calibration,
    model: Any,
    optimizer: Any,
    rows: list[Row],
    eval_rows: list[Row],
    micro_batch: int,
    pad_id: int,
    accelerator: Accelerator,
    layout: BatchLayout,
    stop: Any = None,
) -> None:
    device = accelerator.device
    budget = result.budget_seconds

    def past(share: float) -> bool:
        """Whether the budget's share is spent (or Ctrl-C came) in any process: all stop at the same point."""
        spent = time.perf_counter() - started >= share * budget or (stop is not None and stop.is_set())
        return any_process(spent, accelerator)

    trainable = [p for p in model.parameters() if p.requires_grad]
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    batches = TrainData(rows, micro_batch, 1, 1, config.seed).epoch_micro_batches(0)
    sizes = [sum(len(row.input_ids) for row in batch) for batch in batches]
    order = spread_order(sizes)
    largest = max(order, key=lambda i: len(batches[i]) * max(len(row.input_ids) for row in batches[i]))
    order.remove(largest)
    order.insert(0, largest)

    def optimizer_step() -> None:
        accelerator.clip_grad_norm_(trainable, max_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    position = pending = 0

    def next_batch() -> list[Row]:
        """Each process its own micro-batches, as in training: a step waits for the slowest process."""
        nonlocal position
        index = position * accelerator.num_processes + accelerator.process_index
        position += 1
        return batches[order[index % len(order)]]

    # warm-up (not timed): the largest micro-batch first, an optimizer step, then until the warm-up share
    while True:
        result.warmup_tokens += run_micro_batch(model, next_batch(), pad_id, accelerator, layout)
        result.warmup_micro_batches += 1
        if result.warmup_micro_batches == 1:
            optimizer_step()
        synchronize(device)
        if past(WARMUP_SHARE):
            break
    optimizer.zero_grad(set_to_none=True)
    result.warmup_seconds = time.perf_counter() - started

    timed_start = time.perf_counter()
    while True:
        result.train_tokens += run_micro_batch(model, next_batch(), pad_id, accelerator, layout)
        result.train_micro_batches += 1
        pending += 1
        if pending == config.gradient_accumulation_steps:
            optimizer_step()
            pending = 0
        synchronize(device)
        if past(TRAIN_SHARE):
            break
    result.train_seconds = time.perf_counter() - timed_start
    optimizer.zero_grad(set_to_none=True)

    if not eval_rows:
        return
    eval_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    chunks = [eval_rows[i : i + micro_batch] for i in range(0, len(eval_rows), micro_batch)]
    eval_batches = [chunks[i] for i in spread_order([sum(len(r.input_ids) for r in c) for c in chunks])]
    # an untimed warm-up unless the training part already used up its share (slow micro-batches)
    if len(eval_batches) > 1 and not past((TRAIN_SHARE + EVAL_SHARE) / 2):
        evaluate(eval_model, eval_batches[0], micro_batch, pad_id, accelerator, layout)
        eval_batches = eval_batches[1:]
    for batch in eval_batches:
        eval_start = time.perf_counter()
        evaluate(eval_model, batch, micro_batch, pad_id, accelerator, layout)
        synchronize(device)
        result.eval_seconds += time.perf_counter() - eval_start
        result.eval_tokens += sum(len(row.input_ids) for row in batch)
        if past(EVAL_SHARE):
            break


def spread_order(sizes: Sequence[int]) -> list[int]:
    """Indices in an order whose every prefix spreads over the whole range of `sizes`: the van der Corput
    sequence (1/2, 1/4, 3/4, 1/8, ...) over the indices sorted by size. A calibration that only gets
    through a few micro-batches then still sees short and long ones in their proportions, which a random
    sample of a few does not guarantee (per-token cost depends on length)."""
    count = len(sizes)
    by_size = sorted(range(count), key=lambda i: (sizes[i], i))
    order: list[int] = []
    seen: set[int] = set()
    k = 1
    while len(order) < count and k < 4 * count:
        fraction, denominator, rest = 0.0, 1.0, k
        while rest:
            denominator *= 2
            rest, bit = divmod(rest, 2)
            fraction += bit / denominator
        index = by_size[min(count - 1, int(fraction * count))]
        if index not in seen:
            seen.add(index)
            order.append(index)
        k += 1
    return order + [i for i in by_size if i not in seen]


def _time_checkpoint(peft_model: Any, optimizer: Any, scheduler: Any, accelerator: Accelerator) -> float:
    """One real checkpoint save (adapter, optimizer, scheduler, RNG) into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="twinbot-plan-") as tmp:
        started = time.perf_counter()
        save_checkpoint(
            Path(tmp),
            model=peft_model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=accelerator.scaler,
            rng_states=[capture_rng_state()],
            state=TrainState(step=1),
            keep=1,
        )
        return time.perf_counter() - started
