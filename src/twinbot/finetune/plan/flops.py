"""The FLOPs of training and evaluation, from the model's matmul shapes and the micro-batches' lengths:
what the analytic estimate divides by this machine's matmul speed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.finetune.batches import BatchLayout
from twinbot.finetune.plan.workload import supervised_count
from twinbot.finetune.rows import Row, row_samples, shared_prefix_row


@dataclass(frozen=True)
class ModelShape:
    """Matmul parameters by role (embeddings do no matmul) and the attention width."""

    body_params: int  # frozen projections every token goes through (attention and MLP)
    head_params: int  # output projection: only at supervised positions (logits_to_keep)
    lora_params: int  # trainable LoRA A and B matrices
    layers: int
    attention_dim: int  # query width per layer (heads x head size)


def model_shape(model: Any, lora_r: int = 0, lora_targets: str | list[str] = "all-linear") -> ModelShape:
    """Count a (PEFT or plain, possibly meta-device) model's matmul parameters. A plain model gets the LoRA
    that `apply_lora(r=lora_r, target_modules=lora_targets)` would add."""
    head = model.get_output_embeddings()
    linears = [
        (name.split("."), module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    ]
    is_lora = [("lora_A" in parts or "lora_B" in parts) for parts, _ in linears]
    body = sum(m.weight.numel() for (_, m), lora_part in zip(linears, is_lora, strict=True) if not lora_part)
    if any(is_lora):  # a PEFT model: count its own LoRA matrices
        lora = sum(m.weight.numel() for (_, m), lora_part in zip(linears, is_lora, strict=True) if lora_part)
    else:
        lora = sum(
            lora_r * (m.in_features + m.out_features)
            for parts, m in linears
            if lora_targets == "all-linear" or parts[-1] in lora_targets
        )
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    head_dim = getattr(text, "head_dim", None) or (
        int(getattr(text, "hidden_size", 0) or 0) // heads if heads else 0
    )
    return ModelShape(
        body_params=body,
        head_params=head.weight.numel() if head is not None else 0,
        lora_params=lora,
        layers=layers,
        attention_dim=heads * int(head_dim),
    )


def shape_of_spec(spec: str | None, lora_r: int, lora_targets: str | list[str]) -> ModelShape:
    """The shape of a base model from its config alone (built on the meta device: no weights loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from twinbot.models.loading import resolve_model

    resolved = resolve_model(spec)
    try:
        config = AutoConfig.from_pretrained(resolved)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:
        raise TwinbotError(
            f"cannot read the model's architecture ({one_line(exc, limit=160)}); pass --model with a local folder"
        ) from exc
    return model_shape(model, lora_r, lora_targets)


def micro_batch_flops(
    shape: ModelShape,
    width: int,
    rows: int,
    supervised: int,
    checkpointing: bool,
    train: bool,
    attention_pairs: int | None = None,
) -> float:
    """FLOPs of one micro-batch of `rows` rows padded to `width` tokens.

    Forward: 2 x params per token through the frozen projections and LoRA, attention scores and values
    (4 x query width per (query, key) pair and layer, halved for the causal mask), and the output projection
    at supervised positions only. `attention_pairs` is the sum of squared attended lengths: rows x width^2
    when attention spans whole rows (sdpa's block-diagonal mask), the sum of squared sample lengths when
    it runs per sample (packed_sdpa, flash-attention). Backward: frozen weights need gradients for their
    inputs only (2 x params, no weight gradients); LoRA needs both (4 x); attention twice its forward.
    Checkpointing recomputes the forward once more.
    """
    tokens = rows * width
    pairs = attention_pairs if attention_pairs is not None else rows * width * width
    linear = 2 * (shape.body_params + shape.lora_params) * tokens
    attention = 2 * shape.layers * shape.attention_dim * pairs
    head = 2 * shape.head_params * supervised
    forward = linear + attention + head
    if not train:
        return forward
    backward = 2 * shape.body_params * tokens + 4 * shape.lora_params * tokens + 2 * attention + head
    recompute = linear + attention if checkpointing else 0
    return forward + backward + recompute


def epoch_flops(
    shape: ModelShape,
    batches: Sequence[Sequence[Row]],
    checkpointing: bool,
    train: bool,
    layout: BatchLayout = "rows",
) -> float:
    total = 0.0
    for batch in batches:
        if layout == "rows":
            width, rows, pairs = max(len(row.input_ids) for row in batch), len(batch), None
        else:  # one padding-free row, attention within each sample (over all of it, shared beginning too)
            shared = layout == "shared_prefix"
            width = len(shared_prefix_row(batch)) if shared else sum(len(row) for row in batch)
            rows = 1
            pairs = sum(len(sample) ** 2 for row in batch for sample in row_samples(row))
        supervised = sum(supervised_count(row) for row in batch)
        total += micro_batch_flops(shape, width, rows, supervised, checkpointing, train, pairs)
    return total
