"""Training throughput: each twinbot preset vs TRL's SFTTrainer with its default settings, against the
hardware ceiling measured in the same run; then eval loss of `fast` vs `baseline` after the same tokens.

Same data (the bundled sample, prepared), same model (embedded default unless --model) and the same LoRA
(r=16, alpha=32, all linear layers; LoRA dropout as each preset sets it, peft's default 0 for SFTTrainer).
Each run trains in a fresh Python process (what ran before in a shared process changed SFTTrainer's speed
by ~25%) and gets a warm-up, then a fixed wall-time budget; tokens/s come from each run's own counters
(twinbot: metrics.csv; SFTTrainer: the batches it consumed). "tokens" are the samples' non-padding tokens
trained on; "supervised" tokens have a loss (twinbot: the final reply only; SFTTrainer's defaults: every
token), so the tokens/s ratio is the like-for-like comparison: the same samples in less time. "computed"
tokens are those the model ran: twinbot's `fast` computes the beginning the samples of a micro-batch share
(the system prompt) once (`twinbot.finetune.rows.shared_prefix_row`), so it computes fewer tokens than it trains
on; the fraction of the ceiling is taken from computed tokens, so sharing does not inflate it.

Ceiling: this machine's dense 16-bit matmul speed (2048^3 products, measured here) divided by the FLOPs of a
standard LoRA step per token: 4 x the frozen matmul parameters (forward, and input gradients backward; the
LM head at every position) plus attention over the whole `fast` row (forward 4 x row x attention width per
layer, backward twice that). Work a trainer skips (LM head at unsupervised positions, attention across
packed samples) is not subtracted: that is how a trainer gets closer to the ceiling.

Quality: `baseline` and `fast` (two seeds, for the noise) each train one epoch on the same first
--quality-samples training samples and are evaluated on the whole eval split.

    python bench/train_throughput.py                            # all runs, ~75 s each, then quality
    python bench/train_throughput.py --seconds 5 --quality-samples 20 --model DIR   # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

from twinbot.errors import TwinbotError  # noqa: E402

TWINBOT_PRESETS = ("baseline", "optimized", "aggressive", "fast")
SFT_RUN = "sft"
# A preset run name with one of these suffixes sets TORCH_COMPILE; without one the preset's own value holds
# (`fast`: auto, which compiles on a Linux CPU with a C++ compiler).
COMPILE_SUFFIXES = {"+compile": True, "+eager": False}
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_target_modules": "all-linear"}
CEILING_MATMUL_SIZE = 2048
QUALITY_SEEDS = (42, 43)


@dataclass
class Ceiling:
    device: str
    precision: str
    matmul_gflops: float  # dense size^3 products in `precision`, measured in this run
    row_tokens: int
    flops_per_token: float
    tokens_per_second: float


@dataclass
class QualityResult:
    name: str
    seed: int
    samples: int
    tokens: int
    steps: int
    eval_loss: float | None
    seconds: float


@dataclass
class RunResult:
    name: str
    steps: int  # optimizer steps inside the timed window
    tokens: int  # the samples' non-padding tokens trained on
    supervised_tokens: int  # tokens with a loss
    seconds: float
    tokens_per_second: float
    computed_tokens_per_second: float  # tokens the model ran (twinbot computes shared beginnings once)
    supervised_tokens_per_second: float
    precision: str
    peak_memory_bytes: int | None
    lora_dropout: float
    processes: int = 1
    compiled: bool = False  # torch.compile'd (SFTTrainer: its default, off)
    tokens_ratio_vs_sft: float | None = None
    supervised_ratio_vs_sft: float | None = None
    fraction_of_ceiling: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=75.0, help="Timed budget per run after warm-up.")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=2,
        help="Warm-up before timing: SFTTrainer steps; twinbot runs a separate warm-up of at least this many "
        "micro-batches + 1 (one optimizer step for the accumulating presets).",
    )
    parser.add_argument("--model", default=None, help="Base model (default: the embedded SmolLM2-135M).")
    parser.add_argument(
        "--data", type=Path, default=None, help="Prepared data (default: prepare the sample)."
    )
    parser.add_argument(
        "--runs",
        default=",".join((*TWINBOT_PRESETS, SFT_RUN)),
        help="Comma-separated runs, in order: presets (PRESET+compile: with torch.compile) and/or 'sft'. "
        "Each run trains in a fresh Python process.",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO_ROOT / "bench" / "out" / "train_throughput.json",
        help="Results file.",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (both trainers).")
    parser.add_argument(
        "--quality-samples",
        type=int,
        default=300,
        help="Training samples for the fast-vs-baseline eval-loss comparison; 0 skips it.",
    )
    parser.add_argument("--one-run", default=None, help=argparse.SUPPRESS)  # a child process's one run
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    unknown = [run for run in runs if split_run_name(run)[0] not in (*TWINBOT_PRESETS, SFT_RUN)]
    if unknown or not runs:
        parser.error(
            f"--runs: unknown {', '.join(unknown) or '(none)'}; use {', '.join(TWINBOT_PRESETS)}, sft "
            f"(PRESET+compile / PRESET+eager: with TORCH_COMPILE=true / false)"
        )
    if args.seconds <= 0 or args.warmup_steps < 1 or args.quality_samples < 0:
        parser.error("--seconds must be > 0, --warmup-steps >= 1 and --quality-samples >= 0")
    args.runs = runs
    return args


def prepare_data(workdir: Path) -> Path:
    from twinbot.demo import prepare_sample

    data_dir = workdir / "data"
    prepare_sample(data_dir)
    return data_dir


# --- twinbot --------------------------------------------------------------------------------------


def run_twinbot(
    name: str,
    data_dir: Path,
    model: str | None,
    seconds: float,
    warmup_steps: int,
    workdir: Path,
    device: str,
) -> RunResult:
    """A sizing run of at least `warmup_steps` + 1 micro-batches measures the step time; the timed run gets
    enough steps to fill `seconds` after its first step, and its metrics.csv gives the numbers from the end
    of that first step (which holds torch.compile's compilation and first-call costs) to the end of the run."""
    from twinbot.finetune.config import PRESETS
    from twinbot.finetune.metrics import read_metrics

    preset, compiled = split_run_name(name)
    accumulation = int(PRESETS[preset]["gradient_accumulation_steps"])
    sizing_steps = max(2, math.ceil((warmup_steps + 1) / accumulation) + 1)
    sizing = _twinbot_train(
        preset, data_dir, model, workdir / f"{name}-sizing", device, sizing_steps, compiled=compiled
    )
    rows = read_metrics(sizing.output_dir / "metrics.csv")
    seconds_per_step = (rows[-1].elapsed_s - rows[0].elapsed_s) / (rows[-1].step - rows[0].step)
    steps = 1 + max(1, math.ceil(seconds / max(seconds_per_step, 1e-6)))
    summary = _twinbot_train(preset, data_dir, model, workdir / name, device, steps, compiled=compiled)
    rows = read_metrics(summary.output_dir / "metrics.csv")
    first, last = rows[0], rows[-1]
    recorded = json.loads((summary.output_dir / "summary.json").read_text(encoding="utf-8"))
    elapsed = last.elapsed_s - first.elapsed_s
    return RunResult(
        name=name,
        steps=last.step - first.step,
        tokens=last.tokens - first.tokens,
        supervised_tokens=last.supervised_tokens - first.supervised_tokens,
        seconds=round(elapsed, 3),
        tokens_per_second=(last.tokens - first.tokens) / elapsed,
        computed_tokens_per_second=(last.computed_tokens - first.computed_tokens) / elapsed,
        supervised_tokens_per_second=(last.supervised_tokens - first.supervised_tokens) / elapsed,
        precision=summary.precision,
        peak_memory_bytes=summary.peak_memory_bytes,
        lora_dropout=preset_config(preset).lora_dropout,
        processes=int(recorded["processes"]),
        compiled=bool(recorded["torch_compile"]),
    )


def split_run_name(name: str) -> tuple[str, bool | None]:
    """'fast+eager' -> ('fast', False); 'fast' -> ('fast', None): the preset's own TORCH_COMPILE."""
    for suffix, compiled in COMPILE_SUFFIXES.items():
        if name.endswith(suffix):
            return name.removesuffix(suffix), compiled
    return name, None


def preset_config(preset: str, **settings: Any) -> Any:
    from twinbot.finetune.config import resolve_train_config

    resolved = resolve_train_config(
        cli={"preset": preset, **LORA, **settings}, overrides=[], environ={}, dotenv_path=None
    )
    return resolved.config


def _twinbot_train(
    preset: str,
    data_dir: Path,
    model: str | None,
    out: Path,
    device: str,
    max_steps: int | None,
    evaluate: bool = False,
    seed: int = 42,
    compiled: bool | None = None,
) -> Any:
    """A twinbot training run. Timed runs (`evaluate` off) skip evaluation and checkpoints inside the run
    (the final step still saves and evaluates 1 eval row); quality runs evaluate the whole eval split once."""
    from twinbot.finetune.recipe import main as train_main

    never = (max_steps or 1_000_000) + 1
    config = preset_config(
        preset,
        base_model=model,
        data_dir=data_dir,
        output_dir=out,
        max_steps=max_steps,
        device=device,
        seed=seed,
        eval_every=never,
        eval_max_samples=0 if evaluate else 1,
        save_every=never,
        log_every=1,
        **({} if compiled is None else {"torch_compile": compiled}),
    )
    return train_main(config, overwrite=True)


# --- ceiling and quality --------------------------------------------------------------------------


def measure_ceiling(model: str | None, device: str) -> Ceiling:
    """See the module docstring; precision and row length are the `fast` preset's on this device."""
    from twinbot.finetune.plan.flops import shape_of_spec
    from twinbot.finetune.plan.machine import matmul_gflops
    from twinbot.finetune.runtime import make_accelerator

    fast = preset_config("fast", device=device)
    accelerator, precision = make_accelerator(fast)
    gflops = matmul_gflops(str(accelerator.device), precision.name, seconds=3.0, size=CEILING_MATMUL_SIZE)
    shape = shape_of_spec(model, fast.lora_r, fast.lora_target_modules)
    flops = 4 * (shape.body_params + shape.head_params) + 12 * shape.layers * shape.attention_dim * (
        fast.row_tokens
    )
    return Ceiling(
        device=str(accelerator.device),
        precision=precision.name,
        matmul_gflops=round(gflops, 1),
        row_tokens=fast.row_tokens,
        flops_per_token=flops,
        tokens_per_second=round(gflops * 1e9 / flops, 1),
    )


def quality_data(data_dir: Path, samples: int, workdir: Path) -> Path:
    """The first `samples` training samples and the whole eval split, as a prepared-data folder."""
    out = workdir / f"quality-{samples}"
    out.mkdir(parents=True, exist_ok=True)
    lines = (data_dir / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) < samples:
        raise TwinbotError(f"--quality-samples {samples}: the data has only {len(lines)} training samples")
    (out / "train.jsonl").write_text("".join(lines[:samples]), encoding="utf-8")
    (out / "eval.jsonl").write_text((data_dir / "eval.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    return out


def run_quality(
    data_dir: Path, samples: int, model: str | None, workdir: Path, device: str
) -> list[QualityResult]:
    subset = quality_data(data_dir, samples, workdir)
    runs = [("baseline", QUALITY_SEEDS[0])] + [("fast", seed) for seed in QUALITY_SEEDS]
    results = []
    for preset, seed in runs:
        print(f"== quality: {preset} seed {seed}, one epoch of {samples} samples", file=sys.stderr)
        started = time.perf_counter()
        summary = _twinbot_train(
            preset, subset, model, workdir / f"quality-{preset}-{seed}", device, None, True, seed
        )
        results.append(
            QualityResult(
                name=preset,
                seed=seed,
                samples=samples,
                tokens=summary.tokens_seen,
                steps=summary.steps,
                eval_loss=summary.final_eval_loss,
                seconds=round(time.perf_counter() - started, 1),
            )
        )
    return results


# --- TRL SFTTrainer ---------------------------------------------------------------------------------


class _TokenCounter:
    def __init__(self) -> None:
        self.tokens = 0
        self.supervised_tokens = 0

    def add(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        ids = inputs["input_ids"]
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        labels = inputs.get("labels")
        if labels is not None:
            self.supervised_tokens += int((labels[..., 1:] != -100).sum())


def run_sft(
    data_dir: Path, model: str | None, seconds: float, warmup_steps: int, workdir: Path, device: str
) -> RunResult:
    """SFTTrainer with SFTConfig's defaults; only harness settings (no saving/logging, CPU flag) are set."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from twinbot.fileio import read_jsonl
    from twinbot.models.loading import load_model, load_tokenizer

    counter = _TokenCounter()

    class CountingSFTTrainer(SFTTrainer):
        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if model.training:
                counter.add(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

    class WallBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.start_step = 0
            self.start_tokens = (0, 0)
            self.end: float | None = None
            self.end_step = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            if self.start is None:
                if state.global_step >= warmup_steps:
                    self.start, self.start_step = now, state.global_step
                    self.start_tokens = (counter.tokens, counter.supervised_tokens)
                return
            if now - self.start >= seconds:
                self.end, self.end_step = now, state.global_step
                control.should_training_stop = True

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # twinbot runs before this one set their own precision
    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    rows = [{"messages": row["messages"]} for _, row in read_jsonl(data_dir / "train.jsonl")]
    budget = WallBudget()
    config = SFTConfig(
        output_dir=str(workdir / "sft"),
        use_cpu=use_cpu,  # SFTConfig's default bf16=True refuses to start on CPU without it
        max_steps=1_000_000,  # the wall budget stops the run
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
    )
    if torch.cuda.is_available() and not use_cpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = CountingSFTTrainer(
        model=load_model(model),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(model),
        peft_config=LoraConfig(
            r=LORA["lora_r"],
            lora_alpha=LORA["lora_alpha"],
            # lora_dropout: peft's default (0.0), as the `fast` preset
            target_modules=LORA["lora_target_modules"],
            task_type="CAUSAL_LM",
        ),
        callbacks=[budget],
    )
    trainer.train()
    if budget.start is None or budget.end is None:
        raise TwinbotError("SFTTrainer stopped before its timed window ended; lower --warmup-steps")
    elapsed = budget.end - budget.start
    tokens = counter.tokens - budget.start_tokens[0]
    supervised = counter.supervised_tokens - budget.start_tokens[1]
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32"
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() and not use_cpu else None
    return RunResult(
        name=SFT_RUN,
        steps=budget.end_step - budget.start_step,
        tokens=tokens,
        supervised_tokens=supervised,
        seconds=elapsed,
        tokens_per_second=tokens / elapsed,
        computed_tokens_per_second=tokens / elapsed,
        supervised_tokens_per_second=supervised / elapsed,
        precision=precision,
        peak_memory_bytes=peak,
        lora_dropout=0.0,
    )


# --- report -------------------------------------------------------------------------------------------


def add_ratios(results: list[RunResult], ceiling: Ceiling) -> None:
    for result in results:
        result.fraction_of_ceiling = result.computed_tokens_per_second / ceiling.tokens_per_second
    sft = next((r for r in results if r.name == SFT_RUN), None)
    if sft is None:
        return
    for result in results:
        if sft.tokens_per_second > 0:
            result.tokens_ratio_vs_sft = result.tokens_per_second / sft.tokens_per_second
        if sft.supervised_tokens_per_second > 0:
            result.supervised_ratio_vs_sft = (
                result.supervised_tokens_per_second / sft.supervised_tokens_per_second
            )


def print_tables(results: list[RunResult], ceiling: Ceiling, quality: list[QualityResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    console.print(
        f"ceiling: {ceiling.precision} matmul {ceiling.matmul_gflops:.0f} GFLOP/s on {ceiling.device} / "
        f"{ceiling.flops_per_token / 1e6:.0f} MFLOP per token ({ceiling.row_tokens}-token rows) = "
        f"{ceiling.tokens_per_second:.0f} tokens/s"
    )
    table = Table(title="training throughput (after warm-up)")
    headers = ("run", "precision", "compiled", "processes", "dropout", "steps", "seconds", "tokens/s")
    headers += ("x SFT", "computed/s", "of ceiling")
    for header in (*headers, "supervised/s", "x SFT"):
        table.add_column(header, justify="left" if header in ("run", "precision") else "right")

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in results:
        table.add_row(
            r.name if r.name != SFT_RUN else "TRL SFTTrainer",
            r.precision,
            "yes" if r.compiled else "no",
            str(r.processes),
            f"{r.lora_dropout:g}",
            str(r.steps),
            f"{r.seconds:.1f}",
            f"{r.tokens_per_second:.0f}",
            ratio(r.tokens_ratio_vs_sft),
            f"{r.computed_tokens_per_second:.0f}",
            "-" if r.fraction_of_ceiling is None else f"{r.fraction_of_ceiling:.0%}",
            f"{r.supervised_tokens_per_second:.0f}",
            ratio(r.supervised_ratio_vs_sft),
        )
    console.print(table)
    if quality:
        table = Table(title="eval loss after the same tokens (whole eval split)")
        for header in ("run", "seed", "samples", "tokens", "steps", "eval loss", "seconds"):
            table.add_column(header, justify="left" if header == "run" else "right")
        for q in quality:
            loss = "-" if q.eval_loss is None else f"{q.eval_loss:.4f}"
            table.add_row(
                q.name, str(q.seed), str(q.samples), str(q.tokens), str(q.steps), loss, f"{q.seconds:.0f}"
            )
        console.print(table)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import os
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    try:
        trl_version = version("trl")  # only the 'sft' run needs it
    except PackageNotFoundError:
        trl_version = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "seconds_per_run": args.seconds,
        "warmup_steps": args.warmup_steps,
        "device": args.device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl_version,
        "lora": LORA,
        "notes": [
            "tokens: non-padding tokens through forward and backward, per second of the timed window",
            "supervised: tokens with a loss; twinbot supervises the final reply only, SFTTrainer's defaults "
            "every token, so compare the tokens/s column across trainers",
            "twinbot: the timed run's metrics.csv from the end of its first step to the end of its last (incl. "
            "the final eval of 1 row), after a separate sizing run; SFTTrainer: batches counted in "
            "compute_loss after warmup_steps",
        ],
    }


def one_run(args: argparse.Namespace) -> None:
    """In a child process: one timed run, its RunResult written as JSON to --result."""
    if args.one_run == SFT_RUN:
        result = run_sft(args.data, args.model, args.seconds, args.warmup_steps, args.workdir, args.device)
    else:
        result = run_twinbot(
            args.one_run, args.data, args.model, args.seconds, args.warmup_steps, args.workdir, args.device
        )
    args.result.write_text(json.dumps(asdict(result)), encoding="utf-8")


def run_in_child(name: str, args: argparse.Namespace, data_dir: Path, workdir: Path) -> RunResult:
    """Each timed run gets a fresh process: what ran before in the same process (allocator state, threads,
    torch.compile caches, twinbot's malloc tuning) changed SFTTrainer's speed by up to 25%."""
    result_path = workdir / f"{name}.result.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        *("--one-run", name, "--data", str(data_dir), "--workdir", str(workdir)),
        *("--result", str(result_path), "--seconds", str(args.seconds)),
        *("--warmup-steps", str(args.warmup_steps), "--device", args.device),
        *(("--model", args.model) if args.model else ()),
    ]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0 or not result_path.is_file():
        raise TwinbotError(f"the {name} run failed (exit code {completed.returncode}); see its output above")
    return RunResult(**json.loads(result_path.read_text(encoding="utf-8")))


def run(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    if args.one_run is not None:
        one_run(args)
        return []
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="twinbot-bench-") as tmp:
        workdir = Path(tmp)
        data_dir = args.data if args.data is not None else prepare_data(workdir)
        ceiling = measure_ceiling(args.model, args.device)
        for name in args.runs:
            print(f"== {name}: warm-up {args.warmup_steps} steps, then {args.seconds:g} s", file=sys.stderr)
            results.append(run_in_child(name, args, data_dir, workdir))
        quality = (
            run_quality(data_dir, args.quality_samples, args.model, workdir, args.device)
            if args.quality_samples
            else []
        )
    add_ratios(results, ceiling)
    print_tables(results, ceiling, quality)
    report = {
        "environment": environment(args),
        "ceiling": asdict(ceiling),
        "results": [asdict(r) for r in results],
        "quality": [asdict(q) for q in quality],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}", file=sys.stderr)
    return results


def main() -> None:
    try:
        run()
    except TwinbotError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
