"""ETA accuracy: `twinbot plan`'s predicted training time against the real run, |predicted - actual| / actual.

For each preset: prepare the bundled sample, size a dataset so that the preset trains for about --minutes on
this machine (by repeating the sample's train samples; a short calibration picks the size), then plan it
with the full calibration and train it for real with `python -m twinbot train`, timed from outside. Target:
error <= 10% on a run of >= 10 minutes.

    python bench/eta_accuracy.py                                       # the real run: 2 presets x >= 10 min
    python bench/eta_accuracy.py --minutes 0.3 --calibrate-seconds 3 --sizing-seconds 2 --model DIR  # check
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
from twinbot.finetune.config import ENV_KEYS, PRESETS, TrainConfig, resolve_train_config  # noqa: E402

TARGET_ERROR = 0.10


@dataclass
class Result:
    preset: str
    train_samples: int
    steps: int | None
    tokens: int | None
    predicted_seconds: float | None  # the plan's total: setup + train + eval + checkpoints + logging
    predicted_loop_seconds: float | None  # the plan without setup: what summary.json's wall_seconds covers
    actual_seconds: float | None  # `python -m twinbot train`, process start to exit
    actual_loop_seconds: float | None  # the training loop alone (summary.json wall_seconds)
    error: float | None  # |predicted - actual| / actual
    loop_error: float | None
    calibration_tokens_per_second: float | None
    actual_tokens_per_second: float | None
    peak_memory_bytes: int | None
    problem: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="Training time per preset to aim for.")
    parser.add_argument("--presets", default="baseline,fast", help="Comma-separated presets to check.")
    parser.add_argument("--model", default=None, help="Base model (default: the embedded SmolLM2-135M).")
    parser.add_argument(
        "--data", type=Path, default=None, help="Prepared data to repeat (default: the sample)."
    )
    parser.add_argument(
        "--calibrate-seconds", type=float, default=60.0, help="The plan's calibration per preset."
    )
    parser.add_argument(
        "--sizing-seconds", type=float, default=20.0, help="Calibration used to size the data."
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=16,
        help="EVAL_MAX_SAMPLES for plan and run (the default 200 makes evaluation most of a 10-minute CPU run).",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="Keep data and runs here (default: temp).")
    parser.add_argument(
        "--json", type=Path, default=REPO_ROOT / "bench" / "out" / "eta_accuracy.json", help="Results file."
    )
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown or not presets:
        parser.error(f"--presets: unknown {', '.join(unknown) or '(none)'}; use {', '.join(PRESETS)}")
    positive = (args.minutes, args.calibrate_seconds, args.sizing_seconds)
    if min(positive) <= 0 or args.eval_samples < 0:
        parser.error("--minutes, --calibrate-seconds and --sizing-seconds must be > 0, --eval-samples >= 0")
    args.presets = presets
    return args


def config_for(preset: str, data_dir: Path, model: str | None, eval_samples: int) -> dict[str, TrainConfig]:
    """The preset's settings without the environment or any .env (the training subprocess gets neither),
    with EVAL_MAX_SAMPLES as the training run gets it."""
    resolved = resolve_train_config(
        cli={"preset": preset, "data_dir": data_dir, "base_model": model},
        overrides=[f"EVAL_MAX_SAMPLES={eval_samples}"],
        environ={},
        dotenv_path=None,
    )
    return {preset: resolved.config}


def base_data(args: argparse.Namespace, workdir: Path) -> Path:
    if args.data is not None:
        return args.data
    from twinbot.demo import prepare_sample

    data_dir = workdir / "sample"
    prepare_sample(data_dir)
    return data_dir


def sized_data(base: Path, out: Path, samples: int) -> None:
    """train.jsonl: the base train samples repeated (cut) to `samples` lines; eval.jsonl as it is."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [line for line in (base / "train.jsonl").read_bytes().splitlines() if line.strip()]
    with (out / "train.jsonl").open("wb") as fh:
        for line in itertools.islice(itertools.cycle(lines), samples):
            fh.write(line + b"\n")
    if (base / "eval.jsonl").is_file():
        shutil.copyfile(base / "eval.jsonl", out / "eval.jsonl")


def samples_for(args: argparse.Namespace, preset: str, base: Path) -> int:
    """How many train samples make about --minutes of training, from a short calibration on the base data.

    The run's time for N samples: setup + N x train seconds per sample + its evaluations and checkpoints
    (about 10 of each once there are 10 steps or more), with the sizing calibration's rates.
    """
    from twinbot.finetune.batches import cadence
    from twinbot.finetune.plan.planner import make_plan
    from twinbot.finetune.plan.workload import events, optimizer_steps

    config = config_for(preset, base, args.model, args.eval_samples)
    plan = make_plan(config, base, calibrate_seconds=args.sizing_seconds)
    planned = plan.presets[0]
    estimate, work = planned.estimate, planned.workload
    if estimate is None or work is None:
        raise TwinbotError(f"{preset}: sizing calibration failed ({planned.detail})")
    settings = config[preset]
    base_samples = plan.data.train_samples
    per_eval = estimate.eval_seconds / work.evaluations if work.evaluations else 0.0
    per_save = estimate.checkpoint_seconds / (work.checkpoints + 1)

    def seconds(samples: int) -> float:
        rows = max(1, round(work.rows * samples / base_samples))
        steps = optimizer_steps(settings, rows, work.micro_batch)
        evaluations = events(cadence(settings.eval_every, steps), steps) if work.evaluations else 0
        saves = events(cadence(settings.save_every, steps), steps) + 1
        train = estimate.train_seconds * samples / base_samples
        return estimate.setup_seconds + train + evaluations * per_eval + saves * per_save

    target = args.minutes * 60
    low, high = 8, 8
    while seconds(high) < target:
        low, high = high, high * 2
    while low < high:  # the fewest samples that reach the target
        middle = (low + high) // 2
        low, high = (middle + 1, high) if seconds(middle) < target else (low, middle)
    return high


def train_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in set(ENV_KEYS.values())}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def run_preset(args: argparse.Namespace, preset: str, base: Path, workdir: Path) -> Result:
    from twinbot.finetune.plan.planner import make_plan
    from twinbot.finetune.plan.render import render

    samples = samples_for(args, preset, base)
    data_dir = workdir / f"data-{preset}"
    sized_data(base, data_dir, samples)
    print(f"{preset}: {samples:,} train samples; planning with {args.calibrate_seconds:g} s calibration...")
    plan = make_plan(
        config_for(preset, data_dir, args.model, args.eval_samples),
        data_dir,
        calibrate_seconds=args.calibrate_seconds,
    )
    print(render(plan))
    planned = plan.presets[0]
    estimate, calibration, workload = planned.estimate, planned.calibration, planned.workload
    result = Result(
        preset=preset,
        train_samples=samples,
        steps=workload.steps if workload else None,
        tokens=workload.tokens if workload else None,
        predicted_seconds=estimate.total_seconds if estimate else None,
        predicted_loop_seconds=estimate.total_seconds - estimate.setup_seconds if estimate else None,
        actual_seconds=None,
        actual_loop_seconds=None,
        error=None,
        loop_error=None,
        calibration_tokens_per_second=(
            calibration.train_tokens / calibration.train_seconds
            if calibration and calibration.train_seconds
            else None
        ),
        actual_tokens_per_second=None,
        peak_memory_bytes=planned.peak_memory_bytes,
    )
    if estimate is None:
        result.problem = f"plan: {planned.status} ({planned.detail})"
        return result

    run_dir = workdir / f"run-{preset}"
    command = [sys.executable, "-m", "twinbot", "train", "--data", str(data_dir), "--out", str(run_dir)]
    command += ["--preset", preset, "--overwrite", "--set", f"EVAL_MAX_SAMPLES={args.eval_samples}"]
    command += ["--model", args.model] if args.model else []
    print(f"{preset}: training for real (predicted {estimate.total_seconds / 60:.1f} min)...", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=workdir, env=train_env(), check=False)
    result.actual_seconds = time.perf_counter() - started
    if completed.returncode != 0:
        result.problem = f"train exited with {completed.returncode}"
        return result
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    result.actual_loop_seconds = float(summary["wall_seconds"])
    result.actual_tokens_per_second = float(summary["tokens_per_second"])
    result.error = abs(estimate.total_seconds - result.actual_seconds) / result.actual_seconds
    assert result.predicted_loop_seconds is not None
    result.loop_error = (
        abs(result.predicted_loop_seconds - result.actual_loop_seconds) / result.actual_loop_seconds
    )
    if summary["steps"] != result.steps:
        result.problem = f"plan counted {result.steps} steps, training ran {summary['steps']}"
    return result


def markdown(results: list[Result], environment: dict[str, Any]) -> str:
    def minutes(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / 60:.1f}"

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = [
        f"### ETA accuracy (`bench/eta_accuracy.py`, {environment['date']})",
        "",
        f"{environment['machine']}; model {environment['model']}; calibration {environment['calibrate_seconds']:g} s"
        f" per preset; EVAL_MAX_SAMPLES={environment['eval_samples']}; load average "
        f"{environment['loadavg_before']} before, {environment['loadavg_after']} after.",
        "",
        "| preset | samples | steps | tokens | predicted min | actual min | error | loop error | calib tok/s | run tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.preset} | {r.train_samples:,} | {r.steps or '-'} | {r.tokens or '-'} | "
            f"{minutes(r.predicted_seconds)} | {minutes(r.actual_seconds)} | {percent(r.error)} | "
            f"{percent(r.loop_error)} | "
            f"{'-' if r.calibration_tokens_per_second is None else f'{r.calibration_tokens_per_second:.0f}'} | "
            f"{'-' if r.actual_tokens_per_second is None else f'{r.actual_tokens_per_second:.0f}'} |"
        )
    problems = [f"{r.preset}: {r.problem}" for r in results if r.problem]
    if problems:
        lines += ["", "Problems: " + "; ".join(problems)]
    lines += [
        "",
        "error: the plan's total against `python -m twinbot train` from process start to exit (includes "
        "interpreter start and imports, which the plan does not count). loop error: the plan without setup "
        "against the training loop's own wall time (summary.json).",
    ]
    return "\n".join(lines)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run(argv: list[str] | None = None) -> list[Result]:
    import torch

    args = parse_args(argv)
    environment: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "model": args.model or "embedded SmolLM2-135M-Instruct",
        "minutes": args.minutes,
        "calibrate_seconds": args.calibrate_seconds,
        "sizing_seconds": args.sizing_seconds,
        "eval_samples": args.eval_samples,
        "loadavg_before": loadavg(),
    }
    with working_folder(args.workdir) as workdir:
        base = base_data(args, workdir)
        results = [run_preset(args, preset, base, workdir) for preset in args.presets]
    environment["loadavg_after"] = loadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"environment": environment, "results": [asdict(r) for r in results]}, indent=2) + "\n",
        encoding="utf-8",
    )
    print()
    print(markdown(results, environment))
    print(f"\nresults written to {args.json}")
    return results


@contextlib.contextmanager
def working_folder(workdir: Path | None) -> Iterator[Path]:
    """--workdir as given (kept), else a temporary folder removed at the end."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="twinbot-eta-") as tmp:
        yield Path(tmp)


def main() -> None:
    try:
        results = run()
    except TwinbotError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        sys.exit(2)
    failed = [r for r in results if r.problem or r.error is None or r.error > TARGET_ERROR]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
