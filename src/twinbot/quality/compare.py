"""`twinbot compare RUN1 RUN2 ...`: one table and one plot across evaluated runs, and DATA/compare.json for
`twinbot plan`.

Reads RUN/summary.json (wall time, tokens/s, preset) and RUN/eval/eval.json (`twinbot eval`). "Quality
relative to baseline" is measured, not claimed: for eval loss and for style distance, the share of the
reference run's improvement over the base model that a run achieves (100% = the same gain as the reference;
the reference is the run trained with the `baseline` preset, else the first run). The twin detector's AUC (with
its 95% interval) is shown per run and passed on to `twinbot plan`, which prefers the preset hardest to tell
from the person when the intervals separate. docs/eval.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pydantic
from pydantic import BaseModel, ConfigDict

from twinbot.data.prepared import COMPARE_FILE, TRAIN_FILE
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_file, make_user_only, write_json
from twinbot.finetune.plan.records import CompareFile, QualityResult
from twinbot.runs import EVAL_DIR, EVAL_FILE, SUMMARY_FILE, file_sha256

TABLE_FILE = "compare.md"
PLOT_FILE = "compare.png"
RESULTS_FILE = "compare-runs.json"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Distance(_Loose):
    score: float


class _Memorised(_Loose):
    memorised_share: float
    placeholders: int = 0
    canaries_found: list[str] = []


class _Detection(_Loose):
    auc: float
    auc_ci: tuple[float, float]
    verdict: str


class _ModelView(_Loose):
    eval_loss: float | None = None
    style_distance: _Distance
    memorisation: _Memorised
    detection: _Detection | None = None  # eval.json written before the detector: none


class _EvalView(_Loose):
    twinbot_eval: int
    data_dir: str
    train_sha256: str
    base: _ModelView
    adapter: _ModelView


class _SummaryView(_Loose):
    wall_seconds: float | None = None
    tokens_per_second: float | None = None
    config: dict[str, object] = {}


@dataclass
class RunComparison:
    name: str
    run_dir: str
    preset: str
    data_dir: str
    train_sha256: str
    eval_loss: float | None
    base_eval_loss: float | None
    style_distance: float
    base_style_distance: float
    memorised_share: float
    pii_placeholders: int
    canaries_found: list[str]
    wall_seconds: float | None
    tokens_per_second: float | None
    detection_auc: float | None = None  # the twin detector on the adapter's replies; 0.5 = indistinguishable
    detection_auc_ci: tuple[float, float] | None = None
    detection_verdict: str | None = None
    base_detection_auc: float | None = None
    reference: str = ""  # the run the relative numbers are measured against
    loss_quality: float | None = None  # % of the reference's eval-loss gain over the base model
    style_quality: float | None = None  # % of the reference's style-distance gain over the base model


def read_run(run_dir: Path) -> RunComparison:
    summary_path, eval_path = run_dir / SUMMARY_FILE, run_dir / EVAL_DIR / EVAL_FILE
    if not summary_path.is_file():
        raise TwinbotError("no summary.json: not a finished `twinbot train` run", run_dir)
    if not eval_path.is_file():
        raise TwinbotError(f"not evaluated yet; run `twinbot eval {run_dir}` first", run_dir)
    try:
        summary = _SummaryView.model_validate_json(summary_path.read_bytes())
    except (OSError, pydantic.ValidationError) as exc:
        raise TwinbotError("unreadable summary.json; train the run again", summary_path) from exc
    try:
        result = _EvalView.model_validate_json(eval_path.read_bytes())
    except (OSError, pydantic.ValidationError) as exc:
        raise TwinbotError(f"unreadable eval.json; run `twinbot eval {run_dir}` again", eval_path) from exc
    return RunComparison(
        name=run_dir.name,
        run_dir=str(run_dir),
        preset=str(summary.config.get("preset") or "?"),
        data_dir=result.data_dir,
        train_sha256=result.train_sha256,
        eval_loss=result.adapter.eval_loss,
        base_eval_loss=result.base.eval_loss,
        style_distance=result.adapter.style_distance.score,
        base_style_distance=result.base.style_distance.score,
        memorised_share=result.adapter.memorisation.memorised_share,
        pii_placeholders=result.adapter.memorisation.placeholders,
        canaries_found=result.adapter.memorisation.canaries_found,
        wall_seconds=summary.wall_seconds,
        tokens_per_second=summary.tokens_per_second,
        **_detection_fields(result),
    )


def _detection_fields(result: _EvalView) -> dict[str, object]:
    twin, base = result.adapter.detection, result.base.detection
    return {
        "detection_auc": None if twin is None else twin.auc,
        "detection_auc_ci": None if twin is None else twin.auc_ci,
        "detection_verdict": None if twin is None else twin.verdict,
        "base_detection_auc": None if base is None else base.auc,
    }


def share_of_gain(base: float | None, reference: float | None, value: float | None) -> float | None:
    """(base - value) / (base - reference) in %: 100 = the reference's gain over the base model (lower is
    better for both measures). None when the reference did not improve on the base model."""
    if base is None or reference is None or value is None or base - reference <= 0:
        return None
    return round(100 * (base - value) / (base - reference), 1)


def add_relative_quality(runs: Sequence[RunComparison]) -> None:
    """Per data set (train.jsonl hash): relative to its `baseline`-preset run, else its first run."""
    for sha in dict.fromkeys(r.train_sha256 for r in runs):
        group = [r for r in runs if r.train_sha256 == sha]
        reference = next((r for r in group if r.preset == "baseline"), group[0])
        for run in group:
            run.reference = reference.name
            run.loss_quality = share_of_gain(run.base_eval_loss, reference.eval_loss, run.eval_loss)
            run.style_quality = share_of_gain(
                run.base_style_distance, reference.style_distance, run.style_distance
            )


def run_compare(run_dirs: Sequence[Path], out: Path | None = None) -> list[RunComparison]:
    if not run_dirs:
        raise TwinbotError("no runs given; pass RUN folders evaluated with `twinbot eval`")
    runs = [read_run(Path(p).expanduser()) for p in run_dirs]
    add_relative_quality(runs)
    out_dir = Path(out).expanduser() if out else Path(run_dirs[0]).expanduser().resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = table_lines(runs)
    with atomic_file(out_dir / TABLE_FILE) as fh:
        fh.write("\n".join(lines) + "\n\n" + MEASUREMENT_NOTE + "\n")
    write_json(out_dir / RESULTS_FILE, [asdict(r) for r in runs])
    plot(runs, out_dir / PLOT_FILE)
    for data_dir in write_plan_quality(runs):
        print(f"quality for `twinbot plan`: {data_dir / COMPARE_FILE}")
    print("\n".join(lines))
    print(f"table: {out_dir / TABLE_FILE}   plot: {out_dir / PLOT_FILE}")
    return runs


def write_plan_quality(runs: Sequence[RunComparison]) -> list[Path]:
    """DATA/compare.json (the shape `finetune.plan.recommendation.read_quality` reads) for every data folder
    still holding the train.jsonl the runs were evaluated on."""
    written: list[Path] = []
    for data_dir in dict.fromkeys(Path(r.data_dir) for r in runs):
        train = data_dir / TRAIN_FILE
        if not train.is_file():
            continue
        sha = file_sha256(train)
        results = [
            QualityResult(
                preset=r.preset,
                eval_loss=r.eval_loss,
                style_distance=r.style_distance,
                detection_auc=r.detection_auc,
                detection_auc_low=None if r.detection_auc_ci is None else r.detection_auc_ci[0],
                detection_auc_high=None if r.detection_auc_ci is None else r.detection_auc_ci[1],
                run_dir=r.run_dir,
            )
            for r in runs
            if r.train_sha256 == sha
        ]
        if not results:
            continue
        compare = CompareFile(twinbot_compare=1, train_sha256=sha, results=results)
        write_json(data_dir / COMPARE_FILE, json.loads(compare.model_dump_json()))
        written.append(data_dir)
    return written


MEASUREMENT_NOTE = (
    "quality vs ref: share of the reference run's gain over the base model that this run reaches "
    "(100% = the same gain), measured as eval loss (mean cross-entropy per supervised held-out token) and as "
    "style distance (docs/eval.md); the reference is the `baseline`-preset run, else the first run. "
    "detector AUC: how well a classifier tells the run's replies from the person's real replies to the same "
    "held-out contexts (0.5 = it cannot, 1 = always), with its 95% interval; compare runs evaluated with "
    "the same --samples and --seed."
)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _detection_cell(run: RunComparison) -> str:
    if run.detection_auc is None or run.detection_auc_ci is None:
        return "-"
    low, high = run.detection_auc_ci
    return f"{run.detection_auc:.2f} ({low:.2f}-{high:.2f}; base {_num(run.base_detection_auc, '.2f')})"


def table_lines(runs: Sequence[RunComparison]) -> list[str]:
    headers = [
        "run",
        "preset",
        "eval loss",
        "style distance",
        "detector AUC (95% CI)",
        "memorised",
        "canaries",
        "wall time s",
        "tokens/s",
        "quality vs ref (loss)",
        "quality vs ref (style)",
    ]
    rows = [
        [
            r.name,
            r.preset,
            f"{_num(r.eval_loss, '.3f')} (base {_num(r.base_eval_loss, '.3f')})",
            f"{r.style_distance:.3f} (base {r.base_style_distance:.3f})",
            _detection_cell(r),
            f"{r.memorised_share:.1%}",
            str(len(r.canaries_found)),
            _num(r.wall_seconds, ".0f"),
            _num(r.tokens_per_second, ".0f"),
            _num(r.loss_quality, ".1f") + ("%" if r.loss_quality is not None else ""),
            _num(r.style_quality, ".1f") + ("%" if r.style_quality is not None else ""),
        ]
        for r in runs
    ]
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def plot(runs: Sequence[RunComparison], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in runs]
    # title, bar heights, base model marks, error bars
    panels: list[tuple[str, list[float], list[float | None] | None, list[list[float]] | None]] = [
        (
            "eval loss (lower is better)",
            [r.eval_loss or 0.0 for r in runs],
            [r.base_eval_loss for r in runs],
            None,
        ),
        (
            "style distance (lower is better)",
            [r.style_distance for r in runs],
            [r.base_style_distance for r in runs],
            None,
        ),
        (
            "detector AUC, 95% CI (0.5 = like you)",
            [r.detection_auc or 0.0 for r in runs],
            [r.base_detection_auc for r in runs],
            _auc_errors(runs),
        ),
        ("memorised share of replies", [r.memorised_share for r in runs], None, None),
        ("wall time (s)", [r.wall_seconds or 0.0 for r in runs], None, None),
        ("tokens/s", [r.tokens_per_second or 0.0 for r in runs], None, None),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (title, values, base, errors) in zip(axes, panels, strict=True):
        ax.bar(range(len(runs)), values, color="#1f77b4", yerr=errors)
        if base is not None:
            ax.scatter(
                range(len(runs)),
                [b if b is not None else float("nan") for b in base],
                color="#d62728",
                marker="_",
                s=400,
                label="base model",
                zorder=3,
            )
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(runs)), names, rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    with atomic_file(path, mode="wb") as fh:
        figure.savefig(fh, format="png", dpi=90)
    plt.close(figure)
    make_user_only(path)


def _auc_errors(runs: Sequence[RunComparison]) -> list[list[float]]:
    """matplotlib's asymmetric error bars (below, above) of each run's detector AUC interval."""
    below, above = [], []
    for run in runs:
        if run.detection_auc is None or run.detection_auc_ci is None:
            below.append(0.0)
            above.append(0.0)
        else:
            below.append(run.detection_auc - run.detection_auc_ci[0])
            above.append(run.detection_auc_ci[1] - run.detection_auc)
    return [below, above]
