"""`twinbot train`: the LoRA fine-tuning recipe, one file read top to bottom.

`main` checks the paths, data and model and loads everything (nothing is written to RUN until all of it
worked), then `fit` runs the loop: micro-batches -> loss on supervised tokens only -> accumulate -> clip ->
AdamW step -> eval / log / checkpoint. Built on transformers + peft + accelerate (device placement, DDP,
mixed precision): `accelerate launch -m twinbot train ...` runs the same loop on several processes.

Loss: summed token cross-entropy over the supervised targets of a whole optimizer step (every micro-batch of
every process), divided by that step's supervised-token count. Logits are computed only at supervised
positions (`logits_to_keep` with a boolean mask), which skips most of the vocabulary projection.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import torch

from twinbot import last_layer, workers
from twinbot.attention import PACKED_SDPA
from twinbot.checkpoint import (
    ADAPTER_DIR,
    TrainState,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_adapter_weights,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from twinbot.config import TrainConfig
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_dir, make_user_only, write_json
from twinbot.inference import PERSONA_FILE, PersonaInfo, system_prompt_from_samples, write_persona_info
from twinbot.loss import summed_cross_entropy
from twinbot.metrics import MetricsLog, MetricsRow, peak_memory_bytes, token_progress
from twinbot.tokens import (
    IGNORE_INDEX,
    Batch,
    Row,
    collate,
    load_samples,
    one_sample_rows,
    pack_rows,
    shared_prefix_row,
    tokenize_samples,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

# Attention that attends within each packed sample by itself, so a micro-batch can be one padding-free row.
VARIABLE_LENGTH_ATTENTION = frozenset({"flash_attention_2", PACKED_SDPA})
# How micro-batches reach the model (`make_batch`): padded rows; one padding-free row (attention that cuts
# samples at position-id restarts); or one padding-free row whose samples share their common beginning
# (`shared_prefix_row`, which only packed_sdpa understands).
BatchLayout = Literal["rows", "flat", "shared_prefix"]
MAX_NONFINITE_IN_A_ROW = 3
CPU_AUTO_BATCH_SIZE = 4
RUN_MARKER = "run.json"  # written first into every run folder: --overwrite only ever deletes run folders
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
    }
)


@dataclass
class TrainSummary:
    output_dir: Path
    adapter_dir: Path
    steps: int
    tokens_seen: int
    supervised_tokens: int
    computed_tokens: int  # the tokens the model ran (fewer than tokens_seen where samples share a beginning)
    tokens_per_second: float
    supervised_tokens_per_second: float
    wall_seconds: float
    peak_memory_bytes: int
    final_train_loss: float | None
    final_eval_loss: float | None
    precision: str


@dataclass(frozen=True)
class Precision:
    mixed_precision: str  # accelerate's setting: "no" | "bf16" | "fp16"
    base_dtype: torch.dtype  # frozen base weights; the LoRA weights stay fp32
    name: str  # for summary.json
    description: str  # the one line printed at start


@dataclass
class Run:
    """Everything `setup` loaded and `fit` trains."""

    config: TrainConfig
    sources: dict[str, str]
    run_dir: Path
    accelerator: Accelerator
    precision: Precision
    model: Any  # what the loop calls: the PEFT model, wrapped by accelerate (DDP, autocast) / torch.compile
    peft_model: Any  # the PEFT model itself, for saving and loading adapter weights
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    data: TrainData
    eval_rows: list[Row]
    total_steps: int
    state: TrainState  # fresh, or restored from `resumed_from`
    resumed_from: Path | None
    layout: BatchLayout  # how `make_batch` lays out micro-batches for this model's attention
    compiled: bool  # the loop calls a torch.compile'd model
    model_spec: str  # the base model as the user named it (recorded in the adapter and summary)
    model_path: str  # where it was loaded from
    persona: PersonaInfo  # the training system prompt, saved beside the adapter for chat/serve/export


def main(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    sources: dict[str, str] | None = None,
    stop: Any = None,
) -> TrainSummary:
    """Train a LoRA adapter into RUN (config.output_dir); see the module docstring. On a CPU with
    PROCESSES > 1 this starts the processes (`twinbot.workers`), each of which runs this again.
    `stop`: an event that asks the loop to stop as Ctrl-C does (set by the parent of those processes)."""
    # bad paths fail at once, before the process count (which resolves the model: an import, maybe a download)
    check_paths(config, resume, overwrite)
    if resume and config.processes == "auto":
        config = as_the_run_started(config)
    processes = process_plan(config)
    if processes.count > 1:
        share = config.model_copy(update={"batch_size": processes.micro_batch})
        return workers.run(main, (share, resume, overwrite, sources or {}), processes)
    run = setup(config, resume, overwrite, sources or {})
    try:
        return fit(run, stop)
    finally:
        run.accelerator.end_training()


def setup(config: TrainConfig, resume: bool, overwrite: bool, sources: dict[str, str]) -> Run:
    """Check paths, data and model, and load everything. Writes nothing: bad input leaves RUN untouched."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from twinbot.model import EMBEDDED_MODEL, load_tokenizer, resolve_model

    run_dir, data_dir = check_paths(config, resume, overwrite)
    accelerator, precision = make_accelerator(config)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    resumed = read_state(checkpoint) if checkpoint else None
    if resume and checkpoint is None:
        say(accelerator, f"no checkpoint in {run_dir}; starting from the beginning")
    set_seed(config.seed)

    model_spec = config.base_model or EMBEDDED_MODEL
    model_path = resolve_model(config.base_model)
    tokenizer = load_tokenizer(config.base_model)
    train_rows = load_rows(data_dir / "train.jsonl", tokenizer, config, limit=0, required=True)
    eval_path = data_dir / "eval.jsonl"
    eval_rows = (
        load_rows(eval_path, tokenizer, config, config.eval_max_samples) if eval_path.is_file() else []
    )

    peft_model, layout = load_training_model(config, accelerator.device, precision)
    peft_model.peft_config["default"].base_model_name_or_path = model_spec

    if resumed is not None and config.batch_size == "auto":
        batch_size = int(resumed.fingerprint["batch_size"])  # the probe could pick differently this time
    elif config.batch_size == "auto":
        batch_size = auto_batch_size(peft_model, train_rows, accelerator, tokenizer.pad_token_id, layout)
    else:
        batch_size = config.batch_size
    processes = accelerator.num_processes
    window = config.gradient_accumulation_steps * processes
    data = TrainData(train_rows, batch_size, window, processes, config.seed)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * data.steps_per_epoch))

    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    schedule = "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
    )
    model = maybe_compile(peft_model, config, accelerator.device.type)
    compiled = model is not peft_model
    model, optimizer = accelerator.prepare(model, optimizer)

    fingerprint = {
        **config.model_dump(mode="json", exclude={"data_dir", "output_dir", "preset", "device"}),
        "batch_size": batch_size,
        "processes": processes,
        "base_model": model_spec,
        "train_data_sha256": file_sha256(data_dir / "train.jsonl"),
    }
    state = TrainState(fingerprint=fingerprint)
    if checkpoint is not None and resumed is not None:
        check_resumable(resumed.fingerprint, fingerprint, checkpoint)
        state = load_checkpoint(
            checkpoint,
            model=peft_model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=accelerator.scaler,
            rank=accelerator.process_index,
        )
        state.fingerprint = fingerprint
    return Run(
        config=config,
        sources=sources,
        run_dir=run_dir,
        accelerator=accelerator,
        precision=precision,
        model=model,
        peft_model=peft_model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        data=data,
        eval_rows=eval_rows,
        total_steps=total_steps,
        state=state,
        resumed_from=checkpoint,
        layout=layout,
        compiled=compiled,
        model_spec=model_spec,
        persona=PersonaInfo(system_prompt=system_prompt_from_samples(data_dir), base_model=model_spec),
        model_path=model_path,
    )


def fit(run: Run, stop: Any = None) -> TrainSummary:
    """The training loop: one iteration per optimizer step, until `total_steps`."""
    config, accelerator, data, state = run.config, run.accelerator, run.data, run.state
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    run_dir, total_steps = run.run_dir, run.total_steps

    # Everything is loaded and valid: only now is RUN written to.
    if accelerator.is_main_process:
        start_run_dir(run_dir, fresh=run.resumed_from is None, marker={"base_model": run.model_spec})
    accelerator.wait_for_everyone()
    say(accelerator, run.precision.description)
    if run.compiled:
        say(
            accelerator,
            f"torch.compile: on (TORCH_COMPILE={str(config.torch_compile).lower()}); "
            f"the first step also compiles the model (25-85 s measured on CPUs)",
        )
    say(
        accelerator,
        f"data: {len(data.rows)} rows ({data.tokens:,} tokens, {data.supervised_tokens:,} supervised), "
        f"{len(run.eval_rows)} eval rows; micro-batch {data.micro_batch} x accumulation "
        f"{config.gradient_accumulation_steps} x {accelerator.num_processes} process(es); {total_steps} steps",
    )
    if run.layout == "shared_prefix" and accelerator.is_main_process:
        computed = sum(len(shared_prefix_row(rows)) for rows in data.epoch_micro_batches(0))
        if computed < data.tokens:
            say(
                accelerator,
                f"shared beginnings: the samples of a micro-batch share their first tokens (the system "
                f"prompt), computed once: {1 - computed / data.tokens:.0%} fewer tokens to compute",
            )
    if run.resumed_from is not None:
        say(accelerator, f"resuming from {run.resumed_from} (step {state.step} of {total_steps})")
    elif accelerator.is_main_process:  # the plan line (docs/plan.md): about a second, never raises
        from twinbot.plan import startup_line

        device, precision = str(accelerator.device), run.precision.name
        line = startup_line(
            config,
            run.peft_model,
            data.rows,
            run.eval_rows,
            data.micro_batch,
            device,
            precision,
            processes=accelerator.num_processes,
        )
        say(accelerator, line)

    pad_id = run.tokenizer.pad_token_id
    rank, processes = accelerator.process_index, accelerator.num_processes
    eval_every = config.eval_every or math.ceil(total_steps / 10)
    save_every = config.save_every or math.ceil(total_steps / 10)
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    trainable = [p for p in run.peft_model.parameters() if p.requires_grad]
    metrics = MetricsLog(run_dir, resume_step=state.step) if accelerator.is_main_process else None
    total_tokens = state.tokens_seen + sum(data.step_tokens(s) for s in range(state.step, total_steps))
    bar = token_progress(total_tokens, state.tokens_seen, enabled=accelerator.is_local_main_process)
    session_start, session_tokens = time.perf_counter(), 0
    elapsed_before = state.elapsed_seconds
    logged_loss, logged_supervised = 0.0, 0
    saved_step = state.step if run.resumed_from is not None else -1

    def checkpoint_now() -> None:
        nonlocal saved_step
        state.elapsed_seconds = elapsed_before + time.perf_counter() - session_start
        rng_states = gather_rng_states(accelerator)  # one per process: each restores its own on resume
        if accelerator.is_main_process:
            save_checkpoint(
                run_dir,
                model=run.peft_model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=accelerator.scaler,
                rng_states=rng_states,
                state=state,
                keep=config.keep_checkpoints,
            )
        accelerator.wait_for_everyone()
        saved_step = state.step

    model.train()
    with StopOnInterrupt(stop) as interrupt:
        while state.step < total_steps:
            window = data.step_micro_batches(state.step)
            # every process knows the whole window, so this equals an all-reduce of per-process counts
            window_supervised = sum(count_supervised(rows) for rows in window)
            mine = window[rank::processes]
            loss_sum = torch.zeros((), device=accelerator.device)
            computed = torch.zeros((), dtype=torch.long, device=accelerator.device)
            for index, rows in enumerate(mine):
                if stop_requested(interrupt, accelerator):
                    break
                batch = make_batch(rows, pad_id, accelerator.device, run.layout)
                is_last = index == len(mine) - 1  # DDP syncs gradients on the last backward only
                with contextlib.nullcontext() if is_last else accelerator.no_sync(model):
                    loss = forward_loss(model, batch)
                    # DDP averages gradients over processes: scale back up so the step's gradient is the
                    # sum over all its supervised tokens divided by their count.
                    accelerator.backward(loss * processes / window_supervised)
                loss_sum += loss.detach()
                computed += batch.computed_tokens
            if stop_requested(interrupt, accelerator):
                optimizer.zero_grad(set_to_none=True)  # the unfinished step is dropped
                bar.close()
                if accelerator.is_main_process and metrics is not None:
                    metrics.plot()
                if saved_step != state.step:
                    checkpoint_now()
                say(
                    accelerator,
                    f"interrupted: checkpoint saved at step {state.step}; "
                    f"run the same command with --resume to continue",
                )
                raise SystemExit(130)

            grad_norm = float(accelerator.clip_grad_norm_(trainable, max_norm))
            step_loss = float(accelerator.reduce(loss_sum, "sum")) / window_supervised
            state.computed_tokens += int(accelerator.reduce(computed, "sum"))
            scaler = accelerator.scaler
            finite = math.isfinite(step_loss) and (math.isfinite(grad_norm) or scaler is not None)
            if finite or scaler is not None:
                optimizer.step()  # with fp16 loss scaling, the scaler itself skips steps whose grads overflowed
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            state.step += 1
            state.epoch = state.step // data.steps_per_epoch  # the data position is (epoch, step)
            step_tokens = data.step_tokens(state.step - 1)
            state.tokens_seen += step_tokens
            state.supervised_tokens += window_supervised
            session_tokens += step_tokens

            if finite:
                state.nonfinite_in_a_row = 0
                state.train_loss = step_loss
                logged_loss += step_loss * window_supervised
                logged_supervised += window_supervised
                bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
            else:
                state.nonfinite_in_a_row += 1
                say(
                    accelerator,
                    f"warning: step {state.step}: loss or gradients are not finite; step skipped "
                    f"({state.nonfinite_in_a_row} in a row)",
                )
                if state.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    bar.close()
                    roll_back(run, state.step)
            bar.update(step_tokens)

            is_last_step = state.step == total_steps
            evaluated = False
            if run.eval_rows and (state.step % eval_every == 0 or is_last_step):
                state.eval_loss = evaluate(
                    run.peft_model,  # not the compiled model: eval mode would compile a second graph
                    run.eval_rows,
                    data.micro_batch,
                    pad_id,
                    accelerator,
                    run.layout,
                )
                evaluated = True
            session_seconds = time.perf_counter() - session_start
            if metrics is not None and (state.step % config.log_every == 0 or evaluated or is_last_step):
                metrics.log(
                    MetricsRow(
                        step=state.step,
                        epoch=round(state.step / data.steps_per_epoch, 4),
                        tokens=state.tokens_seen,
                        supervised_tokens=state.supervised_tokens,
                        computed_tokens=state.computed_tokens,
                        train_loss=logged_loss / logged_supervised if logged_supervised else None,
                        eval_loss=state.eval_loss if evaluated else None,
                        eval_ppl=perplexity(state.eval_loss) if evaluated else None,
                        lr=lr,
                        tokens_per_s=round(session_tokens / max(session_seconds, 1e-9), 2),
                        elapsed_s=round(elapsed_before + session_seconds, 3),
                    )
                )
                logged_loss, logged_supervised = 0.0, 0
                if evaluated and not is_last_step:  # the last plot is drawn at the end
                    metrics.plot()
            if state.step % save_every == 0 or is_last_step:
                checkpoint_now()
    bar.close()

    state.elapsed_seconds = elapsed_before + time.perf_counter() - session_start
    adapter_dir = run_dir / ADAPTER_DIR
    if accelerator.is_main_process:
        save_adapter(run.peft_model, run.tokenizer, adapter_dir, run.persona)
        if metrics is not None:
            metrics.plot()
            metrics.close()
    seconds = max(state.elapsed_seconds, 1e-9)
    summary = TrainSummary(
        output_dir=run_dir,
        adapter_dir=adapter_dir,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        supervised_tokens=state.supervised_tokens,
        computed_tokens=state.computed_tokens,
        tokens_per_second=round(state.tokens_seen / seconds, 2),
        supervised_tokens_per_second=round(state.supervised_tokens / seconds, 2),
        wall_seconds=round(state.elapsed_seconds, 3),
        peak_memory_bytes=run_peak_memory(accelerator),
        final_train_loss=state.train_loss,
        final_eval_loss=state.eval_loss,
        precision=run.precision.name,
    )
    if accelerator.is_main_process:
        write_json(
            run_dir / "summary.json",
            {
                **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()},
                "final_eval_perplexity": perplexity(state.eval_loss),
                "base_model": run.model_spec,
                "base_model_path": run.model_path,
                "device": str(accelerator.device),
                "processes": accelerator.num_processes,
                "micro_batch": data.micro_batch,
                "torch_compile": run.compiled,
                "metrics_csv": str(run_dir / "metrics.csv"),
                "loss_png": str(run_dir / "loss.png"),
                "tensorboard_dir": str(run_dir / "tb"),
                "checkpoints": [str(p) for p in list_checkpoints(run_dir)],
                "config": config.model_dump(mode="json"),
                "sources": run.sources,
            },
        )
        print(f"adapter written to {adapter_dir}")
    accelerator.wait_for_everyone()
    return summary


# --- validation (nothing here writes) --------------------------------------------------------------------


def check_paths(config: TrainConfig, resume: bool, overwrite: bool) -> tuple[Path, Path]:
    """The run and data folders, or a TwinbotError saying what to pass instead."""
    if config.data_dir is None:
        raise TwinbotError("no training data: pass --data DIR (a folder made by `twinbot prepare`)")
    if config.output_dir is None:
        raise TwinbotError("no run folder: pass --out RUN (where the adapter, checkpoints and logs go)")
    if resume and overwrite:
        raise TwinbotError("--resume continues a run and --overwrite replaces it; pass only one")
    data_dir, run_dir = Path(config.data_dir).expanduser(), Path(config.output_dir).expanduser()
    if not data_dir.is_dir():
        raise TwinbotError("data folder not found; pass the folder made by `twinbot prepare`", data_dir)
    if not (data_dir / "train.jsonl").is_file():
        raise TwinbotError(
            "no train.jsonl here, so this is not a folder made by `twinbot prepare`; "
            "run `twinbot prepare EXPORTS --me YOU --out DIR` and pass that DIR",
            data_dir,
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise TwinbotError("run folder is a file; pick another --out", run_dir)
    if run_dir.resolve() == data_dir.resolve() or run_dir.resolve() in data_dir.resolve().parents:
        raise TwinbotError("the run folder must not contain the data folder; pick another --out", run_dir)
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not (resume or overwrite):
            raise TwinbotError(
                "run folder exists; pass --resume to continue it, --overwrite to replace it, "
                "or pick another --out",
                run_dir,
            )
        if not (run_dir / RUN_MARKER).is_file():
            raise TwinbotError("folder exists and is not a twinbot run; pick another --out", run_dir)
    return run_dir, data_dir


def load_rows(
    path: Path, tokenizer: Any, config: TrainConfig, limit: int, required: bool = False
) -> list[Row]:
    """Samples of `path` (the first `limit`, 0 = all) as token rows; `required` data must supervise something."""
    samples = load_samples(path)
    if limit:
        samples = samples[:limit]
    # a packed row holds whole samples, so no sample may be longer than a row
    max_tokens = min(config.max_seq_len, config.row_tokens) if config.packing else config.max_seq_len
    tokenized = tokenize_samples(samples, tokenizer, max_tokens)
    if required and not samples:
        raise TwinbotError("no samples; run `twinbot prepare` again with more data", path)
    if required and not any(sample.num_supervised for sample in tokenized):
        raise TwinbotError(
            f"no supervised tokens: no sample keeps any of the persona's reply within {max_tokens} tokens; "
            "raise MAX_SEQ_LEN (and ROW_TOKENS) or check the data",
            path,
        )
    return pack_rows(tokenized, config.row_tokens) if config.packing else one_sample_rows(tokenized)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel. A training
    step allocates and frees the same few hundred MB of activations every time; by default glibc returns
    much of it, and the next step pays a page fault (and a page of zeroing) per 4 KB again: ~60,000 faults
    per step of the embedded model on CPU, ~5% of the step (BENCHMARKS.md). PyTorch's CPU tuning guide
    gets the same from preloading jemalloc or tcmalloc. Linux with glibc only; elsewhere it does nothing
    and returns False. The process keeps its peak memory until it exits."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def load_training_model(
    config: TrainConfig, device: torch.device, precision: Precision
) -> tuple[Any, BatchLayout]:
    """The base model with LoRA applied, as training uses it, and the micro-batch layout its attention
    takes (`batch_layout`). Also sets up the process's memory allocator for training (`keep_freed_memory`)."""
    from twinbot.fused_lora import fuse_lora_layers
    from twinbot.model import apply_lora, load_model

    keep_freed_memory()

    attention = pick_attention(config.attn_implementation, device.type, precision.base_dtype, config.packing)
    model = load_model(config.base_model, precision.base_dtype, attention, device)
    model.config.use_cache = False  # with a cache, transformers would not keep packed samples apart
    if config.gradient_checkpointing:
        # `activation_checkpointing_enable` is the name from transformers 5.23 on
        enable = (
            getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        )
        enable({"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings: the recomputed layers need an input with grad
    targets = target_modules(config.lora_target_modules)
    peft_model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, targets)
    # Compiled models keep peft's forward: torch 2.11's compiler traced the fused layers into a graph that
    # trained a different adapter (on CPU and CUDA; torch 2.13 traces them right), and compiling fuses
    # peft's elementwise ops by itself (BENCHMARKS.md, "GPU checks").
    if config.fused_lora and not compile_wanted(config, device.type):
        fuse_lora_layers(peft_model)
    last_layer.trim_last_layer(peft_model)
    return peft_model, batch_layout(peft_model.config._attn_implementation)


def batch_layout(attention: str) -> BatchLayout:
    """packed_sdpa: one row with shared beginnings computed once; flash-attention: one padding-free row
    (it keeps packed samples apart without a mask, so padding is waste); otherwise padded rows."""
    if attention == PACKED_SDPA:
        return "shared_prefix"
    return "flat" if attention in VARIABLE_LENGTH_ATTENTION else "rows"


def make_optimizer(trainable: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the LoRA weights; on CPU and CUDA torch's fused kernel: the same update in one pass,
    ~18 ms less per step than the per-tensor loop on the reference CPU (210 x 2 small tensors)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in trainable)
    return torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None
    )


def compile_wanted(config: TrainConfig, device_type: str) -> bool:
    """TORCH_COMPILE as this run uses it. 'auto' (the fast preset) = on for training on a CPU on Linux where
    inductor finds a C++ compiler: 25-85 s of compiling at the first step, then faster steps (BENCHMARKS.md,
    attempt 25: +44% on a 16-core Xeon, 0-13% on the 2-core reference CPU). Off on GPUs, where it is not
    measured yet, and on macOS and Windows, where inductor needs more setup than a compiler on the PATH."""
    if config.torch_compile != "auto":
        return config.torch_compile
    return device_type == "cpu" and sys.platform.startswith("linux") and cpp_compiler_found()


def cpp_compiler_found() -> bool:
    """Whether the C++ compiler torch.compile's CPU backend would use is on the PATH."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return shutil.which(get_cpp_compiler()) is not None
    except Exception:  # a private API that may move, or no compiler found: train eagerly
        return False


def maybe_compile(peft_model: Any, config: TrainConfig, device_type: str) -> Any:
    """The model the training loop calls: `peft_model` itself, or compiled (`compile_wanted`) with dynamic
    shapes: packed micro-batches change length every step, and this compiles once instead of once per length."""
    if not compile_wanted(config, device_type):
        return peft_model
    if config.torch_compile == "auto":
        # chosen for the user: if compiling fails after all (no Python headers, ...), dynamo trains eagerly
        from torch._dynamo import config as dynamo_config

        dynamo_config.suppress_errors = True
    return torch.compile(peft_model, dynamic=True)


def target_modules(setting: str) -> str | list[str]:
    if setting.strip() == "all-linear":
        return "all-linear"
    return [name.strip() for name in setting.split(",") if name.strip()]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
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


# --- device, precision, batch size ----------------------------------------------------------------------


def make_accelerator(config: TrainConfig) -> tuple[Accelerator, Precision]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = pick_device(config.device)
    precision = pick_precision(config.use_fp16, device.split(":")[0])
    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    # accelerate keeps its state process-wide, the device included: a later run in the same process (tests,
    # benchmarks, plan's calibrations) may want another device or precision. A distributed launch keeps its
    # process group, and with it the device it was given.
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    AcceleratorState._reset_state(reset_partial_state=not distributed)
    return Accelerator(cpu=device == "cpu", mixed_precision=precision.mixed_precision), precision


def process_plan(config: TrainConfig) -> workers.ProcessPlan:
    """How many processes train. One on GPUs, under a launcher (accelerate launch, or a process of ours) and
    with PROCESSES=1. On a CPU, PROCESSES processes ('auto': one per core, as many as split the micro-batch
    evenly and fit in memory; one on Windows), each with its share of every micro-batch, so every optimizer
    step sees the rows one process would and the training is the same."""
    threads = torch.get_num_threads()
    single = workers.ProcessPlan(1, threads, config.batch_size)
    if config.processes == 1 or workers.in_distributed_launch():
        return single
    if pick_device(config.device) != "cpu":
        if config.processes == "auto":
            return single
        raise TwinbotError(
            f"PROCESSES={config.processes} is for training on a CPU; set PROCESSES=1 on a GPU "
            f"(several GPUs: accelerate launch -m twinbot train ...)"
        )
    if config.processes == "auto" and sys.platform == "win32":
        return single  # torch.distributed is little tested on Windows: there only on request
    rows = CPU_AUTO_BATCH_SIZE if config.batch_size == "auto" else config.batch_size
    if config.processes == "auto":
        limit = min(threads, processes_memory_allows(config))
        count = max(n for n in range(1, rows + 1) if rows % n == 0 and n <= limit)
    else:
        count = config.processes
        if rows % count:
            what = (
                f"BATCH_SIZE=auto ({rows} rows on a CPU)"
                if config.batch_size == "auto"
                else f"BATCH_SIZE={rows}"
            )
            raise TwinbotError(
                f"{what} does not split evenly between PROCESSES={count} processes; "
                f"set BATCH_SIZE to a multiple of {count}, or PROCESSES=auto"
            )
    if count == 1:
        return single
    return workers.ProcessPlan(count, max(1, threads // count), rows // count)


def as_the_run_started(config: TrainConfig) -> TrainConfig:
    """For --resume with PROCESSES=auto: the process count the run started with (and its micro-batch, with
    BATCH_SIZE=auto), as BATCH_SIZE=auto resumes with the micro-batch the probe picked. Another machine, or
    a run started before PROCESSES existed, then resumes as it began instead of refusing to."""
    checkpoint = latest_checkpoint(config.output_dir) if config.output_dir is not None else None
    if checkpoint is None:
        return config
    started = read_state(checkpoint).fingerprint
    processes = int(started.get("processes", 1))
    update: dict[str, Any] = {"processes": processes}
    if config.batch_size == "auto" and "batch_size" in started:
        update["batch_size"] = int(started["batch_size"]) * processes
    return config.model_copy(update=update)


def processes_memory_allows(config: TrainConfig) -> int:
    """How many training processes fit in the memory available now: each one more holds its own copy of the
    base model (counted twice: loading converts it), while the micro-batch's activations are split between
    them. Unlimited when the model's size is not known here (a hub id)."""
    import psutil

    from twinbot.model import resolve_model

    location = Path(resolve_model(config.base_model))
    files = [location] if location.is_file() else list(location.glob("*")) if location.is_dir() else []
    weights = sum(f.stat().st_size for f in files if f.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
    if weights == 0:
        return sys.maxsize
    return 1 + int(psutil.virtual_memory().available // 2 // (2 * weights))


def pick_device(requested: str) -> str:
    """auto -> cuda > mps > cpu; an explicit device that is not there is an error."""
    has_cuda = torch.cuda.is_available()
    has_mps = torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if not has_cuda or index >= torch.cuda.device_count():
            raise TwinbotError(
                f"DEVICE={requested} but no such CUDA device is visible; use DEVICE=auto or cpu"
            )
    if requested == "mps" and not has_mps:
        raise TwinbotError("DEVICE=mps but Apple MPS is not available; use DEVICE=auto or cpu")
    return requested


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 on CPU is slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_precision(use_fp16: bool, device_type: str) -> Precision:
    if not use_fp16:
        return Precision("no", torch.float32, "fp32", f"precision: fp32 on {device_type} (USE_FP16=false)")
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", torch.bfloat16, "bf16", "precision: bf16 mixed precision on cuda")
        return Precision(
            "fp16",
            torch.float16,
            "fp16",
            "precision: fp16 mixed precision with loss scaling on cuda (no bf16)",
        )
    if device_type == "mps":
        return Precision("fp16", torch.float32, "fp16", "precision: fp16 autocast with loss scaling on mps")
    if cpu_has_bf16():
        return Precision(
            "bf16", torch.bfloat16, "bf16", "precision: bf16 autocast on cpu (native bf16 support)"
        )
    return Precision("no", torch.float32, "fp32", "precision: fp32 on cpu (this CPU has no native bf16)")


def pick_attention(setting: str, device_type: str, dtype: torch.dtype, packing: bool) -> str:
    """auto = flash_attention_2 on CUDA with 16-bit weights when flash-attn is installed; packed_sdpa for
    packed rows on CPU (measured: docs/training.md, "The fast preset"); else sdpa."""
    if setting != "auto":
        return setting
    from transformers.utils import is_flash_attn_2_available

    half = dtype in (torch.float16, torch.bfloat16)
    if device_type == "cuda" and half and is_flash_attn_2_available():
        return "flash_attention_2"
    return PACKED_SDPA if packing and device_type == "cpu" else "sdpa"


def auto_batch_size(
    model: Any, rows: list[Row], accelerator: Accelerator, pad_id: int, layout: BatchLayout
) -> int:
    """CPU: a fixed 4 rows. CUDA: the largest power of two of the longest row that survives forward+backward
    (copies of one row would share most of their tokens: probed without sharing)."""
    if accelerator.device.type != "cuda":
        return CPU_AUTO_BATCH_SIZE
    longest = max(rows, key=lambda row: len(row.input_ids))
    model.train()  # as in training: dropout masks take memory too

    def fits(size: int) -> bool:
        out_of_memory = False
        try:
            with accelerator.autocast():
                batch = make_batch(
                    [longest] * size,
                    pad_id,
                    accelerator.device,
                    "flat" if layout == "shared_prefix" else layout,
                )
                forward_loss(model, batch).backward()
        except torch.OutOfMemoryError:
            out_of_memory = True
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return not out_of_memory

    size = largest_power_of_two(fits, limit=len(rows))
    # every process must use the same micro-batch: the smallest that fits everywhere
    size = int(accelerator.gather(torch.tensor([size], device=accelerator.device)).min())
    if size == 0:
        raise TwinbotError(
            "one row does not fit in GPU memory; lower ROW_TOKENS / MAX_SEQ_LEN or set GRADIENT_CHECKPOINTING=true"
        )
    return size


def largest_power_of_two(fits: Any, limit: int) -> int:
    """The largest 1, 2, 4, ... <= limit for which `fits(size)` holds (trying upwards); 0 if not even 1."""
    size, largest = 1, 0
    while size <= limit and fits(size):
        largest, size = size, size * 2
    return largest


# --- data ------------------------------------------------------------------------------------------------


@dataclass
class TrainData:
    """Token rows in a fixed order per epoch (from the seed), cut into optimizer-step windows.

    A window holds `window` micro-batches of `micro_batch` rows: gradient accumulation x processes. Process
    r takes micro-batches r, r + P, ... of each window. Step s always sees the same rows, so resume is exact.
    """

    rows: list[Row]
    micro_batch: int
    window: int
    processes: int
    seed: int
    _epoch: int = field(default=-1, repr=False)
    _batches: list[list[Row]] = field(default_factory=list, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        micro_batches = math.ceil(len(self.rows) / self.micro_batch)
        return math.ceil(micro_batches / self.window)

    @property
    def tokens(self) -> int:
        return sum(len(row.input_ids) for row in self.rows)

    @property
    def supervised_tokens(self) -> int:
        return count_supervised(self.rows)

    def epoch_micro_batches(self, epoch: int) -> list[list[Row]]:
        if epoch != self._epoch:
            order = torch.randperm(
                len(self.rows), generator=torch.Generator().manual_seed(self.seed * 1009 + epoch)
            )
            shuffled = [self.rows[i] for i in order.tolist()]
            self._batches = [
                shuffled[i : i + self.micro_batch] for i in range(0, len(shuffled), self.micro_batch)
            ]
            self._epoch = epoch
        return self._batches

    def step_micro_batches(self, step: int) -> list[list[Row]]:
        """Every micro-batch of optimizer step `step`, all processes together."""
        epoch, index = divmod(step, self.steps_per_epoch)
        batches = self.epoch_micro_batches(epoch)
        window = batches[index * self.window : (index + 1) * self.window]
        # A short last window: under DDP every process needs as many micro-batches as the others, so the
        # window borrows micro-batches from the start of the epoch (as torch's DistributedSampler pads).
        short = -len(window) % self.processes
        return window + [batches[i % len(batches)] for i in range(short)]

    def step_tokens(self, step: int) -> int:
        return sum(len(row.input_ids) for rows in self.step_micro_batches(step) for row in rows)


def count_supervised(rows: list[Row]) -> int:
    return sum(sum(1 for t in row.target_ids if int(t) != IGNORE_INDEX) for row in rows)


def make_batch(rows: list[Row], pad_id: int, device: torch.device, layout: BatchLayout) -> Batch:
    """Rows as [rows, longest] tensors padded at the end, or as one padding-free row [1, total] ("flat"),
    or as one row whose samples leave out the beginning they share with the first ("shared_prefix":
    `twinbot.tokens.shared_prefix_row`; `num_tokens` still counts every sample's tokens).

    Position ids restart at every packed sample, which makes transformers' attention block-diagonal; the
    padding tail gets positions of its own, so no real token sees it.
    """
    if layout == "rows":
        return collate(rows, pad_id).to(device)
    if layout == "shared_prefix":
        batch = collate([shared_prefix_row(rows)], pad_id)
        return replace(batch, num_tokens=sum(len(row) for row in rows)).to(device)
    flat = Row(
        input_ids=[t for row in rows for t in row.input_ids],
        target_ids=[t for row in rows for t in row.target_ids],
        position_ids=[t for row in rows for t in row.position_ids],
    )
    return collate([flat], pad_id).to(device)


# --- loss and evaluation -----------------------------------------------------------------------------------


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy, in fp32, of logits already taken at supervised positions only."""
    return summed_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)


def forward_loss(model: Any, batch: Batch) -> torch.Tensor:
    """Summed token loss of one micro-batch; logits (and the last layer's MLP, `twinbot.last_layer`) only
    where a target is supervised."""
    supervised = batch.target_ids != IGNORE_INDEX
    output = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,
        **last_layer.forward_kwargs(model, supervised),
    )
    return token_loss(output.logits, batch.target_ids[supervised])


@torch.no_grad()
def evaluate(
    model: Any, rows: list[Row], micro_batch: int, pad_id: int, accelerator: Accelerator, layout: BatchLayout
) -> float:
    """Mean loss per supervised eval token, over all processes (each takes every P-th micro-batch).
    `model` is the PEFT model itself (no DDP, no torch.compile), in the run's mixed precision."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    batches = [rows[i : i + micro_batch] for i in range(0, len(rows), micro_batch)]
    for batch_rows in batches[accelerator.process_index :: accelerator.num_processes]:
        batch = make_batch(batch_rows, pad_id, accelerator.device, layout)
        with accelerator.autocast():
            totals[0] += forward_loss(model, batch).double()
        totals[1] += batch.num_supervised
    model.train()
    totals = accelerator.reduce(totals, "sum")
    return float(totals[0] / totals[1])


def run_peak_memory(accelerator: Accelerator) -> int:
    """Peak memory of the run: per device on GPUs; on a CPU, where several processes share the machine's
    memory, the sum of their peaks."""
    peak = peak_memory_bytes(accelerator.device.type)
    if accelerator.num_processes == 1 or accelerator.device.type != "cpu":
        return peak
    return int(accelerator.reduce(torch.tensor([peak], dtype=torch.int64), "sum").item())


def perplexity(loss: float | None) -> float | None:
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, 700.0))


# --- outputs ---------------------------------------------------------------------------------------------


def start_run_dir(run_dir: Path, fresh: bool, marker: dict[str, Any]) -> None:
    """A fresh run replaces the old one (check_paths made sure it is a run folder); resume keeps it."""
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    make_user_only(run_dir)
    write_json(run_dir / RUN_MARKER, {"twinbot_run": 1, **marker})


def save_adapter(peft_model: Any, tokenizer: Any, adapter_dir: Path, persona: PersonaInfo) -> None:
    """RUN/adapter: PEFT files (adapter_config.json + adapter_model.safetensors), the tokenizer and
    twinbot.json (the persona's system prompt and the base model)."""
    with atomic_dir(adapter_dir, overwrite=True) as tmp:
        peft_model.save_pretrained(tmp, save_embedding_layers=False)
        tokenizer.save_pretrained(tmp)
        write_persona_info(tmp / PERSONA_FILE, persona)


def gather_rng_states(accelerator: Accelerator) -> list[dict[str, Any]]:
    from accelerate.utils import gather_object

    return list(gather_object([capture_rng_state()]))


def roll_back(run: Run, step: int) -> NoReturn:
    """Stop after repeated non-finite steps: RUN/adapter becomes the last checkpoint's adapter."""
    run_dir, peft_model, accelerator, config = run.run_dir, run.peft_model, run.accelerator, run.config
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        load_adapter_weights(peft_model, checkpoint / ADAPTER_DIR)
        if accelerator.is_main_process:
            save_adapter(peft_model, run.tokenizer, run_dir / ADAPTER_DIR, run.persona)
        where = f"{run_dir / ADAPTER_DIR} holds the last good checkpoint ({checkpoint.name})"
    else:
        where = "no checkpoint had been saved yet, so there is no adapter"
    accelerator.wait_for_everyone()
    raise TwinbotError(
        f"training diverged: loss or gradients were not finite for {MAX_NONFINITE_IN_A_ROW} steps in a row "
        f"(up to step {step}); {where}; try a lower LEARNING_RATE (now {config.learning_rate:g}) "
        f"or USE_FP16=false, and start again with --overwrite",
        run_dir,
    )


def say(accelerator: Accelerator, message: str) -> None:
    """One status line on stderr from the main process (around the progress bar)."""
    if accelerator.is_main_process:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


# --- Ctrl-C ----------------------------------------------------------------------------------------------


class StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop before its next micro-batch (it then saves a checkpoint at the
    last completed step); a second Ctrl-C stops at once. With an `external` event (a process started by
    `twinbot.workers`, whose parent takes the Ctrl-C), setting the event is the first Ctrl-C."""

    def __init__(self, external: Any = None) -> None:
        self._interrupted = False
        self._external = external
        self._previous: Any = None

    @property
    def requested(self) -> bool:
        return self._interrupted or (self._external is not None and self._external.is_set())

    def __enter__(self) -> StopOnInterrupt:
        if self._external is None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def stop_requested(interrupt: StopOnInterrupt, accelerator: Accelerator) -> bool:
    """Whether any process was interrupted (all processes must stop at the same micro-batch)."""
    return any_process(interrupt.requested, accelerator)


def any_process(flag: bool, accelerator: Accelerator) -> bool:
    """Whether `flag` holds in any process: a decision every process takes alike (a collective)."""
    if accelerator.num_processes == 1:
        return flag
    total = accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum")
    return bool(total.item() > 0)
