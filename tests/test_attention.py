"""packed_sdpa computes the same attention as sdpa with transformers' block-diagonal mask, and the same as
running every sample on its own: logits, loss and LoRA gradients."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from twinbot.finetune import batches, lora, steps
from twinbot.finetune.rows import Row
from twinbot.kernels.attention import BUCKET_TOKENS, PACKED_SDPA, bucket_attention, packed_layout

SAMPLE_LENGTHS = [[37, 100, 5, 1, 60], [200, 33, 32], [64]]  # one-token samples, bucket edges, a lone row


def random_rows(lengths: list[list[int]], seed: int = 0, shared: int = 0) -> list[Row]:
    """Rows of random samples; with `shared`, every sample begins with the same `shared` unsupervised tokens
    (as a persona's samples begin with its system prompt), cut short in shorter samples."""
    generator = torch.Generator().manual_seed(seed)
    beginning = torch.randint(0, 2000, (shared,), generator=generator).tolist()
    rows = []
    for row_lengths in lengths:
        total = sum(row_lengths)
        ids = torch.randint(0, 2000, (total,), generator=generator).tolist()
        targets = torch.randint(0, 2000, (total,), generator=generator).tolist()
        targets = [t if i % 3 else -100 for i, t in enumerate(targets)]  # some unsupervised positions
        positions = [p for length in row_lengths for p in range(length)]
        for i, position in enumerate(positions):
            if position < shared:
                ids[i], targets[i] = beginning[position], -100
        rows.append(Row(input_ids=ids, target_ids=targets, position_ids=positions))
    return rows


def load(model_dir: Path, attention: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from twinbot.models.loading import load_model

    model = load_model(str(model_dir), dtype, attention, "cpu")
    model.config.use_cache = False
    return model


def logits(model: torch.nn.Module, rows: list[Row], layout: batches.BatchLayout) -> torch.Tensor:
    batch = batches.make_batch(rows, 0, torch.device("cpu"), layout)
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    real = [len(row) for row in rows]
    if layout != "rows":
        return out[0]
    return torch.cat([out[i, :length] for i, length in enumerate(real)])


def test_packed_sdpa_equals_block_diagonal_sdpa_and_each_sample_alone(tiny_model_dir: Path) -> None:
    rows = random_rows(SAMPLE_LENGTHS)
    reference = logits(load(tiny_model_dir, "sdpa"), rows, layout="rows")
    packed = load(tiny_model_dir, PACKED_SDPA)
    torch.testing.assert_close(logits(packed, rows, layout="rows"), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits(packed, rows, layout="flat"), reference, rtol=1e-5, atol=1e-5)

    sdpa = load(tiny_model_dir, "sdpa")
    alone = []
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row)]
        for start, end in itertools.pairwise(starts):
            ids = torch.tensor([row.input_ids[start:end]])
            with torch.no_grad():
                alone.append(sdpa(input_ids=ids, use_cache=False).logits[0])
    torch.testing.assert_close(torch.cat(alone), reference, rtol=1e-5, atol=1e-5)


def lora_gradients(
    model_dir: Path, attention: str, rows: list[Row], layout: batches.BatchLayout
) -> dict[str, torch.Tensor]:
    from twinbot.finetune.lora import apply_lora

    torch.manual_seed(0)
    model = apply_lora(load(model_dir, attention), 8, 16, 0.0, "all-linear")
    for name, param in model.named_parameters():
        if "lora_B" in name:  # nonzero B so that every LoRA weight gets a gradient
            torch.nn.init.normal_(param, std=0.02, generator=torch.Generator().manual_seed(len(name)))
    loss = steps.forward_loss(model, batches.make_batch(rows, 0, torch.device("cpu"), layout))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_same_lora_gradients(actual: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Every LoRA weight has a gradient in both, each nonzero in the reference (so the comparison means
    something), and they are equal to fp32 noise."""
    assert actual.keys() == reference.keys() and len(reference) > 0
    for name, grad in reference.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_packed_sdpa_gives_the_same_lora_gradients(tiny_model_dir: Path) -> None:
    rows = random_rows(SAMPLE_LENGTHS, seed=1)
    reference = lora_gradients(tiny_model_dir, "sdpa", rows, layout="rows")
    packed = lora_gradients(tiny_model_dir, PACKED_SDPA, rows, layout="flat")
    assert_same_lora_gradients(packed, reference)


def test_packed_sdpa_in_bf16_autocast_stays_close_to_fp32(tiny_model_dir: Path) -> None:
    """As training runs it on a bf16 CPU: bf16 weights under autocast, attention by `bucket_attention`
    (bf16 matmuls, fp32 softmax): no further from fp32 than plain sdpa in bf16."""
    rows = random_rows(SAMPLE_LENGTHS, seed=2)
    reference = logits(load(tiny_model_dir, "sdpa"), rows, layout="rows")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed = logits(load(tiny_model_dir, PACKED_SDPA, torch.bfloat16), rows, layout="flat").float()
        sdpa = logits(load(tiny_model_dir, "sdpa", torch.bfloat16), rows, layout="rows").float()
    packed_error = (packed - reference).abs().max()
    sdpa_error = (sdpa - reference).abs().max()
    assert packed_error <= 1.5 * sdpa_error + 1e-3


def test_layout_buckets_and_inverse() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 0, 1], [0, 1, 2, 3, 4, 5]])  # samples 3, 1, 2 | 6
    layout = packed_layout(positions)
    assert [size for size, _ in layout.buckets] == [BUCKET_TOKENS]
    size, gather = layout.buckets[0]
    assert len(gather) == 4 * size  # four samples, each padded to one bucket
    flat_tokens = torch.arange(12)
    # gathering, then reading back through `inverse`, returns every token to its own place
    torch.testing.assert_close(
        flat_tokens.index_select(0, gather).index_select(0, layout.inverse), flat_tokens
    )
    # each sample's bucket slot starts at the sample's first token
    starts = gather.view(4, size)[:, 0].tolist()
    assert sorted(starts) == [0, 3, 4, 6]


def test_layout_of_samples_that_share_the_rows_beginning() -> None:
    """A sample starting at position p > 0 gets the row's first p tokens ahead of its own in its bucket
    slot; only its own outputs are read back."""
    positions = torch.tensor([[0, 1, 2, 3, 2, 3, 4, 0, 1]])  # samples 4 | 3 (shares 2) | 2
    layout = packed_layout(positions)
    size, gather = layout.buckets[0]
    slots = gather.view(-1, size)
    assert slots[:, :3].tolist() == [[0, 1, 2], [0, 1, 4], [7, 8, 8]]
    shared_slot = 1
    assert layout.inverse[4:7].tolist() == [shared_slot * size + 2 + i for i in range(3)]
    flat_tokens = torch.arange(9)
    torch.testing.assert_close(
        flat_tokens.index_select(0, gather).index_select(0, layout.inverse), flat_tokens
    )
    with pytest.raises(RuntimeError, match="does not begin with the 5 tokens"):
        packed_layout(torch.tensor([[0, 1, 2, 5, 6]]))


def shared_beginning_rows() -> list[Row]:
    return random_rows(SAMPLE_LENGTHS, seed=4, shared=12)


def test_shared_beginnings_give_the_same_logits_loss_and_lora_gradients(tiny_model_dir: Path) -> None:
    """`shared_prefix` leaves out what the samples share with the first one, and every remaining token's
    logits, the loss and every LoRA gradient equal those of each sample computed in full."""
    rows = shared_beginning_rows()
    batch = batches.make_batch(rows, 0, torch.device("cpu"), "shared_prefix")
    assert batch.num_tokens == sum(len(row) for row in rows)
    assert batch.computed_tokens == len(batch.input_ids[0]) < batch.num_tokens - 60
    full = logits(load(tiny_model_dir, "sdpa"), rows, layout="rows")
    packed = logits(load(tiny_model_dir, PACKED_SDPA), rows, layout="shared_prefix")
    assert packed.shape[0] == batch.computed_tokens
    torch.testing.assert_close(packed, full[computed_places(rows)], rtol=1e-5, atol=1e-5)

    reference = lora_gradients(tiny_model_dir, "sdpa", rows, layout="rows")
    shared = lora_gradients(tiny_model_dir, PACKED_SDPA, rows, layout="shared_prefix")
    assert_same_lora_gradients(shared, reference)


def computed_places(rows: list[Row]) -> list[int]:
    """Where the tokens `shared_prefix_row` keeps sit among all the rows' tokens, in its order."""
    from twinbot.finetune.rows import row_samples, shared_prefix_length

    samples = [sample for row in rows for sample in row_samples(row)]
    places, offset = [], 0
    for index, sample in enumerate(samples):
        shared = shared_prefix_length(sample, samples[0]) if index else 0
        places.extend(range(offset + shared, offset + len(sample)))
        offset += len(sample)
    return places


def test_shared_beginnings_in_bf16_stay_as_close_as_unshared(tiny_model_dir: Path) -> None:
    """On a bf16 CPU short buckets take `bucket_attention`: sharing keeps it as close to fp32."""
    rows = shared_beginning_rows()
    reference = logits(load(tiny_model_dir, "sdpa"), rows, layout="rows")[computed_places(rows)]
    model = load(tiny_model_dir, PACKED_SDPA, torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shared = logits(model, rows, layout="shared_prefix").float()
        flat = logits(model, rows, layout="flat").float()[computed_places(rows)]
    assert (shared - reference).abs().max() <= 1.5 * (flat - reference).abs().max() + 1e-3


def test_a_row_that_does_not_start_at_position_zero_is_still_cut_at_the_row() -> None:
    layout = packed_layout(torch.tensor([[5, 6, 7], [8, 9, 10]]))
    starts = [start for size, gather in layout.buckets for start in gather.view(-1, size)[:, 0].tolist()]
    assert sorted(starts) == [0, 3]


def test_packed_sdpa_refuses_generation_with_a_cache(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, PACKED_SDPA)
    with pytest.raises(RuntimeError, match="load the model with attn_implementation='sdpa'"):
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)


@pytest.mark.parametrize(
    ("device", "packing", "expected"),
    [("cpu", True, PACKED_SDPA), ("cpu", False, "sdpa"), ("cuda", True, "sdpa"), ("mps", True, "sdpa")],
)
def test_auto_attention(device: str, packing: bool, expected: str) -> None:
    """Without flash-attn installed (CPU-only test machines), CUDA keeps sdpa; packed_sdpa is CPU's."""
    from transformers.utils import is_flash_attn_2_available

    if device == "cuda" and is_flash_attn_2_available():
        expected = "flash_attention_2"
    assert lora.pick_attention("auto", device, torch.bfloat16, packing) == expected
    assert lora.pick_attention("eager", device, torch.bfloat16, packing) == "eager"


@pytest.mark.parametrize("kv_heads", [1, 3, 9])
def test_bucket_attention_equals_causal_sdpa(kv_heads: int) -> None:
    """Grouped-query heads stacked along the length axis: the same as sdpa with enable_gqa, values and
    gradients; in bf16 no further from fp32 than sdpa in bf16."""
    generator = torch.Generator().manual_seed(kv_heads)
    query = torch.randn(4, 9, 40, 16, generator=generator, requires_grad=True)
    key = torch.randn(4, kv_heads, 40, 16, generator=generator, requires_grad=True)
    value = torch.randn(4, kv_heads, 40, 16, generator=generator, requires_grad=True)

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=0.3, enable_gqa=kv_heads != 9
        )

    expected = sdpa(query, key, value)
    out = bucket_attention(query, key, value, 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    expected_grads = torch.autograd.grad(expected.square().sum(), (query, key, value))
    grads = torch.autograd.grad(out.square().sum(), (query, key, value))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)

    low = [t.detach().bfloat16() for t in (query, key, value)]
    bucket_error = (bucket_attention(*low, 0.3).float() - expected).abs().max()
    sdpa_error = (sdpa(*low).float() - expected).abs().max()
    assert bucket_error <= 1.5 * sdpa_error + 1e-3
