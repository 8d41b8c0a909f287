"""`twinbot plan`: step and token counting, calibration, extrapolation, OOM reporting, JSON, schedules, errors."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

from twinbot import cli
from twinbot.data.prepared import COMPARE_FILE
from twinbot.errors import TwinbotError
from twinbot.fileio import write_json, write_jsonl
from twinbot.finetune.batches import cadence, max_tokens_for, rows_for
from twinbot.finetune.config import ENV_KEYS, TrainConfig
from twinbot.finetune.plan.calibration import calibrate, run_micro_batch, spread_order
from twinbot.finetune.plan.estimate import extrapolate, startup_line
from twinbot.finetune.plan.flops import ModelShape, epoch_flops, model_shape, shape_of_spec
from twinbot.finetune.plan.gpus import find_gpu, scale_to_gpu, target_gpu
from twinbot.finetune.plan.machine import Bookkeeping, matmul_gflops
from twinbot.finetune.plan.planner import make_plan, resolve_preset_configs, run_plan
from twinbot.finetune.plan.recommendation import NOT_MEASURED, read_quality, recommend
from twinbot.finetune.plan.records import (
    Calibration,
    Estimate,
    Plan,
    PresetPlan,
    PresetSettings,
    Quality,
    Workload,
)
from twinbot.finetune.plan.render import render
from twinbot.finetune.plan.schedule import parse_start, schedule_line
from twinbot.finetune.plan.workload import TokenizedData, count_workload, events, optimizer_steps

WORDS = ["ok", "sure", "later", "bus", "lunch", "see", "you", "again", "great", "maybe", "tomorrow", "yes"]
# Small, fast settings shared by the tests that train: tiny rows, small LoRA, few eval samples.
SMALL = {
    "row_tokens": 128,
    "max_seq_len": 128,
    "lora_r": 4,
    "lora_alpha": 8,
    "eval_max_samples": 4,
    "device": "cpu",
    "processes": 1,  # one test plans a run in several processes
    "torch_compile": False,  # compiling would take most of a short calibration
}
SMALL_SETS = ["--set", "ROW_TOKENS=128", "--set", "MAX_SEQ_LEN=128", "--set", "LORA_R=4"]
SMALL_SETS += ["--set", "EVAL_MAX_SAMPLES=4", "--set", "DEVICE=cpu", "--set", "PROCESSES=1"]
SMALL_SETS += ["--set", "TORCH_COMPILE=false"]


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def sample(rng: random.Random, turns: int) -> dict[str, Any]:
    messages = [{"role": "system", "content": "You are Sam. Reply the way Sam does."}]
    for index in range(turns):
        role = "user" if (turns - index) % 2 == 0 else "assistant"
        messages.append({"role": role, "content": sentence(rng, 1, 12)})
    return {"messages": messages, "conversation_id": f"c{rng.randint(0, 999)}", "style_only": False}


def write_data(folder: Path, train: int = 12, eval_: int = 4, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", [sample(rng, rng.choice([1, 2, 4, 6])) for _ in range(train)])
    if eval_:
        write_jsonl(folder / "eval.jsonl", [sample(rng, 2) for _ in range(eval_)])
    return folder


def config_for(model_dir: Path, data_dir: Path, preset: str, **changes: Any) -> TrainConfig:
    return resolve_preset_configs(
        [preset], data_dir, str(model_dir), None, overrides=[], environ={}, dotenv_path=None
    )[preset].model_copy(update={**SMALL, **changes})


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No training settings from the environment or a .env file."""
    for key in ENV_KEYS.values():
        monkeypatch.delenv(key, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["twinbot", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


# --- counting --------------------------------------------------------------------------------------------


def steps(rows: int, micro_batch: int, ga: int, epochs: float, max_steps: int | None = None) -> int:
    config = TrainConfig(gradient_accumulation_steps=ga, epochs=epochs, max_steps=max_steps)
    return optimizer_steps(config, rows, micro_batch)


def test_steps_follow_the_origin_note_formula() -> None:
    # 63k samples, micro-batch 1: the origin note's 3,938 / 1,969 steps; 984 is rounded down there, but the
    # partial last step still runs
    assert steps(63_000, 1, 16, 1) == 3_938
    assert steps(63_000, 1, 32, 1) == 1_969
    assert steps(63_000, 1, 64, 1) == 985
    assert steps(63_000, 1, 16, 2) == 7_876
    assert steps(63_000, 1, 16, 0.5) == 1_969
    assert steps(1_000, 4, 1, 1) == 250  # packed rows, micro-batch 4
    assert steps(1_000, 4, 1, 1, max_steps=7) == 7


def test_evaluation_and_checkpoint_counts() -> None:
    assert cadence(0, 3_938) == 394
    assert events(394, 3_938) == 10  # nine at multiples of 394, plus the last step
    assert events(5, 10) == 2
    assert cadence(0, 3) == 1
    assert events(1, 3) == 3


def test_token_counts_match_a_direct_tokenization(tiny_model_dir: Path, tmp_path: Path) -> None:
    from twinbot.data.prepared import load_samples
    from twinbot.models.loading import load_tokenizer

    data_dir = write_data(tmp_path / "data", train=10)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    total = supervised = 0
    for item in load_samples(data_dir / "train.jsonl"):
        messages = [{"role": t.role, "content": t.content} for t in item.messages]
        rendered = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        total += len(rendered) - 1  # the template's newline after the final <|im_end|> is not trained on
        supervised += len(tokenizer(item.messages[-1].content, add_special_tokens=False)["input_ids"]) + 1

    data = TokenizedData(data_dir, tokenizer)
    for preset in ("baseline", "fast"):
        config = config_for(tiny_model_dir, data_dir, preset, row_tokens=1024, max_seq_len=1024)
        tokenized, _ = data.train(max_tokens_for(config))
        rows = rows_for(config, tokenized)
        work = count_workload(config, rows, [], 1)
        assert (work.tokens, work.supervised_tokens) == (total, supervised)
    assert work.rows < 10  # packed: fewer rows than samples, the same tokens


def test_counts_match_a_real_training_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    from twinbot.finetune.recipe import main as train_main
    from twinbot.models.loading import load_tokenizer
    from twinbot.runs import list_checkpoints

    data_dir = write_data(tmp_path / "data", train=14, eval_=3)
    config = config_for(
        tiny_model_dir,
        data_dir,
        "baseline",
        output_dir=tmp_path / "run",
        gradient_accumulation_steps=4,
        batch_size=2,
        gradient_checkpointing=False,
        keep_checkpoints=10,
        lora_dropout=0.0,
    )
    data = TokenizedData(data_dir, load_tokenizer(str(tiny_model_dir)))
    rows = rows_for(config, data.train(max_tokens_for(config))[0])
    eval_rows = rows_for(config, data.eval(max_tokens_for(config), config.eval_max_samples)[0])
    work = count_workload(config, rows, eval_rows, 2)
    summary = train_main(config)
    assert work.steps == summary.steps == 2  # 14 samples / micro-batch 2 = 7 micro-batches / GA 4
    assert work.tokens == summary.tokens_seen
    assert work.supervised_tokens == summary.supervised_tokens
    metrics = (tmp_path / "run" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    header = metrics[0].split(",")
    evaluated = [line for line in metrics[1:] if line.split(",")[header.index("eval_loss")]]
    assert work.evaluations == len(evaluated) == 2
    assert work.checkpoints == len(list_checkpoints(tmp_path / "run")) == 2


# --- calibration and extrapolation -----------------------------------------------------------------------


def test_calibration_with_a_tiny_budget_measures_speed(tiny_model_dir: Path, tmp_path: Path) -> None:
    from twinbot.models.loading import load_tokenizer

    data_dir = write_data(tmp_path / "data")
    config = config_for(tiny_model_dir, data_dir, "baseline")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = TokenizedData(data_dir, tokenizer)
    rows = rows_for(config, data.train(max_tokens_for(config))[0])
    eval_rows = rows_for(config, data.eval(max_tokens_for(config), 4)[0])
    result = calibrate(config, rows, eval_rows, tokenizer.pad_token_id, budget_seconds=0.3)
    assert result.status == "ok", result.detail
    assert result.train_tokens > 0 and result.train_seconds > 0
    assert result.train_tokens / result.train_seconds > 0
    assert result.warmup_micro_batches >= 1 and result.train_micro_batches >= 1
    assert result.eval_tokens > 0 and result.eval_seconds > 0
    assert result.checkpoint_seconds is not None and result.checkpoint_seconds > 0
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes > 0
    assert result.precision == "fp32" and result.micro_batch == 1


class FakeClock:
    """time.perf_counter for calibration, advanced by the fake micro-batches and evaluations below."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def calibrate_on_a_fake_clock(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    budget: float,
    train_seconds: list[float],
    eval_seconds: list[float],
) -> Calibration:
    """A real calibration whose micro-batches and evaluations take the given seconds on a fake clock (the
    last value repeats), each of a micro-batch 100 tokens."""
    from twinbot.models.loading import load_tokenizer

    clock = FakeClock()
    steps = {"train": iter(train_seconds), "eval": iter(eval_seconds)}
    last: dict[str, float] = {}

    def take(kind: str) -> None:
        last[kind] = next(steps[kind], last.get(kind, 0.0))
        clock.now += last[kind]

    def micro_batch(*args: Any) -> int:
        take("train")
        return 100

    def evaluation(model: Any, rows: list[Any], *args: Any) -> float:
        take("eval")
        return 1.0

    monkeypatch.setattr("twinbot.finetune.plan.calibration.time", clock)
    monkeypatch.setattr("twinbot.finetune.plan.calibration.run_micro_batch", micro_batch)
    monkeypatch.setattr("twinbot.finetune.plan.calibration.evaluate", evaluation)
    data_dir = write_data(tmp_path / "data", train=12, eval_=8)
    config = config_for(tiny_model_dir, data_dir, "baseline", eval_max_samples=8)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = TokenizedData(data_dir, tokenizer)
    rows = rows_for(config, data.train(max_tokens_for(config))[0])
    eval_rows = rows_for(config, data.eval(max_tokens_for(config), 8)[0])
    return calibrate(config, rows, eval_rows, tokenizer.pad_token_id, budget_seconds=budget)


def test_calibration_times_neither_compiling_nor_a_cold_first_evaluation(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 30 s budget of which compiling takes 40 s, a recompilation 30 s more, and the first evaluation is 100x
    slower: the steady speeds are still what is measured, on at least the minimum of timed batches (issue 18: one cold eval batch once
    made a 526 s run a 1,499 s estimate)."""
    result = calibrate_on_a_fake_clock(
        tiny_model_dir,
        tmp_path,
        monkeypatch,
        30.0,
        train_seconds=[40.0, 0.5, 0.5, 0.5, 30.0, 0.5],  # compiling, then a recompilation among the timed
        eval_seconds=[5.0, 0.05],
    )
    assert result.status == "ok", result.detail
    assert result.warmup_micro_batches == 3 and result.train_micro_batches >= 7  # the 30 s one: a warm-up
    assert result.seconds_per_token == pytest.approx(0.5 / 100)
    assert result.warmup_seconds == pytest.approx(40.5 + 30.0)
    assert result.eval_batches >= 3 and result.eval_seconds == pytest.approx(0.05 * result.eval_batches)
    assert result.train_relative_error == pytest.approx(0.0) and result.shortfall is None
    estimate = extrapolate(fixed_workload(), result, 0.0)
    assert estimate.relative_error is not None and estimate.relative_error < 0.01


def test_calibration_that_measured_too_little_says_so(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Micro-batches of 20 s in a 30 s budget: it times beyond its share, up to 3x it (4 of the 8 wanted),
    then the plan calls the estimate uncertain and says what to do."""
    result = calibrate_on_a_fake_clock(
        tiny_model_dir,
        tmp_path,
        monkeypatch,
        30.0,
        train_seconds=[20.0],
        eval_seconds=[1.0],
    )
    assert result.status == "ok", result.detail
    assert result.train_micro_batches == 4 and result.eval_batches >= 3
    assert result.shortfall == "timed only 4 training micro-batch(es) of 8 within 3x the budget"
    plan = PresetPlan(
        preset="fast",
        status="ok",
        settings=PresetSettings(
            precision="fp32",
            use_fp16=False,
            gradient_checkpointing=False,
            packing=True,
            row_tokens=128,
            batch_size=1,
            gradient_accumulation_steps=1,
            epochs=1,
            max_steps=None,
        ),
        workload=fixed_workload(),
        calibration=result,
        estimate=extrapolate(fixed_workload(), result, 0.0),
        start=datetime(2026, 11, 27, 18, 0),
    )
    from twinbot.finetune.plan.render import _uncertainty

    assert "UNCERTAIN: timed only 4 training micro-batch(es)" in _uncertainty(plan)
    assert "--calibrate-seconds" in _uncertainty(plan)
    steady = plan.model_copy(update={"calibration": result.model_copy(update={"shortfall": None})})
    assert _uncertainty(steady).startswith("; total +-")


def test_calibration_order_spreads_over_lengths() -> None:
    rng = random.Random(1)
    sizes = [rng.randint(10, 1000) for _ in range(500)]
    order = spread_order(sizes)
    assert sorted(order) == list(range(500))  # every micro-batch, once
    first = sorted(sizes[i] for i in order[:8])
    ranked = sorted(sizes)
    assert first[0] <= ranked[125] and first[-1] >= ranked[375]  # short and long ones early
    mean_of_first = sum(sizes[i] for i in order[:16]) / 16
    assert abs(mean_of_first - sum(sizes) / 500) < 0.1 * sum(sizes) / 500
    assert spread_order([5]) == [0] and spread_order([]) == []


def fixed_workload(**changes: Any) -> Workload:
    values: dict[str, Any] = {
        "micro_batch": 1,
        "gradient_accumulation_steps": 16,
        "rows": 63_000,
        "micro_batches_per_epoch": 63_000,
        "steps": 3_938,
        "tokens": 1_000_000,
        "supervised_tokens": 200_000,
        "evaluations": 10,
        "eval_tokens_per_evaluation": 5_000,
        "checkpoints": 10,
    }
    return Workload(**{**values, **changes})


def fixed_calibration(**changes: Any) -> Calibration:
    values: dict[str, Any] = {
        "status": "ok",
        "device": "cpu",
        "precision": "fp32",
        "micro_batch": 1,
        "budget_seconds": 60,
        "load_seconds": 3.0,
        "train_tokens": 1_000,
        "train_seconds": 2.0,
        "eval_tokens": 500,
        "eval_seconds": 0.25,
        "checkpoint_seconds": 0.5,
    }
    return Calibration(**{**values, **changes})


def test_extrapolation_arithmetic() -> None:
    estimate = extrapolate(fixed_workload(), fixed_calibration(), setup_seconds=7.0)
    assert estimate.train_seconds == pytest.approx(1_000_000 * 2.0 / 1_000)  # 2 ms per token
    assert estimate.eval_seconds == pytest.approx(10 * 5_000 * 0.25 / 500)
    assert estimate.checkpoint_seconds == pytest.approx(11 * 0.5)  # 10 checkpoints + the final adapter
    assert estimate.setup_seconds == pytest.approx(7.0 + 3.0)
    assert estimate.total_seconds == pytest.approx(2_000 + 25 + 5.5 + 10)
    assert estimate.hours == pytest.approx(estimate.total_seconds / 3600)

    # the warm-up's cost beyond the steady speed is paid once by a real run too
    warm = extrapolate(fixed_workload(), fixed_calibration(warmup_tokens=100, warmup_seconds=1.0), 7.0)
    assert warm.setup_seconds == pytest.approx(7.0 + 3.0 + (1.0 - 100 * 0.002))

    # no eval measured: forward-only at a third of a training token's cost
    no_eval = extrapolate(fixed_workload(), fixed_calibration(eval_tokens=0, eval_seconds=0.0), 0.0)
    assert no_eval.eval_seconds == pytest.approx(10 * 5_000 * 0.002 / 3)

    # gradient accumulation changes steps, not tokens, so not the time
    fewer_steps = extrapolate(
        fixed_workload(steps=985, gradient_accumulation_steps=64), fixed_calibration(), 7.0
    )
    assert fewer_steps.train_seconds == estimate.train_seconds

    logged = extrapolate(
        fixed_workload(), fixed_calibration(), 0.0, Bookkeeping(1.0, 0.001, 0.2), log_every=1
    )
    # a row per step; a plot after each evaluation but the last, and one at the end
    assert logged.logging_seconds == pytest.approx(1.0 + 3_938 * 0.001 + 10 * 0.2)


def test_target_gpu_scales_compute_by_published_peaks() -> None:
    gpu = target_gpu("RTX 4090")
    assert find_gpu("NVIDIA GeForce RTX 4090") == gpu
    assert find_gpu("NVIDIA H100 80GB HBM3") == target_gpu("h100")
    assert find_gpu("a potato") is None
    estimate = extrapolate(fixed_workload(), fixed_calibration(), 7.0)
    scaled = scale_to_gpu(estimate, here_tflops=gpu.bf16_tflops / 10, gpu=gpu, precision_there="bf16")
    assert scaled.train_seconds == pytest.approx(estimate.train_seconds / 10)
    assert scaled.eval_seconds == pytest.approx(estimate.eval_seconds / 10)
    assert scaled.setup_seconds == estimate.setup_seconds
    assert scaled.extrapolated_to == "RTX 4090"
    fp32 = scale_to_gpu(estimate, here_tflops=gpu.fp32_tflops, gpu=gpu, precision_there="fp32")
    assert fp32.train_seconds == pytest.approx(estimate.train_seconds)


# --- whole plans -----------------------------------------------------------------------------------------


def test_out_of_memory_preset_is_reported_in_the_table(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = write_data(tmp_path / "data")
    configs = {
        preset: config_for(tiny_model_dir, data_dir, preset, use_fp16=False)
        for preset in ("baseline", "fast")
    }
    real_step, real_calibrate = run_micro_batch, calibrate

    def out_of_memory(*args: Any, **kwargs: Any) -> int:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def calibrate_with_oom(config: TrainConfig, *args: Any, **kwargs: Any) -> Calibration:
        monkeypatch.setattr(
            "twinbot.finetune.plan.calibration.run_micro_batch",
            out_of_memory if config.preset == "baseline" else real_step,
        )
        return real_calibrate(config, *args, **kwargs)

    monkeypatch.setattr("twinbot.finetune.plan.planner.calibrate", calibrate_with_oom)
    result = make_plan(configs, data_dir, calibrate_seconds=0.3, start=datetime(2026, 11, 27, 18, 0))
    baseline, fast = result.presets
    assert (baseline.status, fast.status) == ("out_of_memory", "ok")
    assert baseline.estimate is None and baseline.done is None
    assert fast.estimate is not None and fast.done is not None
    text = render(result)
    baseline_row = next(line for line in text.splitlines() if line.startswith("| baseline"))
    assert baseline_row.rstrip(" |").endswith("out of memory")
    assert "baseline: out of memory" in text
    assert "n/a (no baseline)" in text
    assert result.recommendation.preset == "fast"


def test_json_plan_schema(
    tiny_model_dir: Path,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = write_data(tmp_path / "data")
    args = ["plan", "--data", str(data_dir), "--model", str(tiny_model_dir), "--presets", "baseline,fast"]
    args += ["--calibrate-seconds", "0.3", "--start", "fri 18:00", "--json", *SMALL_SETS]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["twinbot_plan"] == 1 and data["method"] == "calibrated"
    assert data["data"]["train_samples"] == 12 and data["data"]["eval_samples"] == 4
    assert [p["preset"] for p in data["presets"]] == ["baseline", "fast"]
    for preset in data["presets"]:
        assert preset["status"] == "ok"
        assert preset["workload"]["steps"] >= 1 and preset["workload"]["tokens"] > 0
        assert preset["calibration"]["train_tokens"] > 0
        estimate = preset["estimate"]
        parts = ("setup_seconds", "train_seconds", "eval_seconds", "checkpoint_seconds", "logging_seconds")
        assert estimate["total_seconds"] == pytest.approx(sum(estimate[part] for part in parts))
        assert datetime.fromisoformat(preset["done"]) > datetime.fromisoformat(preset["start"])
    assert data["presets"][0]["time_saved"] == 0
    assert datetime.fromisoformat(data["start"]).strftime("%a %H:%M") == "Fri 18:00"
    assert data["recommendation"]["preset"] in ("baseline", "fast")
    assert data["quality"]["measured"] is False
    assert Plan.model_validate(data).presets[1].preset == "fast"
    assert "calibrating baseline" in err  # progress goes to stderr, not into the JSON


def test_no_calibrate_is_a_rough_analytic_estimate(
    tiny_model_dir: Path,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from twinbot.finetune.plan import gpus

    # On an L4 the tiny model's compute takes microseconds, so the totals of the two presets differed by the
    # noise of the setup, disk and logging costs measured here (a busy machine: tests in parallel), which then
    # decided which preset came out faster and so the reason given. Slow made-up peaks (4x apart, as fp32 and
    # bf16 are) make compute what separates them.
    def slow_peak(gpu: gpus.GpuSpec, precision: str) -> float:
        return 1e-6 if precision == "fp32" else 4e-6  # TFLOP/s

    monkeypatch.setattr(gpus, "peak_tflops", slow_peak)
    data_dir = write_data(tmp_path / "data")
    args = ["plan", "--data", str(data_dir), "--model", str(tiny_model_dir), "--no-calibrate"]
    args += ["--presets", "baseline,optimized", "--target-gpu", "l4", *SMALL_SETS]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "rough (analytic)" in out
    assert "extrapolation to L4" in out
    assert "| baseline" in out and "| optimized" in out
    assert "GA 16 -> 32 changes no compute" in out


def test_model_shape_counts_lora_like_peft(tiny_model_dir: Path) -> None:
    from twinbot.finetune.lora import apply_lora
    from twinbot.models.loading import load_model

    plain = shape_of_spec(str(tiny_model_dir), 4, "all-linear")
    peft_model = apply_lora(load_model(str(tiny_model_dir)), 4, 8, 0.0, "all-linear")
    assert model_shape(peft_model) == plain
    # hidden 64, 2 layers, MLP 128, 4 query heads / 2 kv heads of 16: q,o 64x64, k,v 64x32, gate/up/down 64x128
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128
    assert plain.body_params == 2 * per_layer
    assert plain.layers == 2 and plain.attention_dim == 64
    assert plain.lora_params == 2 * 4 * (2 * (64 + 64) + 2 * (64 + 32) + 3 * (64 + 128))


def test_startup_line_is_labeled_and_quick(tiny_model_dir: Path, tmp_path: Path) -> None:
    from twinbot.models.loading import load_model, load_tokenizer

    data_dir = write_data(tmp_path / "data")
    config = config_for(tiny_model_dir, data_dir, "baseline")
    data = TokenizedData(data_dir, load_tokenizer(str(tiny_model_dir)))
    rows = rows_for(config, data.train(max_tokens_for(config))[0])
    model = load_model(str(tiny_model_dir))
    matmul_gflops.cache_clear()
    rng_before = torch.get_rng_state()
    line = startup_line(config, model, rows, [], 1, "cpu", "fp32")
    assert torch.equal(torch.get_rng_state(), rng_before)  # training after it draws the same dropout masks
    assert line.startswith("plan: at least ")
    assert "1 steps" in line and "rough analytic lower bound" in line
    assert startup_line(config, object(), rows, [], 1, "cpu", "fp32").startswith("plan: no estimate (")


# --- schedules -------------------------------------------------------------------------------------------

WEDNESDAY = datetime(2026, 11, 25, 17, 16)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", WEDNESDAY),
        ("", WEDNESDAY),
        ("fri 18:00", datetime(2026, 11, 27, 18, 0)),
        ("Friday 18:00", datetime(2026, 11, 27, 18, 0)),
        ("wed 18:00", datetime(2026, 11, 25, 18, 0)),  # later today
        ("wed 09:00", datetime(2026, 12, 2, 9, 0)),  # already past today: next week
        ("mon", datetime(2026, 11, 30, 0, 0)),
        ("tomorrow 07:30", datetime(2026, 11, 26, 7, 30)),
        ("today 23:05", datetime(2026, 11, 25, 23, 5)),
        ("18:30", datetime(2026, 11, 25, 18, 30)),
        ("2026-12-01T06:00", datetime(2026, 12, 1, 6, 0)),
        ("2026-12-01 06:00", datetime(2026, 12, 1, 6, 0)),
    ],
)
def test_start_times(text: str, expected: datetime) -> None:
    assert parse_start(text, now=WEDNESDAY) == expected


@pytest.mark.parametrize(
    "text", ["someday", "fri 25:00", "fri 18:75", "12", "frogday 10:00", "fri 18:00:00x"]
)
def test_bad_start_times(text: str) -> None:
    with pytest.raises(TwinbotError, match="--start"):
        parse_start(text, now=WEDNESDAY)


def test_schedule_line_format() -> None:
    settings = PresetSettings(
        precision="bf16",
        use_fp16=True,
        gradient_checkpointing=True,
        packing=False,
        row_tokens=1024,
        batch_size=1,
        gradient_accumulation_steps=32,
        epochs=1,
        max_steps=None,
    )
    start = datetime(2026, 11, 27, 18, 0)
    done = datetime(2026, 11, 28, 3, 12)
    preset = PresetPlan(preset="optimized", status="ok", settings=settings, start=start, done=done)
    assert schedule_line(preset, start) == "optimized: fri 18:00 -> sat 03:12"
    later = preset.model_copy(update={"done": datetime(2026, 12, 8, 3, 12)})
    assert schedule_line(later, start) == "optimized: fri 18:00 -> tue 2026-12-08 03:12"
    oom = preset.model_copy(update={"done": None, "status": "out_of_memory"})
    assert schedule_line(oom, start) == "optimized: out of memory"


# --- recommendation and quality --------------------------------------------------------------------------


def preset_plan(name: str, seconds: float, precision: str, ga: int, **settings: Any) -> PresetPlan:
    values: dict[str, Any] = {
        "precision": precision,
        "use_fp16": precision != "fp32",
        "gradient_checkpointing": True,
        "packing": False,
        "row_tokens": 1024,
        "batch_size": 1,
        "gradient_accumulation_steps": ga,
        "epochs": 1,
        "max_steps": None,
    }
    values.update(settings)
    estimate = Estimate(
        method="calibrated", setup_seconds=0, train_seconds=seconds, eval_seconds=0, checkpoint_seconds=0
    )
    return PresetPlan(
        preset=name,
        status="ok",
        settings=PresetSettings(**values),
        estimate=estimate,
        start=WEDNESDAY,
    )


def original_presets() -> list[PresetPlan]:
    return [
        preset_plan("baseline", 10 * 3600, "fp32", 16),
        preset_plan("optimized", 5 * 3600, "bf16", 32),
        preset_plan("aggressive", 5.1 * 3600, "bf16", 64),
    ]


def test_recommendation_names_what_saves_time() -> None:
    quality = Quality(measured=False, note=NOT_MEASURED)
    result = recommend(original_presets(), quality)
    assert result.preset == "optimized"
    assert result.reason.startswith(
        "optimized: GA 16 -> 32 changes no compute; 16-bit (bf16) is what saves time here (2.0x faster than baseline)"
    )
    assert "quality not measured yet" in result.reason
    assert "\n" not in result.reason

    fast = preset_plan(
        "fast", 2 * 3600, "bf16", 1, packing=True, gradient_checkpointing=False, batch_size="auto"
    )
    reason = recommend([*original_presets(), fast], quality).reason
    assert reason.startswith(
        "fast: GA 16 -> 1 changes no compute; 16-bit (bf16), packing into 1024-token rows"
    )
    assert "no gradient checkpointing" in reason


def test_recommendation_uses_measured_quality(tmp_path: Path) -> None:
    data_dir = write_data(tmp_path / "data")
    fast = preset_plan("fast", 2 * 3600, "bf16", 1, packing=True, gradient_checkpointing=False)
    presets = [*original_presets(), fast]
    results = [
        {"preset": "baseline", "eval_loss": 2.30},
        {"preset": "optimized", "eval_loss": 2.31, "style_distance": 0.2},
        {"preset": "fast", "eval_loss": 2.50},
    ]
    sha = hashlib.sha256((data_dir / "train.jsonl").read_bytes()).hexdigest()
    write_json(data_dir / COMPARE_FILE, {"twinbot_compare": 1, "train_sha256": sha, "results": results})
    quality = read_quality(data_dir)
    assert quality.measured
    result = recommend(presets, quality)
    assert result.preset == "optimized"  # fast is faster, but measurably worse
    assert "measured eval loss 2.310 vs best 2.300" in result.reason
    assert "fast is faster but its eval loss is 2.500" in result.reason

    # measured on other data: ignored, and said so
    write_json(data_dir / COMPARE_FILE, {"twinbot_compare": 1, "train_sha256": "0" * 64, "results": results})
    stale = read_quality(data_dir)
    assert not stale.measured and "other data" in stale.note
    assert recommend(presets, stale).preset == "fast"

    (data_dir / COMPARE_FILE).write_text("{not json", encoding="utf-8")
    assert not read_quality(data_dir).measured


def test_recommendation_prefers_the_lowest_detector_auc_only_when_the_intervals_separate(
    tmp_path: Path,
) -> None:
    data_dir = write_data(tmp_path / "data")
    sha = hashlib.sha256((data_dir / "train.jsonl").read_bytes()).hexdigest()
    fast = preset_plan("fast", 2 * 3600, "bf16", 1, packing=True, gradient_checkpointing=False)
    presets = [*original_presets(), fast]

    def measured(losses: dict[str, float] | None = None, **aucs: tuple[float, float, float]) -> Quality:
        results = [
            {
                "preset": name,
                "eval_loss": (losses or {}).get(name, 2.3),
                "detection_auc": auc,
                "detection_auc_low": low,
                "detection_auc_high": high,
            }
            for name, (auc, low, high) in aucs.items()
        ]
        write_json(data_dir / COMPARE_FILE, {"twinbot_compare": 1, "train_sha256": sha, "results": results})
        return read_quality(data_dir)

    # the intervals overlap: not separable, so the faster preset
    overlapping = recommend(presets, measured(baseline=(0.70, 0.62, 0.78), fast=(0.74, 0.66, 0.82)))
    assert overlapping.preset == "fast"
    assert "measured detector AUC 0.74 (95% CI 0.66-0.82), not separable from the lowest, baseline's" in (
        overlapping.reason
    )
    # fast's interval lies above baseline's: fast is measurably easier to tell from the person
    separated = recommend(presets, measured(baseline=(0.62, 0.55, 0.69), fast=(0.85, 0.79, 0.91)))
    assert separated.preset == "baseline"
    assert "fast is faster but easier to tell from you: AUC 0.85 (95% CI 0.79-0.91)" in separated.reason
    # the detector decides even where the eval loss would not: fast's loss is worse, its AUC is not
    loss_says_baseline = measured({"fast": 2.6}, baseline=(0.70, 0.6, 0.8), fast=(0.66, 0.56, 0.76))
    assert recommend(presets, loss_says_baseline).preset == "fast"
    # an unmeasured faster preset is not chosen, and the reason says so
    unmeasured = recommend(presets, measured(baseline=(0.6, 0.5, 0.7), optimized=(0.65, 0.55, 0.75)))
    assert unmeasured.preset == "optimized" and "fast is faster but its detector AUC is not measured" in (
        unmeasured.reason
    )


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda data, model: ["plan"], "no training data: pass --data DIR"),
        (lambda data, model: ["plan", "--data", str(data / "missing")], "data folder not found"),
        (lambda data, model: ["plan", "--data", str(data.parent)], "no train.jsonl here"),
        (lambda data, model: ["plan", "--data", str(data), "--presets", "turbo"], "unknown preset 'turbo'"),
        (lambda data, model: ["plan", "--data", str(data), "--start", "someday"], "--start 'someday'"),
        (lambda data, model: ["plan", "--data", str(data), "--target-gpu", "voodoo2"], "unknown GPU"),
        (
            lambda data, model: ["plan", "--data", str(data), "--model", model, "--calibrate-seconds", "0"],
            "--calibrate-seconds must be more than 0",
        ),
        (lambda data, model: ["plan", "--data", str(data), "--epochs", "0"], "EPOCHS"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    make_args: Any,
    message: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = write_data(tmp_path / "data" / "prepared")
    code, out, err = run_cli(make_args(data_dir, str(tiny_model_dir)), monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.lower() in lines[0].lower()
    assert out == ""


def test_bad_data_is_one_line_exit_2(
    tiny_model_dir: Path,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text('{"messages": "You are Sam"}\n', encoding="utf-8")
    code, _, err = run_cli(
        ["plan", "--data", str(data_dir), "--model", str(tiny_model_dir), "--no-calibrate"],
        monkeypatch,
        capsys,
    )
    assert code == 2
    assert (
        err.strip().splitlines()[-1].startswith(f"error: {data_dir / 'train.jsonl'}:1: not a twinbot sample")
    )
    assert "You are Sam" not in err  # never echo message text


def test_every_preset_failing_is_an_error_after_the_table(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = write_data(tmp_path / "data")

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr("twinbot.finetune.plan.calibration.run_micro_batch", broken)
    configs = {"baseline": config_for(tiny_model_dir, data_dir, "baseline")}
    monkeypatch.setattr(
        "twinbot.finetune.plan.planner.resolve_preset_configs", lambda *args, **kwargs: configs
    )
    with pytest.raises(
        TwinbotError, match=r"no preset could be calibrated .*baseline: RuntimeError: cuDNN error"
    ):
        run_plan(data_dir, model=str(tiny_model_dir), presets="baseline", calibrate_seconds=0.2)
    assert "failed" in capsys.readouterr().out


def test_attention_flops_follow_the_attention_implementation() -> None:
    """Whole-row attention pays row x row per row; per-sample attention (packed_sdpa, flash-attention) pays
    the sum of squared sample lengths, and its micro-batch is one padding-free row. With shared beginnings
    (packed_sdpa) the projections run only on the tokens computed, the attention over whole samples."""
    from twinbot.finetune.rows import Row, row_samples

    shape = ModelShape(body_params=5, head_params=0, lora_params=0, layers=2, attention_dim=8)
    rows = [
        Row(input_ids=[1] * 6, target_ids=[-100] * 6, position_ids=[0, 1, 2, 0, 1, 0]),  # samples 3, 2, 1
        Row(input_ids=[1] * 4, target_ids=[-100] * 4, position_ids=[0, 1, 2, 3]),
    ]
    assert [[len(sample) for sample in row_samples(row)] for row in rows] == [[3, 2, 1], [4]]
    forward = 2 * shape.layers * shape.attention_dim  # per attended (query, key) pair, causal-halved
    linear = 2 * shape.body_params  # per token
    assert epoch_flops(shape, [rows], False, train=False) == linear * 12 + forward * 2 * 6 * 6
    per_sample_attention = forward * (9 + 4 + 1 + 16)
    assert epoch_flops(shape, [rows], False, False, "flat") == linear * 10 + per_sample_attention
    # the samples of 2 and 4 tokens share 1 and 3 tokens with the first (each keeps its last token)
    assert epoch_flops(shape, [rows], False, False, "shared_prefix") == linear * 6 + per_sample_attention


def test_a_run_in_several_processes_is_planned_as_train_runs_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Calibrated in the processes themselves (each with its share of the rows), the training and evaluation
    time divided between them, and the counts those of the real run."""
    from twinbot.finetune.recipe import main as train_main

    data_dir = write_data(tmp_path / "data", train=14, eval_=3)
    config = config_for(tiny_model_dir, data_dir, "fast", batch_size=2, processes=2, max_steps=3)

    preset = make_plan({"fast": config}, data_dir, calibrate_seconds=1.0).presets[0]
    assert preset.status == "ok", preset.detail
    work, calibration, estimate = preset.workload, preset.calibration, preset.estimate
    assert work is not None and calibration is not None and estimate is not None
    assert (work.processes, work.micro_batch) == (2, 1)
    assert (calibration.processes, calibration.micro_batch) == (2, 1)
    assert estimate.train_seconds == pytest.approx(work.tokens * calibration.seconds_per_token / 2)
    one_process = extrapolate(work, calibration, 0.0)
    assert estimate.eval_seconds == pytest.approx(one_process.eval_seconds / 2)
    assert estimate.checkpoint_seconds == pytest.approx(one_process.checkpoint_seconds)

    summary = train_main(config.model_copy(update={"output_dir": tmp_path / "run"}))
    assert (work.steps, work.tokens) == (summary.steps, summary.tokens_seen)
