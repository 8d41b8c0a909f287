"""What `twinbot eval` measured: the records written to RUN/eval/eval.json, shown in report.html, and
summed up in the lines the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twinbot.quality.detector import INCONCLUSIVE, SUGGESTED_CONTEXTS, TOO_FEW, Detection
from twinbot.quality.style import Memorisation, StyleDistance


@dataclass
class ModelEval:
    name: str  # "base" | "adapter"
    eval_loss: float | None
    perplexity: float | None
    style: dict[str, Any]  # StyleFingerprint.to_json()
    style_distance: StyleDistance
    memorisation: Memorisation
    detection: Detection | None = None  # the twin detector against the real replies (None: < 3 contexts)


@dataclass
class ReplyRow:
    context: str  # the last lines of the other side's turn before the reply
    real: str
    base: str
    adapter: str


@dataclass
class EvalResult:
    run_dir: str
    data_dir: str
    base_model: str
    train_sha256: str
    preset: str | None
    loss_samples: int
    supervised_tokens: int
    generation: dict[str, Any]  # the sampling settings and seeds
    real_style: dict[str, Any]
    base: ModelEval
    adapter: ModelEval
    canaries_checked: int
    rows: list[ReplyRow] = field(default_factory=list)
    twinbot_eval: int = 1

    @property
    def models(self) -> tuple[ModelEval, ModelEval]:
        return self.base, self.adapter


def summary_lines(result: EvalResult) -> list[str]:
    """What the CLI prints: numbers only, never message text."""
    lines = [
        f"{'':8} {'eval loss':>10} {'ppl':>9} {'style dist':>11} {'memorised':>10} {'canaries':>9} "
        f"{'detector AUC (95% CI)':>22}  verdict"
    ]
    for m in result.models:
        loss = "-" if m.eval_loss is None else f"{m.eval_loss:.3f}"
        ppl = "-" if m.perplexity is None else f"{m.perplexity:.1f}"
        detection = m.detection
        auc = (
            "-"
            if detection is None
            else f"{detection.auc:.2f} ({detection.auc_ci[0]:.2f}-{detection.auc_ci[1]:.2f})"
        )
        lines.append(
            f"{m.name:8} {loss:>10} {ppl:>9} {m.style_distance.score:>11.3f} "
            f"{m.memorisation.memorised_share:>10.1%} {len(m.memorisation.canaries_found):>9} "
            f"{auc:>22}  {'-' if detection is None else detection.verdict}"
        )
    adapter = result.adapter.detection
    if adapter is None or adapter.verdict in (TOO_FEW, INCONCLUSIVE):
        lines.append(
            f"detector: {result.generation['contexts']} contexts are too few for a confident verdict; "
            f"use --samples {SUGGESTED_CONTEXTS} (and more held-out data: prepare --eval-fraction) if you can"
        )
    return lines
