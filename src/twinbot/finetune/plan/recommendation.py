"""Which preset to train: the fastest that ran, or with quality measured by `twinbot compare` (DATA/compare.json)
the fastest of those as good as the best, with the reason in one line.

"As good as the best": with detector AUCs measured (`twinbot eval`'s twin detector), the presets whose AUC
interval is not entirely above the interval of the lowest AUC (the replies hardest to tell from the person's)
- the lowest AUC wins only when the intervals separate; otherwise, the presets whose eval loss is within
QUALITY_TOLERANCE of the best."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydantic

from twinbot.data.prepared import COMPARE_FILE, TRAIN_FILE
from twinbot.finetune.plan.records import CompareFile, PresetPlan, Quality, QualityResult, Recommendation
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
    results = [
        r
        for r in compare.results
        if r.eval_loss is not None or r.style_distance is not None or r.detection_auc is not None
    ]
    if not results:
        return Quality(measured=False, note=f"{path} holds no measured results; {NOT_MEASURED}")
    return Quality(measured=True, source=str(path), note=f"measured quality from {path}", results=results)


def recommend(plans: Sequence[PresetPlan], quality: Quality) -> Recommendation:
    """The fastest preset that ran; with measured quality, the fastest of those as good as the best measured
    (by detector AUC when measured, else by eval loss: module docstring), with its reason in one line."""
    usable = [p for p in plans if p.status == "ok" and p.shown is not None]
    if not usable:
        problems = "; ".join(f"{p.preset}: {p.detail or p.status}" for p in plans)
        return Recommendation(preset=None, reason=f"no preset could be calibrated ({problems})")
    fastest = min(usable, key=_seconds)
    chosen, quality_clause = fastest, quality.note
    if quality.measured:
        picked = _by_detection(usable, fastest, quality.results) or _by_eval_loss(
            usable, fastest, quality.results
        )
        if picked is None:
            quality_clause = f"no measured quality for these presets in {COMPARE_FILE}; {NOT_MEASURED}"
        else:
            chosen, quality_clause = picked
    others = [p for p in usable if p is not chosen]
    if not others:
        return Recommendation(
            preset=chosen.preset, reason=f"{chosen.preset}: the only preset planned; {quality_clause}"
        )
    reference = next((p for p in others if p.preset == "baseline"), max(others, key=_seconds))
    if _seconds(reference) <= _seconds(chosen):
        reason = f"{chosen.preset}: the fastest that ran"
    else:
        reason = f"{chosen.preset}: {speed_reason(reference, chosen)}"
    return Recommendation(preset=chosen.preset, reason=f"{reason}; {quality_clause}")


def _seconds(plan: PresetPlan) -> float:
    assert plan.shown is not None
    return plan.shown.total_seconds


def _auc(interval: tuple[float, float, float]) -> str:
    auc, low, high = interval
    return f"{auc:.2f} (95% CI {low:.2f}-{high:.2f})"


def _by_detection(
    usable: Sequence[PresetPlan], fastest: PresetPlan, results: Sequence[QualityResult]
) -> tuple[PresetPlan, str] | None:
    """The fastest preset whose detector AUC interval reaches down to the top of the lowest AUC's interval
    (lower AUC = harder to tell from the person); None when no usable preset has a measured AUC."""
    names = {p.preset for p in usable}
    aucs = {
        r.preset: (r.detection_auc, r.detection_auc_low, r.detection_auc_high)
        for r in results
        if r.preset in names
        and r.detection_auc is not None
        and r.detection_auc_low is not None
        and r.detection_auc_high is not None
    }
    if not aucs:
        return None
    best = min(aucs, key=lambda preset: aucs[preset][0])
    good = [p for p in usable if p.preset in aucs and aucs[p.preset][1] <= aucs[best][2]]
    chosen = min(good, key=_seconds)
    clause = f"measured detector AUC {_auc(aucs[chosen.preset])}"
    if chosen.preset != best:
        clause += f", not separable from the lowest, {best}'s {_auc(aucs[best])}"
    clause += f" ({COMPARE_FILE}; 0.5 = cannot be told from you)"
    if fastest.preset not in aucs:
        clause += f"; {fastest.preset} is faster but its detector AUC is not measured"
    elif chosen is not fastest:
        clause += (
            f"; {fastest.preset} is faster but easier to tell from you: AUC {_auc(aucs[fastest.preset])}"
        )
    return chosen, clause


def _by_eval_loss(
    usable: Sequence[PresetPlan], fastest: PresetPlan, results: Sequence[QualityResult]
) -> tuple[PresetPlan, str] | None:
    """The fastest preset whose eval loss is within QUALITY_TOLERANCE of the best measured one."""
    names = {p.preset for p in usable}
    losses = {r.preset: r.eval_loss for r in results if r.eval_loss is not None and r.preset in names}
    if not losses:
        return None
    best = min(losses.values())
    good = [p for p in usable if p.preset in losses and losses[p.preset] <= best + QUALITY_TOLERANCE]
    chosen = min(good, key=_seconds)
    clause = f"measured eval loss {losses[chosen.preset]:.3f} vs best {best:.3f} ({COMPARE_FILE})"
    if fastest.preset not in losses:
        clause += f"; {fastest.preset} is faster but its quality is not measured"
    elif chosen is not fastest:
        clause += f"; {fastest.preset} is faster but its eval loss is {losses[fastest.preset]:.3f}"
    return chosen, clause


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
