"""Attention for packed token rows that costs what the samples cost, not what the rows cost.

With sdpa, a packed row gets a block-diagonal mask and every row pays full row x row attention: a 512-token
row of ~100-token samples does about five times the attention work it needs, and the mask keeps the CPU
kernel from skipping the causal upper half. `packed_sdpa` instead cuts the micro-batch at the position-id
restarts, gathers the samples into buckets of equal padded length (multiples of BUCKET_TOKENS), runs causal
attention once per bucket and scatters the outputs back. Per bucket that is sdpa on GPUs and for fp32, and
`bucket_attention` (explicit 16-bit matmuls, fp32 softmax) for short buckets of 16-bit inputs on CPU, where
the flash kernel is slow. Padding sits at the end of each sample, after every real token, so causal
attention never lets a real query see it; its outputs are dropped and get no gradient. A sample whose
position ids start at p > 0 left out the p tokens it shares with its row's first sample
(`twinbot.finetune.rows.shared_prefix_row`): those go into its bucket slot ahead of it.

Use it with `attn_implementation=PACKED_SDPA` (`register()` makes it known to transformers, which then
builds no mask), `position_ids` that restart at 0 at every sample (or continue the row's first sample),
and `use_cache=False`. Training only: it
refuses calls whose queries and keys differ in length (generation with a KV cache), and models whose
attention soft-caps its scores (Gemma 2) or slides a window shorter than a sample (Gemma 3).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

PACKED_SDPA = "packed_sdpa"
BUCKET_TOKENS = 32
# Buckets up to this padded length use bucket_attention on CPU in 16 bits, longer ones the flash kernel: in
# training steps on the bundled sample 256 was as fast as no limit and faster than 128 or 160; alone, the
# flash kernel wins from ~160 tokens and by 4x at 2048, where bucket_attention's fp32 scores also grow
# quadratically (BENCHMARKS.md).
SHORT_BUCKET_TOKENS = 256


@dataclass(frozen=True)
class PackedLayout:
    """Where each sample of a micro-batch goes: `buckets` holds (padded length, gather index into the
    flattened [batch * row] tokens) per bucket; `inverse[t]` is token t's place in the bucket outputs."""

    buckets: list[tuple[int, torch.Tensor]]
    inverse: torch.Tensor


def packed_layout(position_ids: torch.Tensor) -> PackedLayout:
    """Samples start at every row start and wherever the position ids do not go on by one: at a restart
    from 0, or at a sample that leaves out the first p tokens it shares with its row's first sample
    (`twinbot.finetune.rows.shared_prefix_row`). Such a sample attends to the row's first p tokens as to its own
    beginning: they go into its bucket ahead of it, and only its own outputs are kept."""
    rows, row_length = position_ids.shape
    total = rows * row_length
    flat = position_ids.reshape(-1)
    breaks = torch.ones(total, dtype=torch.bool, device=flat.device)
    breaks[1:] = flat[1:] != flat[:-1] + 1
    breaks[::row_length] = True
    bounds = [*breaks.nonzero().flatten().tolist(), total]
    first_positions = flat[bounds[:-1]].tolist()

    segments = []  # (start, length, shared): `shared` tokens from the row's start come first
    row_first_length = 0
    for (start, end), position in zip(itertools.pairwise(bounds), first_positions, strict=True):
        at_row_start = start % row_length == 0
        shared = 0 if at_row_start else position
        if at_row_start:
            row_first_length = end - start if position == 0 else 0
        elif shared > row_first_length:
            raise RuntimeError(
                f"a packed sample starts at position {shared}, but its row does not begin with the {shared} "
                f"tokens it would share (position ids must restart at 0 or continue the row's first sample)"
            )
        segments.append((start, end - start, shared))

    by_size: dict[int, list[tuple[int, int, int]]] = {}
    for start, length, shared in segments:
        by_size.setdefault(-(-(shared + length) // BUCKET_TOKENS) * BUCKET_TOKENS, []).append(
            (start, length, shared)
        )
    buckets: list[tuple[int, torch.Tensor]] = []
    inverse = [0] * total
    offset = 0  # where the current bucket's outputs begin in the concatenated outputs
    for size in sorted(by_size):
        members = by_size[size]
        gather: list[int] = []
        for slot, (start, length, shared) in enumerate(members):
            row_start = start - start % row_length
            gather.extend(range(row_start, row_start + shared))
            gather.extend(min(start + i, total - 1) for i in range(size - shared))
            base = offset + slot * size + shared
            inverse[start : start + length] = range(base, base + length)
        buckets.append((size, torch.tensor(gather, device=position_ids.device)))
        offset += len(members) * size
    return PackedLayout(buckets, torch.tensor(inverse, device=position_ids.device))


_last_layout: tuple[torch.Tensor, PackedLayout] | None = None


def _layout_for(position_ids: torch.Tensor, rows: int) -> PackedLayout:
    """Every layer of one forward pass gets the same position_ids tensor: build its layout once."""
    global _last_layout
    if _last_layout is None or _last_layout[0] is not position_ids:
        _last_layout = (position_ids, packed_layout(position_ids.expand(rows, -1)))
    return _last_layout[1]


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, H, T, D], key/value [B, Hkv, T, D] ->
    ([B, T, H, D], None)."""
    rows, heads, length, head_dim = query.shape
    if key.shape[2] != length or position_ids is None or attention_mask is not None:
        raise RuntimeError(
            f"{PACKED_SDPA} attention is for training on packed rows (position_ids, no mask, no KV cache); "
            f"load the model with attn_implementation='sdpa' for generation"
        )
    softcap, window = kwargs.get("softcap"), kwargs.get("sliding_window")
    if softcap is not None or (window is not None and int(position_ids.max()) >= window):
        raise RuntimeError(
            f"{PACKED_SDPA} attention has no soft-capping and no sliding window; load this model with "
            "attn_implementation='sdpa' or 'eager' (twinbot.models.loading.supported_attention picks one)"
        )
    layout = _layout_for(position_ids, rows)
    scale = scaling if scaling is not None else head_dim**-0.5
    on_cpu = query.device.type == "cpu"
    # On CPU the flash kernel is slow in 16 bits at sample lengths (its backward most of all): short buckets
    # take bucket_attention (16-bit matmuls, fp32 softmax, like transformers' eager attention), longer ones
    # the flash kernel in fp32. GPUs keep sdpa in the input dtype.
    sdpa_dtype = torch.float32 if on_cpu else query.dtype
    short_bucket_tokens = SHORT_BUCKET_TOKENS if on_cpu and query.dtype != torch.float32 else 0

    def tokens_first(states: torch.Tensor) -> torch.Tensor:
        return states.transpose(1, 2).reshape(rows * length, states.shape[1], head_dim)

    q, k, v = tokens_first(query), tokens_first(key), tokens_first(value)
    outputs = []
    with torch.autocast(query.device.type, enabled=False):
        for size, gather in layout.buckets:

            def bucket(states: torch.Tensor, size: int = size, gather: torch.Tensor = gather) -> torch.Tensor:
                return (
                    states.index_select(0, gather).view(-1, size, states.shape[1], head_dim).transpose(1, 2)
                )

            if size <= short_bucket_tokens:
                out = bucket_attention(bucket(q), bucket(k), bucket(v), scale, dropout)
            else:
                out = torch.nn.functional.scaled_dot_product_attention(
                    bucket(q).to(sdpa_dtype),
                    bucket(k).to(sdpa_dtype),
                    bucket(v).to(sdpa_dtype),
                    dropout_p=dropout,
                    is_causal=True,
                    scale=scale,
                    enable_gqa=key.shape[1] != heads,
                ).to(query.dtype)
            outputs.append(out.transpose(1, 2).reshape(-1, heads, head_dim))
    merged = torch.cat(outputs).index_select(0, layout.inverse)
    return merged.view(rows, length, heads, head_dim), None  # every bucket's output is in query.dtype


def bucket_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, dropout: float = 0.0
) -> torch.Tensor:
    """Causal attention by explicit matmuls: query [N, H, L, D], key/value [N, Hkv, L, D] -> [N, H, L, D].
    The query heads that share a key/value head are stacked along the length axis, so grouped-query
    attention needs no repeated keys; scores and softmax are in fp32, the matmuls in the input dtype."""
    samples, heads, length, head_dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    stacked = query.reshape(samples, kv_heads, group * length, head_dim)
    scores = (stacked @ key.transpose(-1, -2)).float() * scale + _causal_bias(length, group, query.device)
    weights = scores.softmax(dim=-1)
    if dropout:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    out = weights.to(value.dtype) @ value
    return out.view(samples, heads, length, head_dim)


_causal_biases: dict[tuple[int, int, torch.device], torch.Tensor] = {}


def _causal_bias(length: int, group: int, device: torch.device) -> torch.Tensor:
    """[group * length, length]: 0 where a query may see a key, -inf above the diagonal."""
    cache_key = (length, group, device)
    if cache_key not in _causal_biases:
        bias = torch.full((length, length), float("-inf"), device=device).triu(1)
        _causal_biases[cache_key] = bias.repeat(group, 1)
    return _causal_biases[cache_key]


def register() -> None:
    """Make `attn_implementation=PACKED_SDPA` known to transformers (idempotent). torch.compile leaves it
    out of its graphs (its shapes depend on the data); the layers around it still compile."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_SDPA, torch.compiler.disable(packed_sdpa_attention))
