"""`twinbot plan`: every preset counted, calibrated (or estimated analytically) and scheduled, then a
recommendation; `run_plan` is the command, `make_plan` the plan and `plan_preset` one preset's part of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from twinbot.console import say
from twinbot.data.prepared import check_data_dir
from twinbot.errors import TwinbotError
from twinbot.finetune import workers
from twinbot.finetune.batches import max_tokens_for, rows_for
from twinbot.finetune.config import PRESETS, TrainConfig, resolve_train_config
from twinbot.finetune.lora import CPU_AUTO_BATCH_SIZE, compile_wanted, target_modules
from twinbot.finetune.plan.calibration import calibrate
from twinbot.finetune.plan.estimate import analytic_estimate, extrapolate, split_between_processes
from twinbot.finetune.plan.flops import ModelShape, shape_of_spec
from twinbot.finetune.plan.gpus import GpuSpec, here_tflops, scale_to_gpu, target_gpu, target_summary
from twinbot.finetune.plan.machine import measure_bookkeeping
from twinbot.finetune.plan.memory import arch_shape, memory_plan, memory_rows, render_memory
from twinbot.finetune.plan.recommendation import read_quality, recommend
from twinbot.finetune.plan.records import Plan, PresetPlan, PresetSettings
from twinbot.finetune.plan.render import render
from twinbot.finetune.plan.schedule import fill_times, parse_start
from twinbot.finetune.plan.workload import TokenizedData, count_workload
from twinbot.finetune.rows import Row
from twinbot.models.devices import pick_device, pick_precision
from twinbot.models.loading import EMBEDDED_MODEL, causal_lm_class, load_tokenizer, resolve_model

PRESET_ORDER: tuple[str, ...] = tuple(PRESETS)
DEFAULT_CALIBRATE_SECONDS = 60.0

Progress = Callable[[str], None]


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
) -> Plan | None:
    """`twinbot plan`: the plan as text (or JSON with --json) on stdout, progress on stderr. With --target-gpu
    and no --data: the predicted peak memory per preset and precision only (`memory.memory_plan`)."""
    if data_dir is None and target:
        configs = resolve_preset_configs(parse_presets(presets), None, model, epochs, yaml_path, overrides)
        memory_plan(model, configs, target, as_json)
        return None
    data_dir = check_data_dir(data_dir)
    names = parse_presets(presets)
    start_at = parse_start(start)
    if target:
        target_gpu(target)
    configs = resolve_preset_configs(names, data_dir, model, epochs, yaml_path, overrides)
    plan = make_plan(
        configs,
        data_dir,
        calibrate_seconds=calibrate_seconds,
        analytic=no_calibrate,
        start=start_at,
        target=target,
        progress=say,
    )
    if as_json:
        print(plan.model_dump_json(indent=2))
    else:
        print(render(plan))
        if target:
            shape = arch_shape(model)
            print(
                "\n"
                + render_memory(shape, memory_rows(shape, configs, target_gpu(target)), target_gpu(target))
            )
    if plan.recommendation.preset is None:
        raise TwinbotError(plan.recommendation.reason)
    return plan


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
    data_dir: Path | None,
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


@dataclass(frozen=True)
class PlanOptions:
    """How every preset is planned: from when, calibrated for how long (or analytic), for which GPU."""

    start: datetime
    calibrate_seconds: float
    analytic: bool
    gpu: GpuSpec | None
    progress: Progress


@dataclass
class SharedInputs:
    """What the presets share, loaded once: the data tokenized per base model, and model shapes."""

    data_dir: Path
    datasets: dict[str | None, TokenizedData] = field(default_factory=dict)
    shapes: dict[tuple[str | None, int, str], ModelShape] = field(default_factory=dict)
    architectures: dict[str | None, tuple[type, Any] | None] = field(default_factory=dict)

    def data(self, spec: str | None) -> TokenizedData:
        if spec not in self.datasets:
            self.datasets[spec] = TokenizedData(self.data_dir, load_tokenizer(spec))
        return self.datasets[spec]

    def shape(self, config: TrainConfig) -> ModelShape:
        key = (config.base_model, config.lora_r, config.lora_target_modules)
        if key not in self.shapes:
            targets = target_modules(config.lora_target_modules)
            self.shapes[key] = shape_of_spec(config.base_model, config.lora_r, targets)
        return self.shapes[key]

    def architecture(self, spec: str | None) -> tuple[type, Any] | None:
        """The model's class and config, which decide the attention training falls back to."""
        if spec not in self.architectures:
            self.architectures[spec] = causal_lm_class(spec, resolve_model(spec))
        return self.architectures[spec]


@dataclass(frozen=True)
class PresetRows:
    """One preset's rows as `train` builds them, and the seconds reading and tokenizing them took."""

    rows: list[Row]
    eval_rows: list[Row]
    setup_seconds: float
    pad_id: int


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
    data_dir = check_data_dir(data_dir)
    if not configs:
        raise TwinbotError("no presets to plan; pass --presets")
    if not analytic and calibrate_seconds <= 0:
        raise TwinbotError("--calibrate-seconds must be more than 0 (or pass --no-calibrate)")
    options = PlanOptions(
        start=start or datetime.now().replace(second=0, microsecond=0),
        calibrate_seconds=calibrate_seconds,
        analytic=analytic,
        gpu=target_gpu(target) if target else None,
        progress=progress or (lambda _message: None),
    )
    inputs = SharedInputs(data_dir)
    plans = [plan_preset(preset, config, inputs, options) for preset, config in configs.items()]
    fill_times(plans, options.start)
    quality = read_quality(data_dir)
    first, last = next(iter(configs.values())), list(configs.values())[-1]
    device = pick_device(last.device)
    target_info = None
    if options.gpu is not None:
        precision = next((p.settings.precision for p in plans), "fp32")
        target_info = target_summary(options.gpu, device, precision)
    return Plan(
        method="analytic" if analytic else "calibrated",
        model=first.base_model or EMBEDDED_MODEL,
        device=device,
        calibrate_seconds=None if analytic else calibrate_seconds,
        data=inputs.data(first.base_model).summary(max_tokens_for(first)),
        presets=plans,
        target_gpu=target_info,
        quality=quality,
        recommendation=recommend(plans, quality),
        start=options.start,
    )


def plan_preset(preset: str, config: TrainConfig, inputs: SharedInputs, options: PlanOptions) -> PresetPlan:
    """One preset: its rows counted, its speed calibrated (or estimated), scaled to --target-gpu."""
    rows = preset_rows(config, inputs.data(config.base_model), options.progress)
    device = pick_device(config.device)
    precision = pick_precision(config.use_fp16, device.split(":")[0]).name
    plan = PresetPlan(
        preset=preset, status="ok", settings=preset_settings(config, precision), start=options.start
    )
    # planned as `train` runs it: on a CPU maybe several processes, each with a share of the micro-batch
    processes = workers.process_plan(config)
    if processes.count > 1:
        config = config.model_copy(update={"batch_size": processes.micro_batch})
    if options.analytic:
        _estimate_analytically(plan, config, rows, device, processes.count, inputs, options.progress)
    else:
        _calibrate(plan, config, rows, device, processes, options)
    if options.gpu is not None and plan.estimate is not None:
        speed, _ = here_tflops(device, plan.settings.precision)
        there = "bf16" if config.use_fp16 else "fp32"
        plan.target_estimate = scale_to_gpu(plan.estimate, speed, options.gpu, there)
    return plan


def preset_rows(config: TrainConfig, data: TokenizedData, progress: Progress) -> PresetRows:
    max_tokens = max_tokens_for(config)
    if max_tokens not in data.tokenized_limits:
        progress(f"tokenizing {len(data.train_samples):,} train samples (up to {max_tokens} tokens each)...")
    tokenized, tokenize_seconds = data.train(max_tokens)
    eval_tokenized, eval_seconds = data.eval(max_tokens, config.eval_max_samples)
    return PresetRows(
        rows=rows_for(config, tokenized),
        eval_rows=rows_for(config, eval_tokenized),
        setup_seconds=data.read_seconds + tokenize_seconds + eval_seconds,
        pad_id=data.tokenizer.pad_token_id,
    )


def preset_settings(config: TrainConfig, precision: str) -> PresetSettings:
    return PresetSettings(
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


def _estimate_analytically(
    plan: PresetPlan,
    config: TrainConfig,
    rows: PresetRows,
    device: str,
    processes: int,
    inputs: SharedInputs,
    progress: Progress,
) -> None:
    if config.batch_size != "auto":
        micro_batch, assumed = config.batch_size, None
    else:
        micro_batch = CPU_AUTO_BATCH_SIZE
        assumed = None if device == "cpu" else "auto: assumed 4 rows (the GPU probe may fit more)"
    note = _micro_batch_note(processes, assumed)
    plan.workload = count_workload(config, rows.rows, rows.eval_rows, micro_batch, note, processes=processes)
    shape = inputs.shape(config)
    progress(f"estimating {plan.preset} (analytic)...")
    estimate = analytic_estimate(
        config,
        plan.workload,
        shape,
        rows.rows,
        rows.eval_rows,
        device,
        plan.settings.precision,
        rows.setup_seconds,
        measure_bookkeeping(),
        inputs.architecture(config.base_model),
    )
    plan.estimate = split_between_processes(estimate, processes)


def _calibrate(
    plan: PresetPlan,
    config: TrainConfig,
    rows: PresetRows,
    device: str,
    processes: workers.ProcessPlan,
    options: PlanOptions,
) -> None:
    """A short real run on `device`; several processes are calibrated in the processes (their all-reduce and waiting
    are part of it)."""
    count, budget = processes.count, options.calibrate_seconds
    compiling = compile_wanted(config, device.split(":")[0])
    first = "compiling the model first (torch.compile: minutes the first time), then " if compiling else ""
    options.progress(
        f"calibrating {plan.preset}: {first}up to {budget:g} s of real training on this machine..."
    )
    arguments = (config, rows.rows, rows.eval_rows, rows.pad_id, budget)
    calibration = workers.run(calibrate, arguments, processes) if count > 1 else calibrate(*arguments)
    plan.calibration = calibration
    plan.status, plan.detail = calibration.status, calibration.detail
    peak = calibration.peak_memory_bytes
    plan.peak_memory_bytes = peak * count if peak and calibration.peak_memory_kind == "rss" else peak
    plan.settings.precision = calibration.precision or plan.settings.precision
    if calibration.micro_batch is not None:
        probed = f"auto: {calibration.micro_batch} rows" if config.batch_size == "auto" else None
        note = _micro_batch_note(count, probed)
        plan.workload = count_workload(
            config, rows.rows, rows.eval_rows, calibration.micro_batch, note, processes=count
        )
    elif config.batch_size != "auto":  # failed before the micro-batch was known: counts still hold
        note = _micro_batch_note(count, None)
        plan.workload = count_workload(config, rows.rows, rows.eval_rows, config.batch_size, note, count)
    if calibration.status == "ok" and plan.workload is not None:
        estimate = extrapolate(
            plan.workload, calibration, rows.setup_seconds, measure_bookkeeping(), config.log_every
        )
        plan.estimate = split_between_processes(estimate, count)


def _micro_batch_note(processes: int, detail: str | None) -> str | None:
    """E.g. "x 2 processes auto: 4 rows": how the table's micro-batch came about, when not plainly set."""
    shared = f"x {processes} processes" if processes > 1 else None
    return " ".join(filter(None, (shared, detail))) or None
