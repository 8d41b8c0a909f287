"""`twinbot train`: the LoRA fine-tuning recipe, one file read top to bottom.

`main` -> `setup` -> `fit`. `setup` checks the paths, data and model and loads everything (nothing is
written to RUN until all of it worked); `fit` runs the loop: micro-batches -> loss on supervised tokens
only -> backward, accumulated over the optimizer step -> clip -> AdamW step -> log / eval / checkpoint.
Built on transformers + peft + accelerate (device placement, DDP, mixed precision): `accelerate launch -m
twinbot train ...` runs the same loop on several processes, and on a CPU PROCESSES > 1 starts them itself
(`twinbot.finetune.workers`).

Loss: summed token cross-entropy over the supervised targets of a whole optimizer step (every micro-batch of
every process), divided by that step's supervised-token count. Logits are computed only at supervised
positions (`twinbot.finetune.steps`), which skips most of the vocabulary projection.

The parts are components: `batches` (data order, micro-batches), `steps` (loss, evaluation), `lora` (the
model, optimizer and schedule), `runtime` (accelerate, Ctrl-C), `checkpoint` (RUN, checkpoints, adapter),
`metrics` (metrics.csv, TensorBoard, loss.png, progress bar).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from twinbot import console
from twinbot.data.prepared import (
    EVAL_FILE,
    TRAIN_FILE,
    check_data_dir,
    load_samples,
    system_prompt_from_samples,
)
from twinbot.errors import TwinbotError
from twinbot.fileio import write_json
from twinbot.finetune import workers
from twinbot.finetune.batches import (
    BatchLayout,
    TrainData,
    cadence,
    count_supervised,
    make_batch,
    max_tokens_for,
    rows_for,
    step_count,
)
from twinbot.finetune.checkpoint import (
    TrainState,
    check_resumable,
    load_adapter_weights,
    load_checkpoint,
    read_state,
    run_fingerprint,
    save_adapter,
    save_checkpoint,
    start_run_dir,
)
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.disk import DiskSpace, check_disk_space, estimate_run_disk
from twinbot.finetune.lora import (
    auto_batch_size,
    load_training_model,
    make_optimizer,
    make_scheduler,
    maybe_compile,
)
from twinbot.finetune.metrics import MetricsLog, MetricsRow, token_progress
from twinbot.finetune.overnight import OvernightOptions, watched_run
from twinbot.finetune.resume import (
    FinishedRun,
    ResumeArgument,
    decide_auto_resume,
    finished_message,
    resume_argument,
)
from twinbot.finetune.rows import Row, shared_prefix_row, tokenize_samples
from twinbot.finetune.runtime import (
    StopOnInterrupt,
    gather_rng_states,
    make_accelerator,
    run_peak_memory,
    stop_requested,
)
from twinbot.finetune.status import RunStatus, StatusFile
from twinbot.finetune.steps import evaluate, forward_loss, perplexity
from twinbot.models.devices import Precision, is_out_of_memory, pick_device
from twinbot.models.quantization import check_4bit_support
from twinbot.runs import (
    ADAPTER_DIR,
    LOSS_PLOT,
    METRICS_FILE,
    RUN_MARKER,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    PersonaInfo,
    latest_checkpoint,
    list_checkpoints,
)

if TYPE_CHECKING:
    from accelerate import Accelerator
    from tqdm import tqdm

MAX_NONFINITE_IN_A_ROW = 3


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
    trainable: list[torch.nn.Parameter]  # the LoRA weights: what the optimizer updates
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    data: TrainData
    eval_rows: list[Row]
    total_steps: int
    eval_every: int
    save_every: int
    state: TrainState  # fresh, or restored from `resumed_from`
    resumed_from: Path | None
    layout: BatchLayout  # how `make_batch` lays out micro-batches for this model's attention
    compiled: bool  # the loop calls a torch.compile'd model
    model_spec: str  # the base model as the user named it (recorded in the adapter and summary)
    model_path: str  # where it was loaded from
    persona: PersonaInfo  # the training system prompt, saved beside the adapter for chat/serve/export
    disk: DiskSpace  # what the run will write into RUN, and the free space there


@dataclass(frozen=True)
class StepResult:
    """One optimizer step, as `take_step` took it."""

    loss: float  # per supervised token, over every micro-batch of every process
    finite: bool  # the loss and gradients were finite, so the weights were updated
    lr: float  # the learning rate the step used
    tokens: int  # the samples' tokens, every process
    supervised: int


@dataclass
class Session:
    """What `fit` keeps from step to step in this process (a resumed run is a new session)."""

    bar: tqdm  # progress in tokens, on the local main process
    metrics: MetricsLog | None  # metrics.csv, TensorBoard and loss.png: the main process only
    elapsed_before: float  # training seconds of the sessions before this one
    started: float  # time.perf_counter() at the start of this session
    saved_step: int  # the step of the last checkpoint this session knows of (-1: none)
    status: StatusFile | None = None  # RUN/status.json: the main process only
    tokens: int = 0  # tokens trained on in this session, for tokens_per_s
    logged_loss: float = 0.0  # loss x supervised tokens of the finite steps since the last metrics row
    logged_supervised: int = 0  # their supervised tokens

    def elapsed(self) -> float:
        """Training seconds of the whole run so far."""
        return self.elapsed_before + time.perf_counter() - self.started

    def record(self, step: StepResult) -> None:
        """A step taken: its tokens, and when finite its loss (towards the next metrics row and the bar)."""
        self.tokens += step.tokens
        if step.finite:
            self.logged_loss += step.loss * step.supervised
            self.logged_supervised += step.supervised
            self.bar.set_postfix(loss=f"{step.loss:.4f}", refresh=False)
        self.bar.update(step.tokens)


def main(
    config: TrainConfig,
    resume: ResumeArgument | None = None,
    overwrite: bool = False,
    sources: dict[str, str] | None = None,
    stop: Any = None,
    overnight: OvernightOptions | None = None,
    status: RunStatus | None = None,
) -> TrainSummary:
    """Train a LoRA adapter into RUN (config.output_dir); see the module docstring. On a CPU with
    PROCESSES > 1 this starts the processes (`twinbot.finetune.workers`), each of which runs this again.
    `stop`: an event that asks the loop to stop as Ctrl-C does (set by the parent of those processes).
    `overnight`: keep the machine awake and notify at the end (`twinbot.finetune.overnight`); `status`: the
    RUN/status.json record of the parent that started this process to train in.
    `resume`: True, False or "auto" (`twinbot.finetune.resume`); None = RESUME (config.resume)."""
    resume, finished = decide_resume(config, resume, overwrite, sources or {})
    if finished is not None:
        return finished
    if config.load_in_4bit:  # before keeping the machine awake: a one-line error and nothing else
        check_4bit_support(pick_device(config.device))
    with watched_run(config, overnight, joined=status) as record:
        # bad paths fail at once, before the process count (it resolves the model: an import, maybe a download)
        check_paths(config, resume, overwrite)
        if resume and config.processes == "auto":
            config = workers.as_the_run_started(config)
        processes = workers.process_plan(config)
        if processes.count > 1:
            share = config.model_copy(update={"batch_size": processes.micro_batch})
            job = functools.partial(main, status=record)
            return workers.run(job, (share, resume, overwrite, sources or {}), processes)
        run = setup(config, resume, overwrite, sources or {})
        try:
            return fit(run, stop, record)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise out_of_memory_error(run) from exc
            raise
        finally:
            run.accelerator.end_training()


def out_of_memory_error(run: Run) -> TwinbotError:
    """Training ran out of memory after all: what ran, the checkpoint that is intact (checkpoints are written
    whole or not at all), and the changes that need less memory, cheapest first."""
    config, device = run.config, run.accelerator.device
    width = config.row_width
    what = (
        f"training ran out of {'GPU ' if device.type == 'cuda' else ''}memory at step "
        f"{run.state.step + 1} of {run.total_steps} (micro-batch {run.data.micro_batch} x {width} tokens, "
        f"{run.precision.name}{', 4-bit base' if config.load_in_4bit else ''})"
    )
    saved = latest_checkpoint(run.run_dir)
    kept = (
        f"the checkpoint of step {read_state(saved).step} is intact"
        if saved is not None
        else "no checkpoint was written yet"
    )
    fixes = []
    if not config.gradient_checkpointing:
        fixes.append("GRADIENT_CHECKPOINTING=true (resumable: --set GRADIENT_CHECKPOINTING=true --resume)")
    if device.type == "cuda" and not config.load_in_4bit:
        fixes.append("--preset qlora (LOAD_IN_4BIT=true)")
    if run.data.micro_batch > 1:
        fixes.append(f"BATCH_SIZE={run.data.micro_batch // 2}")
    if width > 256:
        fixes.append(f"{'ROW_TOKENS' if config.packing else 'MAX_SEQ_LEN'}={width // 2}")
    if not fixes:
        return TwinbotError(
            f"{what}; {kept}; pick a smaller base model (`twinbot plan --target-gpu` says what fits)",
            run.run_dir,
        )
    restart = "all but checkpointing start" if not config.gradient_checkpointing else "they start"
    return TwinbotError(
        f"{what}; {kept}; set one of: {', '.join(fixes)} ({restart} again with --overwrite); "
        f"`twinbot plan --target-gpu GPU --model MODEL` says what fits",
        run.run_dir,
    )


def decide_resume(
    config: TrainConfig, resume: ResumeArgument | None, overwrite: bool, sources: dict[str, str]
) -> tuple[bool, TrainSummary | None]:
    """Whether to continue the run in RUN; for --resume auto on a finished run, its summary instead (nothing
    to train, said on stderr)."""
    asked = resume_argument(config, resume, overwrite, sources)
    if asked != "auto":
        return bool(asked), None
    decision = decide_auto_resume(config.output_dir)
    if decision.finished is not None:
        console.say(finished_message(decision.finished))
        return True, finished_summary(decision.finished)
    return decision.resume, None


def finished_summary(run: FinishedRun) -> TrainSummary:
    """The summary.json of a finished run, as `main` returns a run it trained."""
    values = {field.name: run.summary.get(field.name) for field in fields(TrainSummary)}
    return TrainSummary(**{**values, "output_dir": run.run_dir, "adapter_dir": run.run_dir / ADAPTER_DIR})


def setup(config: TrainConfig, resume: bool, overwrite: bool, sources: dict[str, str]) -> Run:
    """Check paths, data and model, and load everything. Writes nothing: bad input leaves RUN untouched."""
    from accelerate.utils import set_seed

    from twinbot.models.loading import EMBEDDED_MODEL, load_tokenizer, resolve_model

    run_dir, data_dir = check_paths(config, resume, overwrite)
    accelerator, precision = make_accelerator(config)
    last = latest_checkpoint(run_dir) if resume else None
    resumed = read_state(last) if last else None
    if resume and last is None:
        say(accelerator, f"no checkpoint in {run_dir}; starting from the beginning")
    set_seed(config.seed)

    model_spec = config.base_model or EMBEDDED_MODEL
    model_path = resolve_model(config.base_model)
    tokenizer = load_tokenizer(config.base_model)
    train_rows, eval_rows = load_data(data_dir, tokenizer, config)

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
    total_steps = step_count(config, data.steps_per_epoch)

    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    save_every = cadence(config.save_every, total_steps)
    estimate = estimate_run_disk(trainable, config, total_steps, save_every, processes, model_path)
    disk = check_disk_space(estimate, run_dir)  # before anything is written
    optimizer = make_optimizer(trainable, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    model = maybe_compile(peft_model, config, accelerator.device.type)
    compiled = model is not peft_model
    model, optimizer = accelerator.prepare(model, optimizer)

    fingerprint = run_fingerprint(config, batch_size, processes, model_spec, data_dir / TRAIN_FILE)
    run = Run(
        config=config,
        sources=sources,
        run_dir=run_dir,
        accelerator=accelerator,
        precision=precision,
        model=model,
        peft_model=peft_model,
        trainable=trainable,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        data=data,
        eval_rows=eval_rows,
        total_steps=total_steps,
        eval_every=cadence(config.eval_every, total_steps),
        save_every=save_every,
        state=TrainState(fingerprint=fingerprint),
        resumed_from=last,
        layout=layout,
        compiled=compiled,
        model_spec=model_spec,
        model_path=model_path,
        persona=PersonaInfo(system_prompt=system_prompt_from_samples(data_dir), base_model=model_spec),
        disk=disk,
    )
    if last is not None and resumed is not None:
        run.state = restore(run, last, resumed)
    return run


def restore(run: Run, checkpoint: Path, saved: TrainState) -> TrainState:
    """Weights, optimizer, schedule and RNG states from `checkpoint`, once its settings and data are found
    to be this run's; the counters to continue from."""
    fingerprint = run.state.fingerprint
    check_resumable(saved.fingerprint, fingerprint, checkpoint)
    state = load_checkpoint(
        checkpoint,
        model=run.peft_model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.accelerator.scaler,
        rank=run.accelerator.process_index,
    )
    state.fingerprint = fingerprint
    return state


def fit(run: Run, stop: Any = None, status: RunStatus | None = None) -> TrainSummary:
    """The training loop: one iteration per optimizer step, until `total_steps`."""
    accelerator, data, state, model = run.accelerator, run.data, run.state, run.model
    rank, processes, pad_id = accelerator.process_index, accelerator.num_processes, run.tokenizer.pad_token_id
    start(run)
    session = start_session(run, status)
    model.train()
    with StopOnInterrupt(stop) as interrupt:
        while state.step < run.total_steps:
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
                stop_after_interrupt(run, session)

            step = take_step(run, loss_sum, computed, window_supervised)
            if not step.finite:
                skip_nonfinite(run, session)
            session.record(step)

            is_last_step = state.step == run.total_steps
            evaluated = bool(run.eval_rows) and (state.step % run.eval_every == 0 or is_last_step)
            if evaluated:
                # the PEFT model, not the compiled one: eval mode would compile a second graph
                state.eval_loss = evaluate(
                    run.peft_model, run.eval_rows, data.micro_batch, pad_id, accelerator, run.layout
                )
            log_metrics(run, session, step, evaluated, is_last_step)
            if state.step % run.save_every == 0 or is_last_step:
                checkpoint(run, session)
    return finish(run, session)


# --- the loop's parts, in the order it uses them ---------------------------------------------------------


def start(run: Run) -> None:
    """Everything is loaded and valid: only now is RUN written to. Then the lines that say what runs."""
    config, accelerator, data = run.config, run.accelerator, run.data
    if accelerator.is_main_process:
        start_run_dir(run.run_dir, fresh=run.resumed_from is None, marker={"base_model": run.model_spec})
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
        f"{config.gradient_accumulation_steps} x {accelerator.num_processes} process(es); "
        f"{run.total_steps} steps",
    )
    say(accelerator, run.disk.start_line())
    if run.layout == "shared_prefix" and accelerator.is_main_process:
        computed = sum(len(shared_prefix_row(rows)) for rows in data.epoch_micro_batches(0))
        if computed < data.tokens:
            say(
                accelerator,
                f"shared beginnings: the samples of a micro-batch share their first tokens (the system "
                f"prompt), computed once: {1 - computed / data.tokens:.0%} fewer tokens to compute",
            )
    if run.resumed_from is not None:
        say(accelerator, f"resuming from {run.resumed_from} (step {run.state.step} of {run.total_steps})")
    elif accelerator.is_main_process:
        say(accelerator, plan_line(run))


def plan_line(run: Run) -> str:
    """The plan's one-line forecast of the run (docs/plan.md): about a second, never raises."""
    from twinbot.finetune.plan.estimate import startup_line

    accelerator = run.accelerator
    return startup_line(
        run.config,
        run.peft_model,
        run.data.rows,
        run.eval_rows,
        run.data.micro_batch,
        str(accelerator.device),
        run.precision.name,
        processes=accelerator.num_processes,
    )


def start_session(run: Run, status: RunStatus | None = None) -> Session:
    """The metrics log (which drops rows after a resumed step), RUN/status.json, the progress bar and the
    clock."""
    state, data, accelerator = run.state, run.data, run.accelerator
    metrics = MetricsLog(run.run_dir, resume_step=state.step) if accelerator.is_main_process else None
    total_tokens = state.tokens_seen + sum(data.step_tokens(s) for s in range(state.step, run.total_steps))
    bar = token_progress(total_tokens, state.tokens_seen, enabled=accelerator.is_local_main_process)
    status_file = None
    if status is not None and accelerator.is_main_process:
        status_file = StatusFile(run.run_dir, status)
        status_file.begin(
            step=state.step,
            total_steps=run.total_steps,
            tokens_seen=state.tokens_seen,
            total_tokens=total_tokens,
            wall_seconds=state.elapsed_seconds,
            eval_loss=state.eval_loss,
        )
    return Session(
        bar=bar,
        metrics=metrics,
        elapsed_before=state.elapsed_seconds,
        started=time.perf_counter(),
        saved_step=state.step if run.resumed_from is not None else -1,
        status=status_file,
    )


def stop_after_interrupt(run: Run, session: Session) -> NoReturn:
    """Ctrl-C: drop the unfinished step, save a checkpoint at the last completed one, and exit 130."""
    run.optimizer.zero_grad(set_to_none=True)
    session.bar.close()
    if session.metrics is not None:
        session.metrics.plot()
    if session.saved_step != run.state.step:
        checkpoint(run, session)
    say(
        run.accelerator,
        f"interrupted: checkpoint saved at step {run.state.step}; "
        f"run the same command with --resume to continue",
    )
    raise SystemExit(workers.INTERRUPTED)


def take_step(run: Run, loss_sum: torch.Tensor, computed: torch.Tensor, supervised: int) -> StepResult:
    """Clip the accumulated gradients, update the weights and the learning rate, and count the step in
    `run.state`. A step whose loss or gradients are not finite leaves the weights as they were."""
    accelerator, optimizer, state = run.accelerator, run.optimizer, run.state
    max_norm = run.config.max_grad_norm if run.config.max_grad_norm > 0 else math.inf
    grad_norm = float(accelerator.clip_grad_norm_(run.trainable, max_norm))
    loss = float(accelerator.reduce(loss_sum, "sum")) / supervised
    state.computed_tokens += int(accelerator.reduce(computed, "sum"))
    scaler = accelerator.scaler
    finite = math.isfinite(loss) and (math.isfinite(grad_norm) or scaler is not None)
    if finite or scaler is not None:
        optimizer.step()  # with fp16 loss scaling, the scaler itself skips steps whose grads overflowed
    optimizer.zero_grad(set_to_none=True)
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    state.step += 1
    state.epoch = state.step // run.data.steps_per_epoch  # the data position is (epoch, step)
    tokens = run.data.step_tokens(state.step - 1)
    state.tokens_seen += tokens
    state.supervised_tokens += supervised
    if finite:
        state.nonfinite_in_a_row = 0
        state.train_loss = loss
    else:
        state.nonfinite_in_a_row += 1
    return StepResult(loss=loss, finite=finite, lr=lr, tokens=tokens, supervised=supervised)


def skip_nonfinite(run: Run, session: Session) -> None:
    """A warning for a skipped step; after MAX_NONFINITE_IN_A_ROW of them, `roll_back`."""
    state = run.state
    say(
        run.accelerator,
        f"warning: step {state.step}: loss or gradients are not finite; step skipped "
        f"({state.nonfinite_in_a_row} in a row)",
    )
    if state.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
        session.bar.close()
        roll_back(run, state.step)


def roll_back(run: Run, step: int) -> NoReturn:
    """Stop after repeated non-finite steps: RUN/adapter becomes the last checkpoint's adapter."""
    run_dir, peft_model, accelerator, config = run.run_dir, run.peft_model, run.accelerator, run.config
    last = latest_checkpoint(run_dir)
    if last is not None:
        load_adapter_weights(peft_model, last / ADAPTER_DIR)
        if accelerator.is_main_process:
            save_adapter(peft_model, run.tokenizer, run_dir / ADAPTER_DIR, run.persona)
        where = f"{run_dir / ADAPTER_DIR} holds the last good checkpoint ({last.name})"
    else:
        where = "no checkpoint had been saved yet, so there is no adapter"
    accelerator.wait_for_everyone()
    raise TwinbotError(
        f"training diverged: loss or gradients were not finite for {MAX_NONFINITE_IN_A_ROW} steps in a row "
        f"(up to step {step}); {where}; try a lower LEARNING_RATE (now {config.learning_rate:g}) "
        f"or USE_FP16=false, and start again with --overwrite",
        run_dir,
    )


def log_metrics(run: Run, session: Session, step: StepResult, evaluated: bool, is_last_step: bool) -> None:
    """A metrics row every LOG_EVERY steps, after an evaluation and at the last step (the train loss is
    the mean since the row before); loss.png is redrawn after each evaluation."""
    state, metrics = run.state, session.metrics
    session_seconds = time.perf_counter() - session.started
    if metrics is None or not (state.step % run.config.log_every == 0 or evaluated or is_last_step):
        return
    logged = session.logged_supervised
    metrics.log(
        MetricsRow(
            step=state.step,
            epoch=round(state.step / run.data.steps_per_epoch, 4),
            tokens=state.tokens_seen,
            supervised_tokens=state.supervised_tokens,
            computed_tokens=state.computed_tokens,
            train_loss=session.logged_loss / logged if logged else None,
            eval_loss=state.eval_loss if evaluated else None,
            eval_ppl=perplexity(state.eval_loss) if evaluated else None,
            lr=step.lr,
            tokens_per_s=round(session.tokens / max(session_seconds, 1e-9), 2),
            elapsed_s=round(session.elapsed_before + session_seconds, 3),
        )
    )
    session.logged_loss, session.logged_supervised = 0.0, 0
    if session.status is not None:
        session.status.progress(state.step, state.tokens_seen, session.elapsed(), state.eval_loss, evaluated)
    if evaluated and not is_last_step:  # the last plot is drawn at the end
        metrics.plot()


def checkpoint(run: Run, session: Session) -> None:
    """A checkpoint at the current step; every process takes part (each one's RNG states are saved)."""
    state, accelerator = run.state, run.accelerator
    state.elapsed_seconds = session.elapsed()
    rng_states = gather_rng_states(accelerator)  # one per process: each restores its own on resume
    if accelerator.is_main_process:
        save_checkpoint(
            run.run_dir,
            model=run.peft_model,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            scaler=accelerator.scaler,
            rng_states=rng_states,
            state=state,
            keep=run.config.keep_checkpoints,
        )
    accelerator.wait_for_everyone()
    session.saved_step = state.step
    if session.status is not None:
        session.status.progress(state.step, state.tokens_seen, state.elapsed_seconds, state.eval_loss, True)


def finish(run: Run, session: Session) -> TrainSummary:
    """RUN/adapter, the last loss plot and summary.json; prints where the adapter is."""
    state, accelerator = run.state, run.accelerator
    session.bar.close()
    state.elapsed_seconds = session.elapsed()
    if session.status is not None:  # the summary's numbers (the owner then writes "finished")
        session.status.progress(state.step, state.tokens_seen, state.elapsed_seconds, state.eval_loss, True)
    adapter_dir = run.run_dir / ADAPTER_DIR
    if accelerator.is_main_process:
        save_adapter(run.peft_model, run.tokenizer, adapter_dir, run.persona)
        if session.metrics is not None:
            session.metrics.plot()
            session.metrics.close()
    seconds = max(state.elapsed_seconds, 1e-9)
    summary = TrainSummary(
        output_dir=run.run_dir,
        adapter_dir=adapter_dir,
        steps=state.step,
        tokens_seen=state.tokens_seen,
        supervised_tokens=state.supervised_tokens,
        computed_tokens=state.computed_tokens,
        tokens_per_second=round(state.tokens_seen / seconds, 2),
        supervised_tokens_per_second=round(state.supervised_tokens / seconds, 2),
        wall_seconds=round(state.elapsed_seconds, 3),
        peak_memory_bytes=run_peak_memory(accelerator),  # with processes on one CPU: a collective
        final_train_loss=state.train_loss,
        final_eval_loss=state.eval_loss,
        precision=run.precision.name,
    )
    if accelerator.is_main_process:
        write_summary(run, summary)
        print(f"adapter written to {adapter_dir}")
    accelerator.wait_for_everyone()
    return summary


def write_summary(run: Run, summary: TrainSummary) -> None:
    """RUN/summary.json, written last: the summary, and what `eval`, `chat` and `export` need of the run."""
    run_dir, accelerator = run.run_dir, run.accelerator
    write_json(
        run_dir / SUMMARY_FILE,
        {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(summary).items()},
            "final_eval_perplexity": perplexity(run.state.eval_loss),
            "base_model": run.model_spec,
            "base_model_path": run.model_path,
            "device": str(accelerator.device),
            "processes": accelerator.num_processes,
            "micro_batch": run.data.micro_batch,
            "torch_compile": run.compiled,
            "metrics_csv": str(run_dir / METRICS_FILE),
            "loss_png": str(run_dir / LOSS_PLOT),
            "tensorboard_dir": str(run_dir / TENSORBOARD_DIR),
            "checkpoints": [str(p) for p in list_checkpoints(run_dir)],
            "config": run.config.model_dump(mode="json"),
            "sources": run.sources,
        },
    )


def say(accelerator: Accelerator, message: str) -> None:
    """One status line on stderr (`twinbot.console.say`), from the main process only."""
    if accelerator.is_main_process:
        console.say(message)


# --- validation (nothing here writes) --------------------------------------------------------------------


def check_paths(config: TrainConfig, resume: bool, overwrite: bool) -> tuple[Path, Path]:
    """The run and data folders, or a TwinbotError saying what to pass instead."""
    # What the command line lacks is reported before what the folders hold.
    if config.data_dir is None:
        check_data_dir(None)  # raises: no --data
    if config.output_dir is None:
        raise TwinbotError("no run folder: pass --out RUN (where the adapter, checkpoints and logs go)")
    if resume and overwrite:
        raise TwinbotError("--resume continues a run and --overwrite replaces it; pass only one")
    data_dir = check_data_dir(config.data_dir)
    run_dir = Path(config.output_dir).expanduser()
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


def load_data(data_dir: Path, tokenizer: Any, config: TrainConfig) -> tuple[list[Row], list[Row]]:
    """The training rows, and the first EVAL_MAX_SAMPLES eval samples' rows (none without eval.jsonl)."""
    train_rows = load_rows(data_dir / TRAIN_FILE, tokenizer, config, limit=0, required=True)
    eval_path = data_dir / EVAL_FILE
    eval_rows = (
        load_rows(eval_path, tokenizer, config, config.eval_max_samples) if eval_path.is_file() else []
    )
    return train_rows, eval_rows


def load_rows(
    path: Path, tokenizer: Any, config: TrainConfig, limit: int, required: bool = False
) -> list[Row]:
    """Samples of `path` (the first `limit`, 0 = all) as token rows; `required` data must supervise
    something."""
    samples = load_samples(path)
    if limit:
        samples = samples[:limit]
    max_tokens = max_tokens_for(config)
    tokenized = tokenize_samples(samples, tokenizer, max_tokens)
    if required and not samples:
        raise TwinbotError("no samples; run `twinbot prepare` again with more data", path)
    if required and not any(sample.num_supervised for sample in tokenized):
        raise TwinbotError(
            f"no supervised tokens: no sample keeps any of the persona's reply within {max_tokens} tokens; "
            "raise MAX_SEQ_LEN (and ROW_TOKENS) or check the data",
            path,
        )
    return rows_for(config, tokenized)
