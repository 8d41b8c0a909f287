"""Training throughput: each twinbot preset vs TRL's SFTTrainer with its default settings.

Same data (the bundled sample, prepared), same model (embedded default unless --model) and the same LoRA
(r=16, alpha=32, dropout 0.05, all linear layers). Each run gets a warm-up, then a fixed wall-time budget;
tokens/s come from each run's own counters (twinbot: TrainSummary; SFTTrainer: the batches it consumed).
"tokens" are non-padding tokens; "supervised" tokens have a loss (twinbot: the final reply only; SFTTrainer's
defaults: every token), so the tokens/s ratio is the like-for-like comparison.

    python bench/train_throughput.py                            # all runs, ~75 s each
    python bench/train_throughput.py --seconds 5 --model DIR    # quick end-to-end check
"""

from __future__ import annotations

import argparse
import json
import math
import platform
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
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_modules": "all-linear"}


@dataclass
class RunResult:
    name: str
    steps: int  # optimizer steps inside the timed window
    tokens: int  # non-padding tokens through forward + backward
    supervised_tokens: int  # tokens with a loss
    seconds: float
    tokens_per_second: float
    supervised_tokens_per_second: float
    precision: str
    peak_memory_bytes: int | None
    tokens_ratio_vs_sft: float | None = None
    supervised_ratio_vs_sft: float | None = None


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
        help="Comma-separated runs, in order: presets and/or 'sft'.",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO_ROOT / "bench" / "out" / "train_throughput.json",
        help="Results file.",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (both trainers).")
    args = parser.parse_args(argv)
    runs = [run.strip() for run in args.runs.split(",") if run.strip()]
    unknown = [run for run in runs if run not in (*TWINBOT_PRESETS, SFT_RUN)]
    if unknown or not runs:
        parser.error(
            f"--runs: unknown {', '.join(unknown) or '(none)'}; use {', '.join(TWINBOT_PRESETS)}, sft"
        )
    if args.seconds <= 0 or args.warmup_steps < 1:
        parser.error("--seconds must be > 0 and --warmup-steps >= 1")
    args.runs = runs
    return args


def prepare_data(workdir: Path) -> Path:
    from twinbot.demo import prepare_sample

    data_dir = workdir / "data"
    prepare_sample(data_dir)
    return data_dir


# --- twinbot --------------------------------------------------------------------------------------


def run_twinbot(
    preset: str,
    data_dir: Path,
    model: str | None,
    seconds: float,
    warmup_steps: int,
    workdir: Path,
    device: str,
) -> RunResult:
    """A warm-up run of at least `warmup_steps` + 1 micro-batches measures the step time; the timed run gets
    enough steps to fill `seconds`, and its TrainSummary gives the numbers (its loop time, without loading)."""
    from twinbot.config import PRESETS
    from twinbot.metrics import read_metrics

    accumulation = int(PRESETS[preset]["gradient_accumulation_steps"])
    warmup_run_steps = max(1, math.ceil((warmup_steps + 1) / accumulation))
    warmup = _twinbot_train(preset, data_dir, model, warmup_run_steps, workdir / f"{preset}-warmup", device)
    rows = read_metrics(warmup.output_dir / "metrics.csv")
    if len(rows) >= 2:  # without the first (cold) step
        seconds_per_step = (rows[-1].elapsed_s - rows[0].elapsed_s) / (rows[-1].step - rows[0].step)
    else:
        seconds_per_step = warmup.wall_seconds / max(warmup.steps, 1)
    steps = max(1, math.ceil(seconds / max(seconds_per_step, 1e-6)))
    summary = _twinbot_train(preset, data_dir, model, steps, workdir / preset, device)
    return RunResult(
        name=preset,
        steps=summary.steps,
        tokens=summary.tokens_seen,
        supervised_tokens=summary.supervised_tokens,
        seconds=summary.wall_seconds,
        tokens_per_second=summary.tokens_per_second,
        supervised_tokens_per_second=summary.supervised_tokens_per_second,
        precision=summary.precision,
        peak_memory_bytes=summary.peak_memory_bytes,
    )


def _twinbot_train(
    preset: str, data_dir: Path, model: str | None, max_steps: int, out: Path, device: str
) -> Any:
    from twinbot.config import resolve_train_config
    from twinbot.train import main as train_main

    resolved = resolve_train_config(
        cli={
            "preset": preset,
            "base_model": model,
            "data_dir": data_dir,
            "output_dir": out,
            "max_steps": max_steps,
            **LORA,
        },
        overrides=[
            f"DEVICE={device}",
            f"EVAL_EVERY={max_steps + 1}",  # no evaluation inside the timed window
            "EVAL_MAX_SAMPLES=1",
            f"SAVE_EVERY={max_steps + 1}",
            "LOG_EVERY=1",
        ],
        environ={},
        dotenv_path=None,
    )
    return train_main(resolved.config, overwrite=True, sources=resolved.sources)


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
    from twinbot.model import load_model, load_tokenizer

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
            lora_dropout=LORA["lora_dropout"],
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
        supervised_tokens_per_second=supervised / elapsed,
        precision=precision,
        peak_memory_bytes=peak,
    )


# --- report -------------------------------------------------------------------------------------------


def add_ratios(results: list[RunResult]) -> None:
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


def print_table(results: list[RunResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training throughput (after warm-up)")
    for header in ("run", "precision", "steps", "seconds", "tokens/s", "x SFT", "supervised/s", "x SFT"):
        table.add_column(header, justify="left" if header in ("run", "precision") else "right")

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for r in results:
        table.add_row(
            r.name if r.name != SFT_RUN else "TRL SFTTrainer",
            r.precision,
            str(r.steps),
            f"{r.seconds:.1f}",
            f"{r.tokens_per_second:.0f}",
            ratio(r.tokens_ratio_vs_sft),
            f"{r.supervised_tokens_per_second:.0f}",
            ratio(r.supervised_ratio_vs_sft),
        )
    Console(width=max(Console().width, 110)).print(table)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import os

    import torch
    import transformers
    import trl

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
        "trl": trl.__version__,
        "lora": LORA,
        "notes": [
            "tokens: non-padding tokens through forward and backward, per second of the timed window",
            "supervised: tokens with a loss; twinbot supervises the final reply only, SFTTrainer's defaults "
            "every token, so compare the tokens/s column across trainers",
            "twinbot: the timed run's TrainSummary (training loop incl. its final eval of 1 row and checkpoint, "
            "after a separate warm-up run); SFTTrainer: batches counted in compute_loss after warmup_steps",
        ],
    }


def run(argv: list[str] | None = None) -> list[RunResult]:
    args = parse_args(argv)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="twinbot-bench-") as tmp:
        workdir = Path(tmp)
        data_dir = args.data if args.data is not None else prepare_data(workdir)
        for name in args.runs:
            print(f"== {name}: warm-up {args.warmup_steps} steps, then {args.seconds:g} s", file=sys.stderr)
            if name == SFT_RUN:
                result = run_sft(data_dir, args.model, args.seconds, args.warmup_steps, workdir, args.device)
            else:
                result = run_twinbot(
                    name, data_dir, args.model, args.seconds, args.warmup_steps, workdir, args.device
                )
            results.append(result)
    add_ratios(results)
    print_table(results)
    report = {"environment": environment(args), "results": [asdict(r) for r in results]}
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
