"""How token rows reach the model, step by step: the same for every run with the same seed.

    tokenized samples --rows_for--> rows --TrainData--> optimizer-step windows --make_batch--> Batch

`rows_for` packs samples into rows (or keeps one sample a row) as the run's settings say. `TrainData` fixes
the order of the rows per epoch (from the seed) and cuts it into optimizer-step windows of micro-batches,
split between processes, so that step s always sees the same rows and `--resume` continues exactly.
`make_batch` lays out one micro-batch for the model's attention (`BatchLayout`): padded rows, one packed
row, or one row whose samples share their beginning, computed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from twinbot.finetune.config import TrainConfig
from twinbot.finetune.rows import (
    IGNORE_INDEX,
    Batch,
    Row,
    TokenizedSample,
    collate,
    one_sample_rows,
    pack_rows,
    shared_prefix_row,
)
from twinbot.kernels.attention import PACKED_SDPA

# How micro-batches reach the model (`make_batch`): padded rows; one padding-free row (attention that cuts
# samples at position-id restarts); or one padding-free row whose samples share their common beginning
# (`shared_prefix_row`, which only packed_sdpa understands).
BatchLayout = Literal["rows", "flat", "shared_prefix"]
# Attention that attends within each packed sample by itself, so a micro-batch can be one padding-free row.
VARIABLE_LENGTH_ATTENTION = frozenset({"flash_attention_2", PACKED_SDPA})


def max_tokens_for(config: TrainConfig) -> int:
    """The longest a sample may be (MAX_SEQ_LEN): a packed row holds whole samples, so with packing no
    sample may be longer than a row (ROW_TOKENS) either."""
    return min(config.max_seq_len, config.row_tokens) if config.packing else config.max_seq_len


def rows_for(config: TrainConfig, tokenized: Sequence[TokenizedSample]) -> list[Row]:
    """Samples packed into rows of ROW_TOKENS (PACKING=true), or one sample a row."""
    return pack_rows(tokenized, config.row_tokens) if config.packing else one_sample_rows(tokenized)


def batch_layout(attention: str) -> BatchLayout:
    """packed_sdpa: one row with shared beginnings computed once; flash-attention: one padding-free row
    (it keeps packed samples apart without a mask, so padding is waste); otherwise padded rows."""
    if attention == PACKED_SDPA:
        return "shared_prefix"
    return "flat" if attention in VARIABLE_LENGTH_ATTENTION else "rows"


@dataclass
class TrainData:
    """Token rows in a fixed order per epoch (from the seed), cut into optimizer-step windows.

    A window holds `window` micro-batches of `micro_batch` rows: gradient accumulation x processes. Process
    r takes micro-batches r, r + P, ... of each window. Step s always sees the same rows, so resume is exact.
    """

    rows: list[Row]
    micro_batch: int
    window: int
    processes: int
    seed: int
    _epoch: int = field(default=-1, repr=False)
    _batches: list[list[Row]] = field(default_factory=list, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        micro_batches = math.ceil(len(self.rows) / self.micro_batch)
        return math.ceil(micro_batches / self.window)

    @property
    def tokens(self) -> int:
        return sum(len(row.input_ids) for row in self.rows)

    @property
    def supervised_tokens(self) -> int:
        return count_supervised(self.rows)

    def epoch_micro_batches(self, epoch: int) -> list[list[Row]]:
        if epoch != self._epoch:
            order = torch.randperm(
                len(self.rows), generator=torch.Generator().manual_seed(self.seed * 1009 + epoch)
            )
            shuffled = [self.rows[i] for i in order.tolist()]
            self._batches = [
                shuffled[i : i + self.micro_batch] for i in range(0, len(shuffled), self.micro_batch)
            ]
            self._epoch = epoch
        return self._batches

    def step_micro_batches(self, step: int) -> list[list[Row]]:
        """Every micro-batch of optimizer step `step`, all processes together."""
        epoch, index = divmod(step, self.steps_per_epoch)
        batches = self.epoch_micro_batches(epoch)
        window = batches[index * self.window : (index + 1) * self.window]
        # A short last window: under DDP every process needs as many micro-batches as the others, so the
        # window borrows micro-batches from the start of the epoch (as torch's DistributedSampler pads).
        short = -len(window) % self.processes
        return window + [batches[i % len(batches)] for i in range(short)]

    def step_tokens(self, step: int) -> int:
        return sum(len(row.input_ids) for rows in self.step_micro_batches(step) for row in rows)


def step_count(config: TrainConfig, steps_per_epoch: int) -> int:
    """A run's optimizer steps: MAX_STEPS when set, else EPOCHS x steps per epoch rounded up (at least one)."""
    return config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))


def cadence(every: int, steps: int) -> int:
    """EVAL_EVERY / SAVE_EVERY of a run of `steps` steps: 0 means about 10 times per run."""
    return every or math.ceil(steps / 10)


def count_supervised(rows: list[Row]) -> int:
    return sum(sum(1 for t in row.target_ids if int(t) != IGNORE_INDEX) for row in rows)


def make_batch(rows: list[Row], pad_id: int, device: torch.device, layout: BatchLayout) -> Batch:
    """Rows as [rows, longest] tensors padded at the end, or as one padding-free row [1, total] ("flat"),
    or as one row whose samples leave out the beginning they share with the first ("shared_prefix":
    `twinbot.finetune.rows.shared_prefix_row`; `num_tokens` still counts every sample's tokens).

    Position ids restart at every packed sample, which makes transformers' attention block-diagonal; the
    padding tail gets positions of its own, so no real token sees it.
    """
    if layout == "rows":
        return collate(rows, pad_id).to(device)
    if layout == "shared_prefix":
        batch = collate([shared_prefix_row(rows)], pad_id)
        return replace(batch, num_tokens=sum(len(row) for row in rows)).to(device)
    flat = Row(
        input_ids=[t for row in rows for t in row.input_ids],
        target_ids=[t for row in rows for t in row.target_ids],
        position_ids=[t for row in rows for t in row.position_ids],
    )
    return collate([flat], pad_id).to(device)
