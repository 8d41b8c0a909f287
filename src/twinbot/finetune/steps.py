"""The arithmetic of a training step, shared by training, evaluation and the batch-size probe.

The loss of a micro-batch is the summed token cross-entropy over its supervised targets only: the model is
asked for logits (and runs its last layer's MLP, `twinbot.kernels.last_layer`) only where a target needs
them, which skips most of the vocabulary projection. The training loop divides the sum by the supervised
tokens of the whole optimizer step; `evaluate` divides by those of the eval set, across processes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from twinbot.finetune.batches import BatchLayout, make_batch
from twinbot.finetune.rows import IGNORE_INDEX, Batch, Row
from twinbot.kernels import last_layer
from twinbot.kernels.loss import summed_cross_entropy

if TYPE_CHECKING:
    from accelerate import Accelerator


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy, in fp32, of logits already taken at supervised positions only."""
    return summed_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)


def forward_loss(model: Any, batch: Batch) -> torch.Tensor:
    """Summed token loss of one micro-batch; logits (and the last layer's MLP, `twinbot.kernels.last_layer`)
    only where a target is supervised."""
    supervised = batch.target_ids != IGNORE_INDEX
    output = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,
        **last_layer.forward_kwargs(model, supervised),
    )
    return token_loss(output.logits, batch.target_ids[supervised])


@torch.no_grad()
def evaluate(
    model: Any, rows: list[Row], micro_batch: int, pad_id: int, accelerator: Accelerator, layout: BatchLayout
) -> float:
    """Mean loss per supervised eval token, over all processes (each takes every P-th micro-batch).
    `model` is the PEFT model itself (no DDP, no torch.compile), in the run's mixed precision."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    batches = [rows[i : i + micro_batch] for i in range(0, len(rows), micro_batch)]
    for batch_rows in batches[accelerator.process_index :: accelerator.num_processes]:
        batch = make_batch(batch_rows, pad_id, accelerator.device, layout)
        with accelerator.autocast():
            totals[0] += forward_loss(model, batch).double()
        totals[1] += batch.num_supervised
    model.train()
    totals = accelerator.reduce(totals, "sum")
    return float(totals[0] / totals[1])


def perplexity(loss: float | None) -> float | None:
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(min(loss, 700.0))
