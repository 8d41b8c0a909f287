"""Calibration: a short real training run of one preset on this machine, with the user's own rows.

After a warm-up that starts with the largest micro-batch (so the peak memory is the run's), it times
training micro-batches in an order spread over their lengths, then evaluation after an untimed first
evaluation, then one checkpoint save. Each part is timed on a minimum of micro-batches (beyond the budget
if need be, within limits); their spread gives the estimate's uncertainty.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import statistics
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
from twinbot.models.devices import is_out_of_memory

if TYPE_CHECKING:
    from accelerate import Accelerator

# Shares of the calibration budget: the warm-up, timed training, timed evaluation; the checkpoint save comes
# last. Each part is timed from its own start, so compiling at the first micro-batch does not eat the time
# of the measurement (a 30 s budget once timed one cold eval batch and predicted 2.8x the real run).
WARMUP_SHARE, TRAIN_SHARE, EVAL_SHARE = 0.1, 0.7, 0.15
# Untimed warm-up micro-batches: the first compiles (TORCH_COMPILE) and allocates, the second may recompile
# for a new length. Then each part times at least its minimum, past its share if need be, but never past
# MAX_OVERRUN times it; what could not be timed shows as the estimate's uncertainty.
WARMUP_MICRO_BATCHES, MIN_TRAIN_MICRO_BATCHES, MIN_EVAL_BATCHES = 2, 8, 3
MAX_OVERRUN = 3.0
# A timed micro-batch this many times slower per token than the median recompiled (TORCH_COMPILE, a new
# length): not the steady speed (seen: a first timed micro-batch of 140 s after 800 s of compiling, on a 2-core
# CPU at load 13).
OUTLIER_FACTOR = 5.0


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
    result.shortfall = shortfall(result, bool(eval_rows)) if result.status == "ok" else None
    return result


def run_micro_batch(
    model: Any, rows: list[Row], pad_id: int, accelerator: Accelerator, layout: BatchLayout
) -> int:
    """Forward + backward of one micro-batch exactly as `train.fit` does it; returns its real token count."""
    batch = make_batch(rows, pad_id, accelerator.device, layout)
    loss = forward_loss(model, batch)
    accelerator.backward(loss / max(batch.num_supervised, 1))
    return batch.num_tokens


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

    def done(count: int, least: int, since: float, share: float) -> bool:
        """Whether a part that began at `since` has timed enough: at least `least` micro-batches and its share
        of the budget, or at least one in MAX_OVERRUN times its share, or Ctrl-C came. Decided in every
        process alike (a collective): all stop at the same point."""
        spent = time.perf_counter() - since
        enough = count >= least and spent >= share * budget
        over = count >= 1 and (spent >= MAX_OVERRUN * share * budget or (stop is not None and stop.is_set()))
        return any_process(enough or over, accelerator)

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
    timed: list[tuple[float, int]] = []  # seconds and tokens of each timed training micro-batch
    eval_rates: list[float] = []  # seconds per token of each timed eval batch

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
        warm = result.warmup_micro_batches >= WARMUP_MICRO_BATCHES
        if warm and done(result.warmup_micro_batches, WARMUP_MICRO_BATCHES, started, WARMUP_SHARE):
            break
    optimizer.zero_grad(set_to_none=True)
    result.warmup_seconds = time.perf_counter() - started

    timed_start = time.perf_counter()
    while True:
        batch_start = time.perf_counter()
        tokens = run_micro_batch(model, next_batch(), pad_id, accelerator, layout)
        pending += 1
        if pending == config.gradient_accumulation_steps:
            optimizer_step()
            pending = 0
        synchronize(device)
        timed.append((time.perf_counter() - batch_start, tokens))
        if done(len(split_outliers(timed)[0]), MIN_TRAIN_MICRO_BATCHES, timed_start, TRAIN_SHARE):
            break
    steady, outliers = split_outliers(timed)
    result.train_seconds = sum(seconds for seconds, _ in steady)
    result.train_tokens = sum(tokens for _, tokens in steady)
    result.train_micro_batches = len(steady)
    result.train_relative_error = relative_standard_error([seconds / tokens for seconds, tokens in steady])
    # a recompilation (a new length under TORCH_COMPILE) is a one-off cost, as the warm-up's
    result.warmup_seconds += sum(seconds for seconds, _ in outliers)
    result.warmup_tokens += sum(tokens for _, tokens in outliers)
    result.warmup_micro_batches += len(outliers)
    optimizer.zero_grad(set_to_none=True)

    if not eval_rows:
        return
    eval_model = accelerator.unwrap_model(model, keep_torch_compile=False)
    chunks = [eval_rows[i : i + micro_batch] for i in range(0, len(eval_rows), micro_batch)]
    eval_batches = [chunks[i] for i in spread_order([sum(len(r.input_ids) for r in c) for c in chunks])]
    # the first evaluation is slower (new shapes, no grad mode, caches): an untimed warm-up, always
    evaluate(eval_model, eval_batches[0], micro_batch, pad_id, accelerator, layout)
    eval_start = time.perf_counter()
    for index in itertools.count(1):
        batch = eval_batches[index % len(eval_batches)]  # few eval batches: timed again, warm
        batch_start = time.perf_counter()
        evaluate(eval_model, batch, micro_batch, pad_id, accelerator, layout)
        synchronize(device)
        tokens = sum(len(row.input_ids) for row in batch)
        eval_rates.append((time.perf_counter() - batch_start) / tokens)
        result.eval_seconds += time.perf_counter() - batch_start
        result.eval_tokens += tokens
        if done(index, MIN_EVAL_BATCHES, eval_start, EVAL_SHARE):
            break
    result.eval_batches = len(eval_rates)
    result.eval_relative_error = relative_standard_error(eval_rates)


def split_outliers(timed: list[tuple[float, int]]) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """Timed micro-batches (seconds, tokens) split into the steady ones and those OUTLIER_FACTOR times slower
    per token than the median (a recompilation); with under 3 there is no telling, all count as steady."""
    if len(timed) < 3:
        return timed, []
    median = statistics.median(seconds / tokens for seconds, tokens in timed)
    slow = [(seconds, tokens) for seconds, tokens in timed if seconds / tokens > OUTLIER_FACTOR * median]
    return [batch for batch in timed if batch not in slow], slow


def relative_standard_error(values: Sequence[float]) -> float | None:
    """The standard error of the mean of `values` over the mean; None under two values."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / math.sqrt(len(values)) / mean if mean > 0 else None


def shortfall(result: Calibration, measured_eval: bool) -> str | None:
    """What a calibration could not time in MAX_OVERRUN times its shares of the budget, in words."""
    short = []
    if result.train_micro_batches < MIN_TRAIN_MICRO_BATCHES:
        short.append(f"{result.train_micro_batches} training micro-batch(es) of {MIN_TRAIN_MICRO_BATCHES}")
    if measured_eval and result.eval_batches < MIN_EVAL_BATCHES:
        short.append(f"{result.eval_batches} evaluation batch(es) of {MIN_EVAL_BATCHES}")
    if not short:
        return None
    return f"timed only {' and '.join(short)} within {MAX_OVERRUN:g}x the budget"


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
