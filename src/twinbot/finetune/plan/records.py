"""The records a plan is made of, as `twinbot plan --json` prints them, and the DATA/compare.json schema
that `twinbot compare` writes and the plan reads back."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

SECONDS_PER_HOUR = 3600.0

Status = Literal["ok", "out_of_memory", "failed"]


class Workload(BaseModel):
    """What one preset's run does, counted exactly from its rows."""

    model_config = ConfigDict(frozen=True)

    micro_batch: int
    micro_batch_note: str | None = None
    processes: int = 1  # data-parallel CPU processes, each with `micro_batch` rows per forward pass
    gradient_accumulation_steps: int
    rows: int  # samples (packing off) or packed rows per epoch
    micro_batches_per_epoch: int
    steps: int
    tokens: int  # real (non-padding) tokens through forward + backward, whole run
    supervised_tokens: int
    evaluations: int
    eval_tokens_per_evaluation: int
    checkpoints: int


class Calibration(BaseModel):
    """A short real training run of one preset on a random sample of its micro-batches."""

    status: Status
    detail: str | None = None  # one line when status is not ok
    device: str
    precision: str | None = None
    micro_batch: int | None = None  # rows per forward pass, per process
    processes: int = 1  # measured together, as the run trains; the figures are one process's (rank 0)
    budget_seconds: float
    load_seconds: float = 0.0  # model load, LoRA, micro-batch probe
    warmup_micro_batches: int = 0
    warmup_tokens: int = 0
    warmup_seconds: float = 0.0  # includes the first optimizer step (AdamW allocates its state)
    train_micro_batches: int = 0
    train_tokens: int = 0  # real tokens in the timed micro-batches
    train_seconds: float = 0.0
    train_relative_error: float | None = None  # standard error of the mean seconds per token, over the mean
    eval_batches: int = 0  # timed, after an untimed first evaluation
    eval_tokens: int = 0
    eval_seconds: float = 0.0
    eval_relative_error: float | None = None
    shortfall: str | None = None  # what could not be timed in time, in words (then the estimate is uncertain)
    checkpoint_seconds: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_kind: Literal["gpu", "rss"] = "rss"  # GPU memory allocated, or the process's resident memory

    @property
    def seconds_per_token(self) -> float:
        return self.train_seconds / self.train_tokens

    @property
    def warmup_penalty_seconds(self) -> float:
        """What the warm-up cost beyond the steady speed: a real run pays it once too."""
        return max(0.0, self.warmup_seconds - self.warmup_tokens * self.seconds_per_token)


class Estimate(BaseModel):
    """Seconds a whole run takes, by part."""

    method: Literal["calibrated", "analytic"]
    setup_seconds: float  # reading + tokenizing the data, loading the model
    train_seconds: float
    eval_seconds: float
    checkpoint_seconds: float
    logging_seconds: float = 0.0  # metrics.csv / TensorBoard rows and loss plots
    extrapolated_to: str | None = None  # a --target-gpu name: scaled by published peak ratios
    # calibrated: about 95% of runs within total x (1 +- this), from the spread of the timed micro-batches;
    # None when too few were timed to say
    relative_error: float | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_seconds(self) -> float:
        return (
            self.setup_seconds
            + self.train_seconds
            + self.eval_seconds
            + self.checkpoint_seconds
            + self.logging_seconds
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hours(self) -> float:
        return self.total_seconds / SECONDS_PER_HOUR

    @computed_field  # type: ignore[prop-decorator]
    @property
    def days(self) -> float:
        return self.hours / 24


# --- DATA/compare.json -----------------------------------------------------------------------------------


class QualityResult(BaseModel):
    """One preset's measured quality in `compare.json`."""

    model_config = ConfigDict(extra="ignore")

    preset: str
    eval_loss: float | None = None  # mean cross-entropy per supervised eval token of the trained adapter
    style_distance: float | None = (
        None  # lower = closer to the persona's style (defined by `twinbot compare`)
    )
    # the twin detector of `twinbot eval` on the adapter's replies: ROC AUC and its 95% interval; 0.5 = the
    # replies cannot be told from the person's, lower = better
    detection_auc: float | None = None
    detection_auc_low: float | None = None
    detection_auc_high: float | None = None
    run_dir: str | None = None


class CompareFile(BaseModel):
    """DATA/compare.json, written by `twinbot compare`: measured quality per preset on this data."""

    model_config = ConfigDict(extra="ignore")

    twinbot_compare: Literal[1]
    train_sha256: str  # sha256 of the train.jsonl the runs trained on
    results: list[QualityResult]


class Quality(BaseModel):
    measured: bool
    source: str | None = None
    note: str
    results: list[QualityResult] = []


# --- the plan --------------------------------------------------------------------------------------------


class PresetSettings(BaseModel):
    """The settings of a preset that change the work per token or the step count."""

    precision: str  # what this machine runs: fp32 | bf16 | fp16
    use_fp16: bool
    gradient_checkpointing: bool
    packing: bool
    row_tokens: int
    batch_size: int | Literal["auto"]
    gradient_accumulation_steps: int
    epochs: float
    max_steps: int | None


class PresetPlan(BaseModel):
    preset: str
    status: Status
    detail: str | None = None
    settings: PresetSettings
    workload: Workload | None = None
    calibration: Calibration | None = None
    estimate: Estimate | None = None  # on this machine
    target_estimate: Estimate | None = None  # --target-gpu
    time_saved: float | None = None  # share of baseline's time saved (of the shown estimate)
    peak_memory_bytes: int | None = None
    start: datetime
    done: datetime | None = None

    @property
    def shown(self) -> Estimate | None:
        return self.target_estimate or self.estimate


class DataSummary(BaseModel):
    data_dir: str
    train_samples: int
    eval_samples: int
    samples_used: int  # train samples with a supervised reply left after truncation
    tokens_per_epoch: int
    supervised_tokens_per_epoch: int


class TargetGpu(BaseModel):
    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float
    scaled_from: str  # which speed of this machine the ratio uses


class Recommendation(BaseModel):
    preset: str | None
    reason: str


class Plan(BaseModel):
    twinbot_plan: Literal[1] = 1
    method: Literal["calibrated", "analytic"]
    model: str
    device: str
    calibrate_seconds: float | None
    data: DataSummary
    presets: list[PresetPlan]
    target_gpu: TargetGpu | None = None
    quality: Quality
    recommendation: Recommendation
    start: datetime
