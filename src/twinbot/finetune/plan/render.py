"""The plan as text: what was measured, one table row per preset, each preset's parts, the schedule and the
recommendation."""

from __future__ import annotations

from twinbot.finetune.plan.records import SECONDS_PER_HOUR, Plan, PresetPlan
from twinbot.finetune.plan.schedule import format_clock, format_duration, schedule_line


def render(plan: Plan) -> str:
    lines = [*_header_lines(plan), "", render_table(table_rows(plan))]
    lines += [
        "Steps = ceil(micro-batches per epoch / GA) x epochs. Tokens = real tokens through forward and "
        "backward over the run. Hours include setup, evaluation, checkpoints and logging.",
        "",
    ]
    lines += _part_lines(plan)
    lines += ["", f"schedule (from {format_clock(plan.start, plan.start)}):"]
    width = max(len(p.preset) for p in plan.presets) + 1
    lines += [f"  {schedule_line(preset, plan.start, width)}" for preset in plan.presets]
    lines += ["", f"recommendation: {plan.recommendation.reason}"]
    return "\n".join(lines)


def _header_lines(plan: Plan) -> list[str]:
    """The data, the model and how the times were found."""
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
    return lines


def _part_lines(plan: Plan) -> list[str]:
    """Each estimated preset's time by part, and which presets need more memory than the target GPU has."""
    lines = []
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
            f"{_uncertainty(preset)}"
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
    return lines


def _uncertainty(preset: PresetPlan) -> str:
    """How sure a calibrated estimate is: its +-, or why it cannot say (measured too little)."""
    calibration, shown = preset.calibration, preset.shown
    if calibration is None or shown is None or shown.method != "calibrated":
        return ""
    if calibration.shortfall or shown.relative_error is None:
        why = calibration.shortfall or "too few batches timed to tell"
        return f"; UNCERTAIN: {why}, could be off several-fold: plan again with a larger --calibrate-seconds"
    return f"; total +-{shown.relative_error:.0%} (2 standard errors of the timed batches)"


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
