"""Which preset to train: the fastest that ran, or with quality measured by `twinbot compare` (DATA/compare.json)
the fastest of those as good as the best, with the reason in one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydantic

from twinbot.data.prepared import COMPARE_FILE, TRAIN_FILE
from twinbot.finetune.plan.records import CompareFile, PresetPlan, Quality, Recommendation
from twinbot.runs import file_sha256

QUALITY_TOLERANCE = 0.02  # eval-loss difference (nats per supervised token) treated as the same quality

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
    if compare.train_sha256 != file_sha256(data_dir / TRAIN_FILE):
        return Quality(
            measured=False, note=f"{path} was measured on other data ({TRAIN_FILE} changed); {NOT_MEASURED}"
        )
    results = [r for r in compare.results if r.eval_loss is not None or r.style_distance is not None]
    if not results:
        return Quality(measured=False, note=f"{path} holds no measured results; {NOT_MEASURED}")
    return Quality(measured=True, source=str(path), note=f"measured quality from {path}", results=results)


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
