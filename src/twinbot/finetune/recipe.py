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
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from twinbot.data.prepared import system_prompt_from_samples
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_dir, make_user_only, write_json
from twinbot.finetune import workers
from twinbot.finetune.batches import BatchLayout, TrainData, count_supervised, make_batch
from twinbot.finetune.checkpoint import (
    TrainState,
    load_adapter_weights,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.lora import auto_batch_size, load_training_model, make_optimizer, maybe_compile
from twinbot.finetune.metrics import MetricsLog, MetricsRow, token_progress
from twinbot.finetune.rows import (
    Row,
    load_samples,
    one_sample_rows,
    pack_rows,
    shared_prefix_row,
    tokenize_samples,
)
from twinbot.finetune.runtime import (
    StopOnInterrupt,
    gather_rng_states,
    make_accelerator,
    run_peak_memory,
    stop_requested,
)
from twinbot.finetune.steps import evaluate, forward_loss, perplexity
from twinbot.finetune.workers import as_the_run_started, process_plan
from twinbot.models.devices import Precision
from twinbot.runs import (
    ADAPTER_DIR,
    PERSONA_FILE,
    RUN_MARKER,
    PersonaInfo,
    file_sha256,
    latest_checkpoint,
    list_checkpoints,
    write_persona_info,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

MAX_NONFINITE_IN_A_ROW = 3
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
    PROCESSES > 1 this starts the processes (`twinbot.finetune.workers`), each of which runs this again.
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

    from twinbot.models.loading import EMBEDDED_MODEL, load_tokenizer, resolve_model

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
        from twinbot.finetune.plan import startup_line

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


# --- data ------------------------------------------------------------------------------------------------


# --- loss and evaluation -----------------------------------------------------------------------------------


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
