"""LoraLinearFunction computes what peft's LoRA forward computes: values, LoRA gradients and input
gradients, in fp64 (gradcheck), fp32 (equal to peft's) and bf16 autocast (no further from fp32 than
peft's own bf16 path); and layers it cannot handle keep peft's forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from test_attention import SAMPLE_LENGTHS, assert_same_lora_gradients, random_rows
from twinbot.finetune import batches, lora, steps
from twinbot.finetune import recipe as train
from twinbot.finetune.lora import apply_lora
from twinbot.kernels.fused_lora import LoraLinearFunction, fuse_lora_layers, unfuse_lora_layers
from twinbot.models import devices
from twinbot.models.loading import load_model


@pytest.mark.parametrize("with_bias", [False, True])
def test_function_gradients_match_finite_differences(with_bias: bool) -> None:
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape: int, grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(grad)

    x, weight, lora_a, lora_b = (
        tensor(5, 7, grad=True),
        tensor(6, 7),
        tensor(3, 7, grad=True),
        tensor(6, 3, grad=True),
    )
    bias = tensor(6) if with_bias else None
    assert torch.autograd.gradcheck(
        lambda x, a, b: LoraLinearFunction.apply(x, weight, bias, a, b, 1.7), (x, lora_a, lora_b)
    )
    expected = x @ weight.t() + 1.7 * (x @ lora_a.t()) @ lora_b.t() + (0 if bias is None else bias)
    torch.testing.assert_close(LoraLinearFunction.apply(x, weight, bias, lora_a, lora_b, 1.7), expected)


def lora_model(
    model_dir: Path, dtype: torch.dtype = torch.float32, dropout: float = 0.0, attention: str = "sdpa"
) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_model(str(model_dir), dtype, attention, "cpu")
    model.config.use_cache = False
    peft_model = apply_lora(model, 8, 16, dropout, "all-linear")
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # nonzero B so that every LoRA weight gets a gradient
            torch.nn.init.normal_(param, std=0.02, generator=torch.Generator().manual_seed(len(name)))
    return peft_model


def loss_and_gradients(
    model: torch.nn.Module, autocast: bool = False, layout: batches.BatchLayout = "rows"
) -> tuple[float, dict[str, torch.Tensor]]:
    rows = random_rows(SAMPLE_LENGTHS, seed=3, shared=12 if layout == "shared_prefix" else 0)
    batch = batches.make_batch(rows, 0, torch.device("cpu"), layout=layout)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = steps.forward_loss(model, batch)
    loss.backward()
    grads = {name: p.grad.float().clone() for name, p in model.named_parameters() if p.requires_grad}
    return float(loss), grads


def test_fused_model_equals_peft_in_fp32(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    reference_loss, reference = loss_and_gradients(model)
    assert fuse_lora_layers(model) == sum(
        "lora_A" in n and n.endswith("weight") for n, _ in model.named_parameters()
    )
    fused_loss, fused = loss_and_gradients(model)
    assert fused_loss == pytest.approx(reference_loss, rel=1e-6)
    assert_same_lora_gradients(fused, reference)


def test_fused_model_in_bf16_autocast_is_as_close_to_fp32_as_peft(tiny_model_dir: Path) -> None:
    """As training runs it on a bf16 CPU: bf16 base weights, fp32 LoRA weights, bf16 autocast."""
    _, exact = loss_and_gradients(lora_model(tiny_model_dir))
    model = lora_model(tiny_model_dir, torch.bfloat16)
    for param in model.parameters():  # the LoRA weights stay fp32, as apply_lora leaves them in training
        if param.requires_grad:
            param.data = param.data.float()
    _, peft_bf16 = loss_and_gradients(model, autocast=True)
    fuse_lora_layers(model)
    _, fused_bf16 = loss_and_gradients(model, autocast=True)

    def relative_error(grads: dict[str, torch.Tensor]) -> float:
        return max(float((grads[n] - g).norm() / g.norm()) for n, g in exact.items())

    assert relative_error(fused_bf16) <= 1.5 * relative_error(peft_bf16) + 1e-3


def test_layers_with_dropout_keep_peft_forward(tiny_model_dir: Path) -> None:
    assert fuse_lora_layers(lora_model(tiny_model_dir, dropout=0.1)) == 0


def test_disabled_and_merged_adapters_fall_back_to_peft(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        adapted = model(input_ids=ids).logits
        fuse_lora_layers(model)
        with model.disable_adapter():
            torch.testing.assert_close(model(input_ids=ids).logits, base)
        torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)
        model.merge_adapter()
        torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-4)
        model.unmerge_adapter()
    assert not torch.allclose(base, adapted)


def test_fusing_leaves_the_adapter_and_unfuse_restores_peft(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count = fuse_lora_layers(model)
    assert count > 0 and fuse_lora_layers(model) == 0  # already fused: nothing to do twice
    assert model.state_dict().keys() == before.keys()
    unfuse_lora_layers(model)
    assert fuse_lora_layers(model) == count


def test_training_with_and_without_fused_lora_gives_the_same_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from support.training import assert_same_adapter, make_config

    common = {"max_steps": 3, "lora_dropout": 0.0}
    peft_run = train.main(make_config(tiny_model_dir, tmp_path / "peft", fused_lora=False, **common))
    fused_run = train.main(make_config(tiny_model_dir, tmp_path / "fused", fused_lora=True, **common))
    assert peft_run.final_eval_loss is not None and fused_run.final_eval_loss is not None
    assert abs(peft_run.final_eval_loss - fused_run.final_eval_loss) < 1e-4
    assert_same_adapter(tmp_path / "peft" / "adapter", tmp_path / "fused" / "adapter", rtol=1e-3, atol=1e-5)


def test_a_trainable_base_weight_takes_peft_forward_and_gets_its_gradient(tiny_model_dir: Path) -> None:
    model = lora_model(tiny_model_dir)
    fuse_lora_layers(model)
    layer = next(m for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A"))
    layer.base_layer.weight.requires_grad_(True)
    loss_and_gradients(model)
    assert layer.base_layer.weight.grad is not None and layer.base_layer.weight.grad.abs().sum() > 0


def test_a_model_for_torch_compile_keeps_peft_forward(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch 2.11's compiler traced the fused layers wrong (BENCHMARKS.md, "GPU checks"): a compiled run
    keeps peft's forward."""
    from support.training import make_config

    precision = devices.pick_precision(False, "cpu")
    monkeypatch.setattr(lora, "compile_wanted", lambda config, device_type: config.torch_compile is not False)
    for compiled, fused in ((False, True), (True, False), ("auto", False)):
        config = make_config(tiny_model_dir, tmp_path / "run", torch_compile=compiled)
        model, _ = lora.load_training_model(config, torch.device("cpu"), precision)
        assert any(hasattr(m, "_twinbot_peft_forward") for m in model.modules()) == fused
