"""What a run does, counted exactly: the data tokenized as `train` tokenizes it, then its optimizer steps,
tokens, evaluations and checkpoints as `train` schedules them (same shuffles, same windows)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twinbot.data.prepared import EVAL_FILE, TRAIN_FILE, load_samples
from twinbot.errors import TwinbotError
from twinbot.finetune.batches import TrainData, cadence, step_count
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.plan.records import DataSummary, Workload
from twinbot.finetune.rows import IGNORE_INDEX, Row, TokenizedSample, tokenize_samples


def micro_batches_per_epoch(rows: int, micro_batch: int) -> int:
    """A micro-batch is `micro_batch` samples (packing off) or packed rows (packing on); the last may be short."""
    return math.ceil(rows / micro_batch)


def optimizer_steps(config: TrainConfig, rows: int, micro_batch: int) -> int:
    """ceil(micro-batches per epoch / GA) x epochs, as `train` counts them (MAX_STEPS wins when set).

    The origin note's 63,000 samples / GA 16 = 3,938 steps; its 984 for GA 64 is rounded down, but the
    last, partial step still runs: 985.
    """
    micro_batches = micro_batches_per_epoch(rows, micro_batch)
    return step_count(config, math.ceil(micro_batches / config.gradient_accumulation_steps))


def events(every: int, steps: int) -> int:
    """How many evaluations / checkpoints a run makes: every `every` steps, and always at the last step."""
    return steps // every + (1 if steps % every else 0)


def supervised_count(row: Row) -> int:
    return len(row.target_ids) - row.target_ids.count(IGNORE_INDEX)


def count_workload(
    config: TrainConfig,
    rows: Sequence[Row],
    eval_rows: Sequence[Row],
    micro_batch: int,
    micro_batch_note: str | None = None,
    processes: int = 1,
) -> Workload:
    """Steps, tokens and events of a run exactly as `train` schedules it (same shuffles, same windows), with
    `processes` data-parallel processes (each step takes a micro-batch per process per accumulation step)."""
    window = config.gradient_accumulation_steps * processes
    data = TrainData(list(rows), micro_batch, window, processes, config.seed)
    steps = step_count(config, data.steps_per_epoch)
    lengths = {id(row): len(row.input_ids) for row in rows}
    supervised = {id(row): supervised_count(row) for row in rows}
    tokens = supervised_tokens = 0
    for step in range(steps):
        for batch in data.step_micro_batches(step):
            for row in batch:
                tokens += lengths[id(row)]
                supervised_tokens += supervised[id(row)]
    return Workload(
        micro_batch=micro_batch,
        micro_batch_note=micro_batch_note,
        processes=processes,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        rows=len(rows),
        micro_batches_per_epoch=micro_batches_per_epoch(len(rows), micro_batch),
        steps=steps,
        tokens=tokens,
        supervised_tokens=supervised_tokens,
        evaluations=events(cadence(config.eval_every, steps), steps) if eval_rows else 0,
        eval_tokens_per_evaluation=sum(len(row.input_ids) for row in eval_rows),
        checkpoints=events(cadence(config.save_every, steps), steps),
    )


# --- the data, tokenized once ----------------------------------------------------------------------------


class TokenizedData:
    """train.jsonl / eval.jsonl read once and tokenized once per sample-length limit, with the time it took."""

    def __init__(self, data_dir: Path, tokenizer: Any) -> None:
        self.data_dir = data_dir
        self.tokenizer = tokenizer
        started = time.perf_counter()
        self.train_path = data_dir / TRAIN_FILE
        self.train_samples = load_samples(self.train_path)
        if not self.train_samples:
            raise TwinbotError(
                f"{TRAIN_FILE} has no samples; run `twinbot prepare` again with more data", self.train_path
            )
        eval_path = data_dir / EVAL_FILE
        self.eval_samples = load_samples(eval_path) if eval_path.is_file() else []
        self.read_seconds = time.perf_counter() - started
        self._train: dict[int, tuple[list[TokenizedSample], float]] = {}
        self._eval: dict[tuple[int, int], tuple[list[TokenizedSample], float]] = {}

    @property
    def tokenized_limits(self) -> set[int]:
        return set(self._train)

    def train(self, max_tokens: int) -> tuple[list[TokenizedSample], float]:
        """Tokenized train samples (those with something supervised left) and the seconds it took."""
        if max_tokens not in self._train:
            started = time.perf_counter()
            tokenized = tokenize_samples(self.train_samples, self.tokenizer, max_tokens)
            if not any(sample.num_supervised for sample in tokenized):
                raise TwinbotError(
                    f"no supervised tokens: no sample keeps any of the persona's reply within {max_tokens} "
                    "tokens; raise MAX_SEQ_LEN (and ROW_TOKENS) or check the data",
                    self.train_path,
                )
            self._train[max_tokens] = (tokenized, time.perf_counter() - started)
        return self._train[max_tokens]

    def eval(self, max_tokens: int, limit: int) -> tuple[list[TokenizedSample], float]:
        key = (max_tokens, limit)
        if key not in self._eval:
            started = time.perf_counter()
            samples = self.eval_samples[:limit] if limit else self.eval_samples
            self._eval[key] = (
                tokenize_samples(samples, self.tokenizer, max_tokens),
                time.perf_counter() - started,
            )
        return self._eval[key]

    def summary(self, max_tokens: int) -> DataSummary:
        """The data as the plan describes it, tokenized with the sample-length limit `max_tokens`."""
        tokenized, _ = self.train(max_tokens)
        return DataSummary(
            data_dir=str(self.data_dir),
            train_samples=len(self.train_samples),
            eval_samples=len(self.eval_samples),
            samples_used=len(tokenized),
            tokens_per_epoch=sum(len(s) for s in tokenized),
            supervised_tokens_per_epoch=sum(s.num_supervised for s in tokenized),
        )
