"""summed_cross_entropy computes F.cross_entropy(logits.float(), targets, reduction="sum"), value and gradient,
whatever the block size: fp64 against finite differences, fp32 equal to the reference, 16-bit gradients
equal to the reference's after its cast back to the logits' dtype."""

from __future__ import annotations

import pytest
import torch

from twinbot.kernels import loss
from twinbot.kernels.loss import summed_cross_entropy


def reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


def random_case(
    rows: int, vocab: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=generator) * 4).to(dtype).requires_grad_()
    return logits, torch.randint(0, vocab, (rows,), generator=generator)


@pytest.mark.parametrize("block_elements", [1, 7, 64, 1 << 20])
def test_gradients_match_finite_differences(monkeypatch: pytest.MonkeyPatch, block_elements: int) -> None:
    monkeypatch.setattr(loss, "BLOCK_ELEMENTS", block_elements)  # blocks of one row up to all rows at once
    logits, targets = random_case(5, 11, torch.float64)
    assert torch.autograd.gradcheck(lambda x: summed_cross_entropy(x, targets), (logits,))


@pytest.mark.parametrize("block_elements", [100, 1 << 20])
def test_fp32_value_and_gradient_equal_cross_entropy(
    monkeypatch: pytest.MonkeyPatch, block_elements: int
) -> None:
    monkeypatch.setattr(loss, "BLOCK_ELEMENTS", block_elements)
    logits, targets = random_case(37, 1000, torch.float32)  # 37 rows: the last block is a short one
    expected = reference(logits, targets)
    (expected_grad,) = torch.autograd.grad(expected * 0.3, logits)
    value = summed_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(value * 0.3, logits)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)
    # the logits are left as they were (fp32 blocks are views until copied)
    torch.testing.assert_close(summed_cross_entropy(logits, targets), value, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_logits_give_the_reference_gradient_in_their_dtype(dtype: torch.dtype) -> None:
    logits, targets = random_case(64, 49152, dtype)  # SmolLM2's vocabulary: several blocks of rows
    expected = reference(logits, targets)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    value = summed_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-3)
    # the same fp32 gradient rounded once to the logits' dtype: at most one unit in the last place apart
    info = torch.finfo(dtype)
    ulp = (
        info.eps * expected_grad.float().abs() + info.eps * info.smallest_normal
    )  # subnormals: fixed spacing
    assert bool(((grad.float() - expected_grad.float()).abs() <= ulp).all())


def test_blocks_are_larger_on_accelerators() -> None:
    cpu = torch.empty(0, 49152)
    meta = torch.empty(0, 49152, device="meta")  # any non-CPU device
    assert loss.block_rows(cpu) == loss.BLOCK_ELEMENTS // 49152 == 21
    assert loss.block_rows(meta) == loss.ACCELERATOR_BLOCK_ELEMENTS // 49152
    assert loss.block_rows(torch.empty(0, 10**7)) == 1  # a vocabulary larger than a block: one row at a time
