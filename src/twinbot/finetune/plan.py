"""`twinbot plan`: how long training takes, measured on this machine with the user's own data.

Wall time is (tokens through the model) x (seconds per token). Gradient accumulation only decides how many
micro-batches make one optimizer step: every token still goes through one forward and one backward pass per
epoch, so it changes the number of steps and not the work. What changes the seconds per token is precision,
packing, gradient checkpointing, micro-batch size and kernels, and those are what calibration measures.

For each preset: count the exact tokens after templating and masking (the same rows `train` builds), run a
short real training run on micro-batches spread over the lengths (after a warm-up) to measure seconds per
token and peak memory, time evaluation and one checkpoint save, and extrapolate to the whole run. Without
calibration, an analytic estimate divides the run's FLOPs by this machine's measured matmul speed (rough).
docs/plan.md explains the arithmetic.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import torch
from pydantic import BaseModel, ConfigDict, computed_field

from twinbot.errors import TwinbotError, one_line
from twinbot.finetune import workers
from twinbot.finetune.config import PRESETS, TrainConfig, resolve_train_config
from twinbot.finetune.rows import (
    IGNORE_INDEX,
    Row,
    TokenizedSample,
    load_samples,
    one_sample_rows,
    pack_rows,
    row_samples,
    shared_prefix_row,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

    from twinbot.finetune.batches import BatchLayout

PRESET_ORDER: tuple[str, ...] = tuple(PRESETS)
DEFAULT_CALIBRATE_SECONDS = 60.0
# Forward-only cost per token as a share of a training step's, when evaluation could not be timed.
EVAL_COST_SHARE = 1 / 3
# Shares of the calibration budget: warm-up ends at the first, training measurement at the second, eval
# measurement at the third; the checkpoint save comes last.
WARMUP_SHARE, TRAIN_SHARE, EVAL_SHARE = 0.1, 0.8, 0.95
COMPARE_FILE = "compare.json"
QUALITY_TOLERANCE = 0.02  # eval-loss difference (nats per supervised token) treated as the same quality
SECONDS_PER_HOUR = 3600.0

Status = Literal["ok", "out_of_memory", "failed"]
Progress = Callable[[str], None]


# --- counting --------------------------------------------------------------------------------------------


def micro_batches_per_epoch(rows: int, micro_batch: int) -> int:
    """A micro-batch is `micro_batch` samples (packing off) or packed rows (packing on); the last may be short."""
    return math.ceil(rows / micro_batch)


def optimizer_steps(
    rows: int, micro_batch: int, gradient_accumulation_steps: int, epochs: float, max_steps: int | None = None
) -> int:
    """ceil(micro-batches per epoch / GA) x epochs, as `train` counts them (MAX_STEPS wins when set).

    The origin note's 63,000 samples / GA 16 = 3,938 steps; its 984 for GA 64 is rounded down, but the
    last, partial step still runs: 985.
    """
    steps_per_epoch = math.ceil(micro_batches_per_epoch(rows, micro_batch) / gradient_accumulation_steps)
    return max_steps or max(1, math.ceil(epochs * steps_per_epoch))


def cadence(every: int, total_steps: int) -> int:
    """`train`'s EVAL_EVERY / SAVE_EVERY: 0 means about 10 times per run."""
    return every or math.ceil(total_steps / 10)


def events(every: int, total_steps: int) -> int:
    """How many evaluations / checkpoints a run makes: every `every` steps, and always at the last step."""
    return total_steps // every + (1 if total_steps % every else 0)


def supervised_count(row: Row) -> int:
    return len(row.target_ids) - row.target_ids.count(IGNORE_INDEX)


class Workload(BaseModel):
    """What one preset's run does, counted exactly from its rows."""

    model_config = ConfigDict(frozen=True)

    micro_batch: int
    micro_batch_note: str | None = None
    processes: int = 1  # data-parallel CPU processes, each with `micro_batch` rows per forward pass
    gradient_accumulation_steps: int
    rows: int  # samples (packing off) or packed rows per epoch
    micro_batches_per_epoch: int
    steps: int
    tokens: int  # real (non-padding) tokens through forward + backward, whole run
    supervised_tokens: int
    evaluations: int
    eval_tokens_per_evaluation: int
    checkpoints: int


def count_workload(
    config: TrainConfig,
    rows: Sequence[Row],
    eval_rows: Sequence[Row],
    micro_batch: int,
    micro_batch_note: str | None = None,
    processes: int = 1,
) -> Workload:
    """Steps, tokens and events of a run exactly as `train` schedules it (same shuffles, same windows), with
    `processes` data-parallel processes (each step takes a micro-batch per process per accumulation step)."""
    from twinbot.finetune.batches import TrainData

    window = config.gradient_accumulation_steps * processes
    data = TrainData(list(rows), micro_batch, window, processes, config.seed)
    steps = config.max_steps or max(1, math.ceil(config.epochs * data.steps_per_epoch))
    lengths = {id(row): len(row.input_ids) for row in rows}
    supervised = {id(row): supervised_count(row) for row in rows}
    tokens = supervised_tokens = 0
    for step in range(steps):
        for batch in data.step_micro_batches(step):
            for row in batch:
                tokens += lengths[id(row)]
                supervised_tokens += supervised[id(row)]
    return Workload(
        micro_batch=micro_batch,
        micro_batch_note=micro_batch_note,
        processes=processes,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        rows=len(rows),
        micro_batches_per_epoch=micro_batches_per_epoch(len(rows), micro_batch),
        steps=steps,
        tokens=tokens,
        supervised_tokens=supervised_tokens,
        evaluations=events(cadence(config.eval_every, steps), steps) if eval_rows else 0,
        eval_tokens_per_evaluation=sum(len(row.input_ids) for row in eval_rows),
        checkpoints=events(cadence(config.save_every, steps), steps),
    )


# --- the data, tokenized once ----------------------------------------------------------------------------


def max_tokens_for(config: TrainConfig) -> int:
    """`train`'s per-sample limit: a packed row holds whole samples, so no sample may be longer than a row."""
    return min(config.max_seq_len, config.row_tokens) if config.packing else config.max_seq_len


def rows_for(config: TrainConfig, tokenized: Sequence[TokenizedSample]) -> list[Row]:
    return pack_rows(tokenized, config.row_tokens) if config.packing else one_sample_rows(tokenized)


def check_data_dir(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise TwinbotError("no training data: pass --data DIR (a folder made by `twinbot prepare`)")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise TwinbotError("data folder not found; pass the folder made by `twinbot prepare`", data_dir)
    if not (data_dir / "train.jsonl").is_file():
        raise TwinbotError(
            "no train.jsonl here, so this is not a folder made by `twinbot prepare`; "
            "run `twinbot prepare EXPORTS --me YOU --out DIR` and pass that DIR",
            data_dir,
        )
    return data_dir


class TokenizedData:
    """train.jsonl / eval.jsonl read once and tokenized once per sample-length limit, with the time it took."""

    def __init__(self, data_dir: Path, tokenizer: Any) -> None:
        self.data_dir = data_dir
        self.tokenizer = tokenizer
        started = time.perf_counter()
        self.train_path = data_dir / "train.jsonl"
        self.train_samples = load_samples(self.train_path)
        if not self.train_samples:
            raise TwinbotError(
                "train.jsonl has no samples; run `twinbot prepare` again with more data", self.train_path
            )
        eval_path = data_dir / "eval.jsonl"
        self.eval_samples = load_samples(eval_path) if eval_path.is_file() else []
        self.read_seconds = time.perf_counter() - started
        self._train: dict[int, tuple[list[TokenizedSample], float]] = {}
        self._eval: dict[tuple[int, int], tuple[list[TokenizedSample], float]] = {}

    @property
    def tokenized_limits(self) -> set[int]:
        return set(self._train)

    def train(self, max_tokens: int) -> tuple[list[TokenizedSample], float]:
        """Tokenized train samples (those with something supervised left) and the seconds it took."""
        from twinbot.finetune.rows import tokenize_samples

        if max_tokens not in self._train:
            started = time.perf_counter()
            tokenized = tokenize_samples(self.train_samples, self.tokenizer, max_tokens)
            if not any(sample.num_supervised for sample in tokenized):
                raise TwinbotError(
                    f"no supervised tokens: no sample keeps any of the persona's reply within {max_tokens} "
                    "tokens; raise MAX_SEQ_LEN (and ROW_TOKENS) or check the data",
                    self.train_path,
                )
            self._train[max_tokens] = (tokenized, time.perf_counter() - started)
        return self._train[max_tokens]

    def eval(self, max_tokens: int, limit: int) -> tuple[list[TokenizedSample], float]:
        from twinbot.finetune.rows import tokenize_samples

        key = (max_tokens, limit)
        if key not in self._eval:
            started = time.perf_counter()
            samples = self.eval_samples[:limit] if limit else self.eval_samples
            self._eval[key] = (
                tokenize_samples(samples, self.tokenizer, max_tokens),
                time.perf_counter() - started,
            )
        return self._eval[key]


# --- calibration -----------------------------------------------------------------------------------------


class Calibration(BaseModel):
    """A short real training run of one preset on a random sample of its micro-batches."""

    status: Status
    detail: str | None = None  # one line when status is not ok
    device: str
    precision: str | None = None
    micro_batch: int | None = None  # rows per forward pass, per process
    processes: int = 1  # measured together, as the run trains; the figures are one process's (rank 0)
    budget_seconds: float
    load_seconds: float = 0.0  # model load, LoRA, micro-batch probe
    warmup_micro_batches: int = 0
    warmup_tokens: int = 0
    warmup_seconds: float = 0.0  # includes the first optimizer step (AdamW allocates its state)
    train_micro_batches: int = 0
    train_tokens: int = 0  # real tokens in the timed micro-batches
    train_seconds: float = 0.0
    eval_tokens: int = 0
    eval_seconds: float = 0.0
    checkpoint_seconds: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: Literal["gpu", "rss"] = "rss"  # GPU memory allocated, or the process's resident memory

    @property
    def seconds_per_token(self) -> float:
        return self.train_seconds / self.train_tokens

    @property
    def warmup_penalty_seconds(self) -> float:
        """What the warm-up cost beyond the steady speed: a real run pays it once too."""
        return max(0.0, self.warmup_seconds - self.warmup_tokens * self.seconds_per_token)


def run_micro_batch(
    model: Any, rows: list[Row], pad_id: int, accelerator: Accelerator, layout: BatchLayout
) -> int:
    """Forward + backward of one micro-batch exactly as `train.fit` does it; returns its real token count."""
    from twinbot.finetune.batches import make_batch
    from twinbot.finetune.steps import forward_loss

    batch = make_batch(rows, pad_id, accelerator.device, layout)
    loss = forward_loss(model, batch)
    accelerator.backward(loss / max(batch.num_supervised, 1))
    return batch.num_tokens


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class PeakMemory:
    """Peak memory of one calibration: allocated GPU memory on CUDA, else the process's resident memory,
    sampled by a background thread (ru_maxrss never goes down, so it can't tell presets apart)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> Literal["gpu", "rss"]:
        return "gpu" if self.device.type == "cuda" else "rss"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _rss_bytes() is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_bytes() or 0)
            if self._stop.wait(0.02):
                return

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:  # no way to read the current resident memory: the process's peak so far
            from twinbot.finetune.metrics import peak_memory_bytes

            with contextlib.suppress(ImportError):
                self.peak = peak_memory_bytes(self.device.type)


def _rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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
    from twinbot.finetune.lora import auto_batch_size, load_training_model, make_optimizer, maybe_compile
    from twinbot.finetune.runtime import make_accelerator

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
    from twinbot.finetune.batches import TrainData
    from twinbot.finetune.runtime import any_process
    from twinbot.finetune.steps import evaluate

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
        _sync(device)
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
        _sync(device)
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
        _sync(device)
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
    from twinbot.finetune.checkpoint import TrainState, capture_rng_state, save_checkpoint

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


# --- estimates -------------------------------------------------------------------------------------------


class Estimate(BaseModel):
    """Seconds a whole run takes, by part."""

    method: Literal["calibrated", "analytic"]
    setup_seconds: float  # reading + tokenizing the data, loading the model
    train_seconds: float
    eval_seconds: float
    checkpoint_seconds: float
    logging_seconds: float = 0.0  # metrics.csv / TensorBoard rows and loss plots
    extrapolated_to: str | None = None  # a --target-gpu name: scaled by published peak ratios

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_seconds(self) -> float:
        return (
            self.setup_seconds
            + self.train_seconds
            + self.eval_seconds
            + self.checkpoint_seconds
            + self.logging_seconds
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hours(self) -> float:
        return self.total_seconds / SECONDS_PER_HOUR

    @computed_field  # type: ignore[prop-decorator]
    @property
    def days(self) -> float:
        return self.hours / 24


@dataclass(frozen=True)
class Bookkeeping:
    """What `train` spends besides the model: opening the logs, one metrics row, one loss plot."""

    open_seconds: float = 0.0
    row_seconds: float = 0.0
    plot_seconds: float = 0.0

    def run_seconds(self, workload: Workload, log_every: int) -> float:
        """Logs are opened once, a row is written every LOG_EVERY steps and at each evaluation, the loss is
        plotted after each evaluation but the last, and at the end."""
        rows = workload.steps if log_every == 1 else workload.steps // log_every + workload.evaluations
        plots = max(workload.evaluations, 1)
        return self.open_seconds + rows * self.row_seconds + plots * self.plot_seconds


@functools.lru_cache(maxsize=1)
def measure_bookkeeping() -> Bookkeeping:
    """`train`'s own MetricsLog, timed in a temporary folder (the first plot pays matplotlib's import)."""
    from twinbot.finetune.metrics import MetricsLog, MetricsRow

    with tempfile.TemporaryDirectory(prefix="twinbot-plan-") as tmp:
        started = time.perf_counter()
        log = MetricsLog(Path(tmp))
        opened = time.perf_counter()
        count = 5
        for step in range(1, count + 1):
            row = MetricsRow(
                step=step,
                epoch=step / count,
                tokens=step * 100,
                supervised_tokens=step * 10,
                computed_tokens=step * 80,
                train_loss=2.0,
                eval_loss=2.1,
                eval_ppl=8.2,
                lr=1e-4,
                tokens_per_s=100.0,
                elapsed_s=float(step),
            )
            log.log(row)
        logged = time.perf_counter()
        log.plot()
        first_plot = time.perf_counter()
        log.plot()
        second_plot = time.perf_counter()
        log.close()
    plot = second_plot - first_plot
    return Bookkeeping(
        open_seconds=opened - started + max(0.0, (first_plot - logged) - plot),
        row_seconds=(logged - opened) / count,
        plot_seconds=plot,
    )


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
    return Estimate(
        method="calibrated",
        setup_seconds=setup_seconds + calibration.load_seconds + calibration.warmup_penalty_seconds,
        train_seconds=workload.tokens * per_token,
        eval_seconds=workload.evaluations * workload.eval_tokens_per_evaluation * eval_per_token,
        checkpoint_seconds=(workload.checkpoints + 1) * save,
        logging_seconds=bookkeeping.run_seconds(workload, log_every) if bookkeeping else 0.0,
    )


# --- the analytic estimate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """Matmul parameters by role (embeddings do no matmul) and the attention width."""

    body_params: int  # frozen projections every token goes through (attention and MLP)
    head_params: int  # output projection: only at supervised positions (logits_to_keep)
    lora_params: int  # trainable LoRA A and B matrices
    layers: int
    attention_dim: int  # query width per layer (heads x head size)


def model_shape(model: Any, lora_r: int = 0, lora_targets: str | list[str] = "all-linear") -> ModelShape:
    """Count a (PEFT or plain, possibly meta-device) model's matmul parameters. A plain model gets the LoRA
    that `apply_lora(r=lora_r, target_modules=lora_targets)` would add."""
    head = model.get_output_embeddings()
    linears = [
        (name.split("."), module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    ]
    is_lora = [("lora_A" in parts or "lora_B" in parts) for parts, _ in linears]
    body = sum(m.weight.numel() for (_, m), lora_part in zip(linears, is_lora, strict=True) if not lora_part)
    if any(is_lora):  # a PEFT model: count its own LoRA matrices
        lora = sum(m.weight.numel() for (_, m), lora_part in zip(linears, is_lora, strict=True) if lora_part)
    else:
        lora = sum(
            lora_r * (m.in_features + m.out_features)
            for parts, m in linears
            if lora_targets == "all-linear" or parts[-1] in lora_targets
        )
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    head_dim = getattr(text, "head_dim", None) or (
        int(getattr(text, "hidden_size", 0) or 0) // heads if heads else 0
    )
    return ModelShape(
        body_params=body,
        head_params=head.weight.numel() if head is not None else 0,
        lora_params=lora,
        layers=layers,
        attention_dim=heads * int(head_dim),
    )


def shape_of_spec(spec: str | None, lora_r: int, lora_targets: str | list[str]) -> ModelShape:
    """The shape of a base model from its config alone (built on the meta device: no weights loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from twinbot.models.loading import resolve_model

    resolved = resolve_model(spec)
    try:
        config = AutoConfig.from_pretrained(resolved)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:
        raise TwinbotError(
            f"cannot read the model's architecture ({one_line(exc, limit=160)}); pass --model with a local folder"
        ) from exc
    return model_shape(model, lora_r, lora_targets)


def micro_batch_flops(
    shape: ModelShape,
    width: int,
    rows: int,
    supervised: int,
    checkpointing: bool,
    train: bool,
    attention_pairs: int | None = None,
) -> float:
    """FLOPs of one micro-batch of `rows` rows padded to `width` tokens.

    Forward: 2 x params per token through the frozen projections and LoRA, attention scores and values
    (4 x query width per (query, key) pair and layer, halved for the causal mask), and the output projection
    at supervised positions only. `attention_pairs` is the sum of squared attended lengths: rows x width^2
    when attention spans whole rows (sdpa's block-diagonal mask), the sum of squared sample lengths when
    it runs per sample (packed_sdpa, flash-attention). Backward: frozen weights need gradients for their
    inputs only (2 x params, no weight gradients); LoRA needs both (4 x); attention twice its forward.
    Checkpointing recomputes the forward once more.
    """
    tokens = rows * width
    pairs = attention_pairs if attention_pairs is not None else rows * width * width
    linear = 2 * (shape.body_params + shape.lora_params) * tokens
    attention = 2 * shape.layers * shape.attention_dim * pairs
    head = 2 * shape.head_params * supervised
    forward = linear + attention + head
    if not train:
        return forward
    backward = 2 * shape.body_params * tokens + 4 * shape.lora_params * tokens + 2 * attention + head
    recompute = linear + attention if checkpointing else 0
    return forward + backward + recompute


def epoch_flops(
    shape: ModelShape,
    batches: Sequence[Sequence[Row]],
    checkpointing: bool,
    train: bool,
    layout: BatchLayout = "rows",
) -> float:
    total = 0.0
    for batch in batches:
        if layout == "rows":
            width, rows, pairs = max(len(row.input_ids) for row in batch), len(batch), None
        else:  # one padding-free row, attention within each sample (over all of it, shared beginning too)
            shared = layout == "shared_prefix"
            width = len(shared_prefix_row(batch)) if shared else sum(len(row) for row in batch)
            rows = 1
            pairs = sum(len(sample) ** 2 for row in batch for sample in row_samples(row))
        supervised = sum(supervised_count(row) for row in batch)
        total += micro_batch_flops(shape, width, rows, supervised, checkpointing, train, pairs)
    return total


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=8)
def matmul_gflops(device: str, precision: str, seconds: float = 0.25, size: int | None = None) -> float:
    """This machine's dense matmul speed (GFLOP/s) in `precision` (fp32 | bf16 | fp16): a short loop of
    size x size products (default 1024 on CPU, 4096 on GPUs)."""
    target = torch.device(device)
    size = size or (1024 if target.type == "cpu" else 4096)
    # a private generator: `train` calls this after seeding, and must draw the same dropout masks as without
    generator = torch.Generator(device=target).manual_seed(0)
    a = torch.randn(size, size, device=target, generator=generator).to(_DTYPES[precision])
    b = torch.randn(size, size, device=target, generator=generator).to(_DTYPES[precision])
    out = torch.matmul(a, b)  # warm-up
    _sync(target)
    count, started = 0, time.perf_counter()
    while True:
        torch.matmul(a, b, out=out)
        count += 1
        if count % 4 == 0:
            _sync(target)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return 2 * size**3 * count / elapsed / 1e9


def disk_seconds(num_bytes: int) -> float:
    """Time to write `num_bytes` (checkpoint size) with torch.save, measured on a 16 MB sample."""
    sample = torch.zeros(4 * 1024 * 1024)  # 16 MiB of fp32
    with tempfile.TemporaryDirectory(prefix="twinbot-plan-") as tmp:
        started = time.perf_counter()
        torch.save(sample, Path(tmp) / "sample.pt")
        elapsed = time.perf_counter() - started
    return elapsed * num_bytes / sample.numel() / 4


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
) -> Estimate:
    """Rough: FLOPs of the run / this machine's matmul speed. Real training reaches only part of the matmul
    peak (small matrices, attention, optimizer, Python), so this usually comes out optimistic."""
    from twinbot.finetune.batches import TrainData, batch_layout
    from twinbot.finetune.lora import pick_attention

    attention = pick_attention(
        config.attn_implementation, torch.device(device).type, _DTYPES[precision], config.packing
    )
    layout = batch_layout(attention)
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
        estimate = analytic_estimate(
            config, workload, model_shape(model), rows, eval_rows, device, precision, setup_seconds=0.0
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


# --- target GPUs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """Published dense peaks (TFLOP/s, no sparsity; 16-bit with fp32 accumulation, as training uses)."""

    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float
    aliases: tuple[str, ...]


GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("RTX 3060", 25.6, 12.7, 12, ("rtx3060", "3060", "geforcertx3060")),
    GpuSpec("RTX 3090", 71.0, 35.6, 24, ("rtx3090", "3090", "geforcertx3090")),
    GpuSpec("RTX 4090", 165.2, 82.6, 24, ("rtx4090", "4090", "geforcertx4090")),
    GpuSpec("L4", 121.0, 30.3, 24, ("l4", "nvidial4")),
    GpuSpec("A100 80GB", 312.0, 19.5, 80, ("a100", "a10080gb", "a100sxm", "nvidiaa100", "a100sxm480gb")),
    GpuSpec("H100 SXM", 989.4, 66.9, 80, ("h100", "h100sxm", "nvidiah100", "h10080gbhbm3", "h100sxm5")),
)


def _gpu_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_gpu(name: str) -> GpuSpec | None:
    key = _gpu_key(name)
    for gpu in GPUS:
        if key in gpu.aliases or key == _gpu_key(gpu.name):
            return gpu
    for gpu in GPUS:  # a device name as torch reports it, e.g. "NVIDIA GeForce RTX 4090"
        if any(alias in key for alias in gpu.aliases if len(alias) > 3):
            return gpu
    return None


def target_gpu(name: str) -> GpuSpec:
    gpu = find_gpu(name)
    if gpu is None:
        known = ", ".join(g.name for g in GPUS)
        raise TwinbotError(f"--target-gpu {name!r}: unknown GPU; use one of {known}")
    return gpu


def peak_tflops(gpu: GpuSpec, precision: str) -> float:
    return gpu.fp32_tflops if precision == "fp32" else gpu.bf16_tflops


def scale_to_gpu(estimate: Estimate, here_tflops: float, gpu: GpuSpec, precision_there: str) -> Estimate:
    """Compute time scaled by (this machine's speed / the target's published peak); setup and saves as here."""
    ratio = here_tflops / peak_tflops(gpu, precision_there)
    return estimate.model_copy(
        update={
            "train_seconds": estimate.train_seconds * ratio,
            "eval_seconds": estimate.eval_seconds * ratio,
            "extrapolated_to": gpu.name,
        }
    )


def here_tflops(device: str, precision: str) -> tuple[float, str]:
    """This machine's speed in `precision`: a listed GPU's published peak, else the measured matmul speed."""
    target = torch.device(device)
    if target.type == "cuda":
        gpu = find_gpu(torch.cuda.get_device_name(target))
        if gpu is not None:
            return peak_tflops(gpu, precision), f"published peak of this {gpu.name}"
    return matmul_gflops(device, precision) / 1000, "measured matmul speed of this machine"


# --- quality ---------------------------------------------------------------------------------------------


class QualityResult(BaseModel):
    """One preset's measured quality in `compare.json`."""

    model_config = ConfigDict(extra="ignore")

    preset: str
    eval_loss: float | None = None  # mean cross-entropy per supervised eval token of the trained adapter
    style_distance: float | None = (
        None  # lower = closer to the persona's style (defined by `twinbot compare`)
    )
    run_dir: str | None = None


class CompareFile(BaseModel):
    """DATA/compare.json, written by `twinbot compare`: measured quality per preset on this data."""

    model_config = ConfigDict(extra="ignore")

    twinbot_compare: Literal[1]
    train_sha256: str  # sha256 of the train.jsonl the runs trained on
    results: list[QualityResult]


class Quality(BaseModel):
    measured: bool
    source: str | None = None
    note: str
    results: list[QualityResult] = []


NOT_MEASURED = (
    "quality not measured yet: train the candidates, `twinbot eval` each RUN, then `twinbot compare RUN ...` "
    f"writes DATA/{COMPARE_FILE} for the next plan"
)


def read_quality(data_dir: Path) -> Quality:
    """DATA/compare.json when present and made from this train.jsonl; otherwise a note saying why not."""
    path = data_dir / COMPARE_FILE
    if not path.is_file():
        return Quality(measured=False, note=NOT_MEASURED)
    try:
        compare = CompareFile.model_validate_json(path.read_bytes())
    except (OSError, pydantic.ValidationError):
        return Quality(measured=False, note=f"{path} is not a `twinbot compare` result; {NOT_MEASURED}")
    from twinbot.runs import file_sha256

    if compare.train_sha256 != file_sha256(data_dir / "train.jsonl"):
        return Quality(
            measured=False, note=f"{path} was measured on other data (train.jsonl changed); {NOT_MEASURED}"
        )
    results = [r for r in compare.results if r.eval_loss is not None or r.style_distance is not None]
    if not results:
        return Quality(measured=False, note=f"{path} holds no measured results; {NOT_MEASURED}")
    return Quality(measured=True, source=str(path), note=f"measured quality from {path}", results=results)


# --- the plan --------------------------------------------------------------------------------------------


class PresetSettings(BaseModel):
    """The settings of a preset that change the work per token or the step count."""

    precision: str  # what this machine runs: fp32 | bf16 | fp16
    use_fp16: bool
    gradient_checkpointing: bool
    packing: bool
    row_tokens: int
    batch_size: int | Literal["auto"]
    gradient_accumulation_steps: int
    epochs: float
    max_steps: int | None


class PresetPlan(BaseModel):
    preset: str
    status: Status
    detail: str | None = None
    settings: PresetSettings
    workload: Workload | None = None
    calibration: Calibration | None = None
    estimate: Estimate | None = None  # on this machine
    target_estimate: Estimate | None = None  # --target-gpu
    time_saved: float | None = None  # share of baseline's time saved (of the shown estimate)
    peak_memory_bytes: int | None = None
    start: datetime
    done: datetime | None = None

    @property
    def shown(self) -> Estimate | None:
        return self.target_estimate or self.estimate


class DataSummary(BaseModel):
    data_dir: str
    train_samples: int
    eval_samples: int
    samples_used: int  # train samples with a supervised reply left after truncation
    tokens_per_epoch: int
    supervised_tokens_per_epoch: int


class TargetGpu(BaseModel):
    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float
    scaled_from: str  # which speed of this machine the ratio uses


class Recommendation(BaseModel):
    preset: str | None
    reason: str


class Plan(BaseModel):
    twinbot_plan: Literal[1] = 1
    method: Literal["calibrated", "analytic"]
    model: str
    device: str
    calibrate_seconds: float | None
    data: DataSummary
    presets: list[PresetPlan]
    target_gpu: TargetGpu | None = None
    quality: Quality
    recommendation: Recommendation
    start: datetime


def parse_presets(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PRESETS]
    if unknown or not names:
        raise TwinbotError(
            f"--presets: unknown preset {', '.join(repr(n) for n in unknown) or '(none)'}; "
            f"use a comma-separated list of {', '.join(PRESET_ORDER)}"
        )
    return list(dict.fromkeys(names))


def resolve_preset_configs(
    presets: Sequence[str],
    data_dir: Path,
    model: str | None,
    epochs: float | None,
    yaml_path: Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = Path(".env"),
) -> dict[str, TrainConfig]:
    """Each preset's settings exactly as `twinbot train --preset P` would resolve them here."""
    return {
        preset: resolve_train_config(
            cli={"preset": preset, "data_dir": data_dir, "base_model": model, "epochs": epochs},
            yaml_path=yaml_path,
            overrides=overrides,
            environ=environ,
            dotenv_path=dotenv_path,
        ).config
        for preset in presets
    }


def make_plan(
    configs: Mapping[str, TrainConfig],
    data_dir: Path,
    *,
    calibrate_seconds: float = DEFAULT_CALIBRATE_SECONDS,
    analytic: bool = False,
    start: datetime | None = None,
    target: str | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Count, calibrate (or estimate analytically) and schedule every preset in `configs`."""
    from twinbot.finetune.lora import CPU_AUTO_BATCH_SIZE
    from twinbot.finetune.workers import process_plan
    from twinbot.models.devices import pick_device, pick_precision
    from twinbot.models.loading import EMBEDDED_MODEL, load_tokenizer

    say = progress or (lambda _message: None)
    data_dir = check_data_dir(data_dir)
    if not configs:
        raise TwinbotError("no presets to plan; pass --presets")
    if not analytic and calibrate_seconds <= 0:
        raise TwinbotError("--calibrate-seconds must be more than 0 (or pass --no-calibrate)")
    gpu = target_gpu(target) if target else None
    start = start or datetime.now().replace(second=0, microsecond=0)
    first = next(iter(configs.values()))
    model_spec = first.base_model or EMBEDDED_MODEL

    tokenizers: dict[str | None, Any] = {}
    datasets: dict[str | None, TokenizedData] = {}
    shapes: dict[tuple[str | None, int, str], ModelShape] = {}
    plans: list[PresetPlan] = []
    summary: DataSummary | None = None
    device_name = "cpu"
    for preset, config in configs.items():
        spec = config.base_model
        if spec not in tokenizers:
            tokenizers[spec] = load_tokenizer(spec)
            datasets[spec] = TokenizedData(data_dir, tokenizers[spec])
        data = datasets[spec]
        if max_tokens_for(config) not in data.tokenized_limits:
            say(
                f"tokenizing {len(data.train_samples):,} train samples (up to {max_tokens_for(config)} tokens each)..."
            )
        tokenized, tokenize_seconds = data.train(max_tokens_for(config))
        eval_tokenized, eval_seconds = data.eval(max_tokens_for(config), config.eval_max_samples)
        rows, eval_rows = rows_for(config, tokenized), rows_for(config, eval_tokenized)
        setup_seconds = data.read_seconds + tokenize_seconds + eval_seconds
        if summary is None:
            summary = DataSummary(
                data_dir=str(data_dir),
                train_samples=len(data.train_samples),
                eval_samples=len(data.eval_samples),
                samples_used=len(tokenized),
                tokens_per_epoch=sum(len(s) for s in tokenized),
                supervised_tokens_per_epoch=sum(s.num_supervised for s in tokenized),
            )
        device = pick_device(config.device)
        device_name = device
        precision = pick_precision(config.use_fp16, device.split(":")[0]).name
        settings = PresetSettings(
            precision=precision,
            use_fp16=config.use_fp16,
            gradient_checkpointing=config.gradient_checkpointing,
            packing=config.packing,
            row_tokens=config.row_tokens,
            batch_size=config.batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            epochs=config.epochs,
            max_steps=config.max_steps,
        )
        plan = PresetPlan(preset=preset, status="ok", settings=settings, start=start)
        # planned as `train` runs it: on a CPU maybe several processes, each with a share of the micro-batch
        processes = process_plan(config)
        count = processes.count
        if count > 1:
            config = config.model_copy(update={"batch_size": processes.micro_batch})
        shared = f"x {count} processes" if count > 1 else None
        if analytic:
            micro_batch, note = (
                (config.batch_size, None)
                if config.batch_size != "auto"
                else (
                    CPU_AUTO_BATCH_SIZE,
                    None if device == "cpu" else "auto: assumed 4 rows (the GPU probe may fit more)",
                )
            )
            note = " ".join(filter(None, (shared, note))) or None
            plan.workload = count_workload(config, rows, eval_rows, micro_batch, note, processes=count)
            key = (spec, config.lora_r, config.lora_target_modules)
            if key not in shapes:
                from twinbot.finetune.lora import target_modules

                shapes[key] = shape_of_spec(spec, config.lora_r, target_modules(config.lora_target_modules))
            say(f"estimating {preset} (analytic)...")
            estimate = analytic_estimate(
                config,
                plan.workload,
                shapes[key],
                rows,
                eval_rows,
                device,
                precision,
                setup_seconds,
                measure_bookkeeping(),
            )
            plan.estimate = split_between_processes(estimate, count)
        else:
            say(f"calibrating {preset}: up to {calibrate_seconds:g} s of real training on this machine...")
            arguments = (config, rows, eval_rows, tokenizers[spec].pad_token_id, calibrate_seconds)
            # several processes are calibrated in the processes: their all-reduce and waiting are part of it
            calibration = workers.run(calibrate, arguments, processes) if count > 1 else calibrate(*arguments)
            plan.calibration = calibration
            plan.status, plan.detail = calibration.status, calibration.detail
            peak = calibration.peak_memory_bytes
            plan.peak_memory_bytes = peak * count if peak and calibration.peak_memory_kind == "rss" else peak
            settings.precision = calibration.precision or precision
            if calibration.micro_batch is not None:
                note = f"auto: {calibration.micro_batch} rows" if config.batch_size == "auto" else None
                note = " ".join(filter(None, (shared, note))) or None
                plan.workload = count_workload(
                    config, rows, eval_rows, calibration.micro_batch, note, processes=count
                )
            elif config.batch_size != "auto":  # failed before the micro-batch was known: counts still hold
                plan.workload = count_workload(config, rows, eval_rows, config.batch_size, shared, count)
            if calibration.status == "ok" and plan.workload is not None:
                estimate = extrapolate(
                    plan.workload, calibration, setup_seconds, measure_bookkeeping(), config.log_every
                )
                plan.estimate = split_between_processes(estimate, count)
        if gpu is not None and plan.estimate is not None:
            speed, _ = here_tflops(device, settings.precision)
            plan.target_estimate = scale_to_gpu(
                plan.estimate, speed, gpu, "bf16" if config.use_fp16 else "fp32"
            )
        plans.append(plan)

    assert summary is not None
    fill_times(plans, start)
    quality = read_quality(data_dir)
    target_info = None
    if gpu is not None:
        device_precision = next((p.settings.precision for p in plans), "fp32")
        _, scaled_from = here_tflops(device_name, device_precision)
        target_info = TargetGpu(
            name=gpu.name,
            bf16_tflops=gpu.bf16_tflops,
            fp32_tflops=gpu.fp32_tflops,
            memory_gib=gpu.memory_gib,
            scaled_from=scaled_from,
        )
    return Plan(
        method="analytic" if analytic else "calibrated",
        model=model_spec,
        device=device_name,
        calibrate_seconds=None if analytic else calibrate_seconds,
        data=summary,
        presets=plans,
        target_gpu=target_info,
        quality=quality,
        recommendation=recommend(plans, quality),
        start=start,
    )


def fill_times(plans: Sequence[PresetPlan], start: datetime) -> None:
    """Time saved against baseline, and each preset's finish time from `start`."""
    baseline = next((p for p in plans if p.preset == "baseline" and p.shown is not None), None)
    for plan in plans:
        shown = plan.shown
        if shown is None:
            continue
        plan.done = start + timedelta(seconds=shown.total_seconds)
        if baseline is not None and baseline.shown is not None:
            plan.time_saved = 1 - shown.total_seconds / baseline.shown.total_seconds


# --- recommendation --------------------------------------------------------------------------------------


def _compute_changes(reference: PresetPlan, chosen: PresetPlan) -> list[str]:
    """What differs between two presets in the work per token (GA is deliberately not here)."""
    ref, new = reference.settings, chosen.settings
    changes = []
    if new.precision != ref.precision:
        label = "16-bit" if new.precision in ("bf16", "fp16") else new.precision
        changes.append(f"{label} ({new.precision})" if label != new.precision else label)
    if new.packing and not ref.packing:
        changes.append(f"packing into {new.row_tokens}-token rows")
    elif ref.packing and not new.packing:
        changes.append("no packing")
    if ref.gradient_checkpointing != new.gradient_checkpointing:
        changes.append(
            "no gradient checkpointing" if ref.gradient_checkpointing else "gradient checkpointing"
        )
    ref_batch = reference.workload.micro_batch if reference.workload else ref.batch_size
    new_batch = chosen.workload.micro_batch if chosen.workload else new.batch_size
    if ref_batch != new_batch:
        changes.append(f"micro-batch {ref_batch} -> {new_batch}")
    return changes


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def speed_reason(reference: PresetPlan, chosen: PresetPlan) -> str:
    """Why `chosen` is faster than `reference`, e.g. "GA 16 -> 32 changes no compute; 16-bit (bf16) is
    what saves time here (1.9x faster than baseline)"."""
    assert reference.shown is not None and chosen.shown is not None
    speedup = reference.shown.total_seconds / chosen.shown.total_seconds
    parts = []
    ga_ref, ga_new = (
        reference.settings.gradient_accumulation_steps,
        chosen.settings.gradient_accumulation_steps,
    )
    if ga_ref != ga_new:
        parts.append(f"GA {ga_ref} -> {ga_new} changes no compute")
    changes = _compute_changes(reference, chosen)
    if changes:
        verb = "is" if len(changes) == 1 else "are"
        parts.append(f"{_join(changes)} {verb} what saves time here")
    else:
        parts.append("nothing that changes the work per token differs")
    return f"{'; '.join(parts)} ({speedup:.1f}x faster than {reference.preset})"


def recommend(plans: Sequence[PresetPlan], quality: Quality) -> Recommendation:
    """The fastest preset that ran (with measured quality: the fastest whose eval loss is within
    QUALITY_TOLERANCE of the best measured), with its reason in one line."""
    usable = [p for p in plans if p.status == "ok" and p.shown is not None]
    if not usable:
        problems = "; ".join(f"{p.preset}: {p.detail or p.status}" for p in plans)
        return Recommendation(preset=None, reason=f"no preset could be calibrated ({problems})")

    def seconds(plan: PresetPlan) -> float:
        assert plan.shown is not None
        return plan.shown.total_seconds

    fastest = min(usable, key=seconds)
    chosen, quality_clause = fastest, quality.note
    if quality.measured:
        losses = {
            r.preset: r.eval_loss
            for r in quality.results
            if r.eval_loss is not None and r.preset in {p.preset for p in usable}
        }
        if losses:
            best = min(losses.values())
            good = [p for p in usable if p.preset in losses and losses[p.preset] <= best + QUALITY_TOLERANCE]
            chosen = min(good, key=seconds)
            quality_clause = (
                f"measured eval loss {losses[chosen.preset]:.3f} vs best {best:.3f} ({COMPARE_FILE})"
            )
            if fastest.preset not in losses:
                quality_clause += f"; {fastest.preset} is faster but its quality is not measured"
            elif chosen is not fastest:
                quality_clause += (
                    f"; {fastest.preset} is faster but its eval loss is {losses[fastest.preset]:.3f}"
                )
        else:
            quality_clause = f"no measured eval loss for these presets in {COMPARE_FILE}; {NOT_MEASURED}"
    others = [p for p in usable if p is not chosen]
    if not others:
        return Recommendation(
            preset=chosen.preset, reason=f"{chosen.preset}: the only preset planned; {quality_clause}"
        )
    reference = next((p for p in others if p.preset == "baseline"), max(others, key=seconds))
    if seconds(reference) <= seconds(chosen):
        reason = f"{chosen.preset}: the fastest that ran"
    else:
        reason = f"{chosen.preset}: {speed_reason(reference, chosen)}"
    return Recommendation(preset=chosen.preset, reason=f"{reason}; {quality_clause}")


# --- start times -----------------------------------------------------------------------------------------

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NAMES = {
    **{name: i for i, name in enumerate(_WEEKDAYS)},
    **{name: i for i, name in enumerate(_FULL_DAYS)},
    "tues": 1,
    "thur": 3,
    "thurs": 3,
}
_START_HELP = "expected now, HH:MM, 'fri 18:00', 'tomorrow 07:30' or an ISO date-time like 2026-11-27T18:00"


def parse_start(text: str, now: datetime | None = None) -> datetime:
    """`--start`: "now", "HH:MM" (today), "today/tomorrow HH:MM", "fri 18:00" (the next Friday at 18:00,
    today if that is still ahead) or an ISO date-time. Local time, naive."""
    now = (now or datetime.now()).replace(second=0, microsecond=0)
    cleaned = " ".join(text.strip().lower().split())
    if cleaned in ("", "now"):
        return now
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text.strip())
        return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment
    match = re.fullmatch(r"(?:([a-z]+)\s*)?(?:(\d{1,2})(?::(\d{2}))?)?", cleaned)
    if not match or not (match.group(1) or match.group(2)):
        raise TwinbotError(f"--start {text!r}: {_START_HELP}")
    day, hour, minute = match.group(1), match.group(2), match.group(3)
    if hour is not None and minute is None and day is None:
        raise TwinbotError(f"--start {text!r}: {_START_HELP}")
    hours, minutes = int(hour or 0), int(minute or 0)
    if hours > 23 or minutes > 59:
        raise TwinbotError(f"--start {text!r}: no such time of day; {_START_HELP}")
    at = now.replace(hour=hours, minute=minutes)
    if day is None or day == "today":
        return at
    if day == "tomorrow":
        return at + timedelta(days=1)
    weekday = _DAY_NAMES.get(day)
    if weekday is None:
        raise TwinbotError(f"--start {text!r}: unknown day {day!r}; {_START_HELP}")
    ahead = (weekday - now.weekday()) % 7
    moment = at + timedelta(days=ahead)
    return moment + timedelta(days=7) if moment < now else moment


def format_clock(moment: datetime, since: datetime | None = None) -> str:
    """`fri 18:00`; with the date once it is six days or more after `since` (or now)."""
    reference = since or datetime.now()
    clock = f"{_WEEKDAYS[moment.weekday()]} {moment:%H:%M}"
    return (
        clock
        if moment - reference < timedelta(days=6)
        else f"{_WEEKDAYS[moment.weekday()]} {moment:%Y-%m-%d %H:%M}"
    )


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def schedule_line(preset: PresetPlan, start: datetime, width: int = 0) -> str:
    """`optimized: fri 18:00 -> sat 03:12`, or why there is no finish time."""
    name = f"{preset.preset}:".ljust(width)
    if preset.done is None:
        return (
            f"{name} {'out of memory' if preset.status == 'out_of_memory' else f'failed ({preset.detail})'}"
        )
    return f"{name} {format_clock(start, start)} -> {format_clock(preset.done, start)}"


# --- text output -----------------------------------------------------------------------------------------


def format_bytes(count: int | None) -> str:
    if not count:
        return "not measured"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 1024:.0f} KiB"


def _hours(seconds: float) -> str:
    hours = seconds / SECONDS_PER_HOUR
    return f"{hours:.2f}" if hours < 10 else f"{hours:.1f}"


def table_rows(plan: Plan) -> list[list[str]]:
    header = ["Configuration", "Steps", "Tokens", "Hours", "Days", "Time saved", "Peak memory"]
    rows = [header]
    for preset in plan.presets:
        work = preset.workload
        steps = f"{work.steps:,}" if work else "?"
        tokens = f"{work.tokens:,}" if work else "?"
        if preset.status != "ok" or preset.shown is None:
            label = "out of memory" if preset.status == "out_of_memory" else "failed"
            rows.append([preset.preset, steps, tokens, "-", "-", "-", label])
            continue
        seconds = preset.shown.total_seconds
        if preset.preset == "baseline" or preset.time_saved is None:
            saved = "-" if preset.preset == "baseline" else "n/a (no baseline)"
        else:
            saved = (
                f"{preset.time_saved:.0%}" if preset.time_saved >= 0 else f"{preset.time_saved:.0%} (slower)"
            )
        memory = format_bytes(preset.peak_memory_bytes)
        if preset.peak_memory_bytes and preset.calibration and preset.calibration.peak_memory_kind == "rss":
            memory += " RSS"
        rows.append([preset.preset, steps, tokens, _hours(seconds), f"{seconds / 86400:.2f}", saved, memory])
    return rows


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {1, 2, 3, 4, 5}

    def line(row: list[str]) -> str:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def render(plan: Plan) -> str:
    data = plan.data
    lines = [
        f"data: {data.train_samples:,} train samples ({data.samples_used:,} with a reply left after truncation), "
        f"{data.eval_samples:,} eval samples; {data.tokens_per_epoch:,} tokens per epoch after templating, "
        f"{data.supervised_tokens_per_epoch:,} supervised",
    ]
    if plan.method == "calibrated":
        lines.append(
            f"model: {plan.model} on {plan.device}; calibrated: up to {plan.calibrate_seconds:g} s of real "
            "training per preset on this data, extrapolated by the measured seconds per token"
        )
    else:
        lines.append(
            f"model: {plan.model} on {plan.device}; rough (analytic): FLOPs / this machine's measured matmul "
            "speed, not calibrated; a lower bound, real training runs slower (drop --no-calibrate to measure)"
        )
    if plan.target_gpu is not None:
        gpu = plan.target_gpu
        lines.append(
            f"extrapolation to {gpu.name} ({gpu.bf16_tflops:g} TFLOP/s bf16, {gpu.fp32_tflops:g} fp32 published "
            f"peak, {gpu.memory_gib:g} GiB): compute time scaled by the {gpu.scaled_from} over that peak; "
            "real GPUs rarely reach their peak, so treat it as a lower bound"
        )
    lines += [
        "",
        render_table(table_rows(plan)),
        "Steps = ceil(micro-batches per epoch / GA) x epochs. Tokens = real tokens through forward and "
        "backward over the run. Hours include setup, evaluation, checkpoints and logging.",
        "",
    ]
    for preset in plan.presets:
        if preset.shown is None or preset.workload is None:
            continue
        shown, work = preset.shown, preset.workload
        batch = f"micro-batch {work.micro_batch}" + (
            f" ({work.micro_batch_note})" if work.micro_batch_note else ""
        )
        lines.append(
            f"{preset.preset}: {preset.settings.precision}, {batch} x GA {work.gradient_accumulation_steps}; "
            f"train {format_duration(shown.train_seconds)}, eval {format_duration(shown.eval_seconds)} "
            f"({work.evaluations} x {work.eval_tokens_per_evaluation:,} tokens), checkpoints "
            f"{format_duration(shown.checkpoint_seconds)} ({work.checkpoints} + final adapter), logging "
            f"{format_duration(shown.logging_seconds)}, setup {format_duration(shown.setup_seconds)}"
        )
    if plan.target_gpu is not None:
        too_big = [
            p.preset
            for p in plan.presets
            if p.peak_memory_bytes and p.peak_memory_bytes > plan.target_gpu.memory_gib * (1 << 30)
        ]
        if too_big:
            lines.append(
                f"memory: the peak measured here for {', '.join(too_big)} is more than {plan.target_gpu.name}'s "
                f"{plan.target_gpu.memory_gib:g} GiB"
            )
    lines += ["", f"schedule (from {format_clock(plan.start, plan.start)}):"]
    width = max(len(p.preset) for p in plan.presets) + 1
    lines += [f"  {schedule_line(preset, plan.start, width)}" for preset in plan.presets]
    lines += ["", f"recommendation: {plan.recommendation.reason}"]
    return "\n".join(lines)


def run_plan(
    data_dir: Path | None,
    model: str | None = None,
    presets: str = ",".join(PRESET_ORDER),
    epochs: float | None = None,
    start: str = "now",
    calibrate_seconds: float = DEFAULT_CALIBRATE_SECONDS,
    no_calibrate: bool = False,
    target: str | None = None,
    as_json: bool = False,
    yaml_path: Path | None = None,
    overrides: Sequence[str] = (),
) -> Plan:
    """`twinbot plan`: the plan as text (or JSON with --json) on stdout, progress on stderr."""
    data_dir = check_data_dir(data_dir)
    names = parse_presets(presets)
    start_at = parse_start(start)
    if target:
        target_gpu(target)
    configs = resolve_preset_configs(names, data_dir, model, epochs, yaml_path, overrides)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    plan = make_plan(
        configs,
        data_dir,
        calibrate_seconds=calibrate_seconds,
        analytic=no_calibrate,
        start=start_at,
        target=target,
        progress=progress,
    )
    if as_json:
        print(plan.model_dump_json(indent=2))
    else:
        print(render(plan))
    if plan.recommendation.preset is None:
        raise TwinbotError(plan.recommendation.reason)
    return plan
