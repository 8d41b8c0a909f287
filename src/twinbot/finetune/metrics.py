"""Training logs: RUN/metrics.csv, TensorBoard events in RUN/tb/, RUN/loss.png, a progress bar counting
tokens, and peak memory."""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from twinbot.fileio import atomic_file, make_user_only
from twinbot.runs import LOSS_PLOT, METRICS_FILE, TENSORBOARD_DIR


@dataclass
class MetricsRow:
    """One row of metrics.csv (and its TensorBoard scalars); the losses are None when not measured."""

    step: int
    epoch: float
    tokens: int  # the samples' tokens trained on
    supervised_tokens: int
    computed_tokens: int  # the tokens the model ran: fewer than `tokens` where samples share a beginning
    train_loss: float | None
    eval_loss: float | None
    eval_ppl: float | None
    lr: float
    tokens_per_s: float
    elapsed_s: float


CSV_FIELDS = [f.name for f in fields(MetricsRow)]


class MetricsLog:
    """Appends rows to metrics.csv and TensorBoard. On resume, rows after `resume_step` are dropped first."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.csv_path = Path(run_dir) / METRICS_FILE
        self.png_path = Path(run_dir) / LOSS_PLOT
        kept = [r for r in read_metrics(self.csv_path) if r.step <= resume_step] if resume_step else []
        with atomic_file(self.csv_path) as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_FIELDS)
            writer.writerows(_csv_cells(row) for row in kept)
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = Path(run_dir) / TENSORBOARD_DIR
        self.tensorboard = SummaryWriter(str(tb_dir), purge_step=resume_step + 1 if resume_step else None)
        make_user_only(tb_dir)

    def log(self, row: MetricsRow) -> None:
        with self.csv_path.open("a", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerow(_csv_cells(row))
        scalars = {
            "train/loss": row.train_loss,
            "eval/loss": row.eval_loss,
            "eval/perplexity": row.eval_ppl,
            "train/lr": row.lr,
            "train/tokens_per_s": row.tokens_per_s,
            "train/tokens": row.tokens,
        }
        for tag, value in scalars.items():
            if value is not None:
                self.tensorboard.add_scalar(tag, value, row.step)
        self.tensorboard.flush()

    def plot(self) -> None:
        plot_loss(self.csv_path, self.png_path)

    def close(self) -> None:
        self.tensorboard.close()


def _csv_cells(row: MetricsRow) -> list[Any]:
    return ["" if value is None else value for value in asdict(row).values()]


def read_metrics(path: Path) -> list[MetricsRow]:
    if not Path(path).is_file():
        return []
    rows = []
    with Path(path).open(encoding="utf-8", newline="") as fh:
        for record in csv.DictReader(fh):
            try:
                rows.append(
                    MetricsRow(
                        step=int(record["step"]),
                        epoch=float(record["epoch"]),
                        tokens=int(record["tokens"]),
                        supervised_tokens=int(record["supervised_tokens"]),
                        computed_tokens=int(record.get("computed_tokens") or record["tokens"]),
                        train_loss=_optional_float(record["train_loss"]),
                        eval_loss=_optional_float(record["eval_loss"]),
                        eval_ppl=_optional_float(record["eval_ppl"]),
                        lr=float(record["lr"]),
                        tokens_per_s=float(record["tokens_per_s"]),
                        elapsed_s=float(record["elapsed_s"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue  # a row cut short by a kill: skip it
    return rows


def _optional_float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def plot_loss(csv_path: Path, png_path: Path) -> None:
    """Train and eval loss against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    train = [
        (r.tokens, r.train_loss) for r in rows if r.train_loss is not None and math.isfinite(r.train_loss)
    ]
    evals = [(r.tokens, r.eval_loss) for r in rows if r.eval_loss is not None and math.isfinite(r.eval_loss)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval", marker="o", linewidth=1.5)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (cross-entropy per supervised token)")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    with atomic_file(png_path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def token_progress(total_tokens: int, done_tokens: int, enabled: bool) -> tqdm:
    """A progress bar on stderr counting tokens, so the rate is tokens/s and the ETA is from tokens left."""
    return tqdm(
        total=total_tokens,
        initial=done_tokens,
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not enabled,
        smoothing=0.1,
    )


def peak_memory_bytes(device_type: str) -> int:
    """Peak accelerator memory on CUDA, else the process's peak resident memory (RSS)."""
    import torch

    if device_type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))
