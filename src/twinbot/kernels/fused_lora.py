"""One autograd node per LoRA linear layer, for training speed on small models.

peft's LoRA `Linear.forward` computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as separate ops:
under bf16 autocast that is a copy of `x` to the adapter's fp32 and back, two casts of the adapter weights,
a multiply and an add over the whole output, and the backward of each. On a 135M model those elementwise
passes cost about as much as the adapter's matmuls. `LoraLinearFunction` computes the same thing with
matmuls only: `out = x W^T (+ bias)`, then `out += scaling * (x A^T) B^T` in place (`addmm_`), and in the
backward `grad_x = grad W + (scaling * grad B) A` the same way. Only the adapter gets gradients.

`fuse_lora_layers(model)` switches every eligible peft LoRA `Linear` (one active adapter, no dropout, no
DoRA or other variant, no trainable bias) to it. The adapter's parameters stay where peft keeps them, so
saving, loading and merging are unchanged. A layer falls back to peft's own forward whenever a call is
anything else (adapters disabled or merged, mixed-adapter batches, extra arguments, dtypes that autocast
would not reconcile).
"""

from __future__ import annotations

import types
from typing import Any

import torch

_PEFT_FORWARD = "_twinbot_peft_forward"


class LoraLinearFunction(torch.autograd.Function):
    """out = x W^T + bias + scaling * (x A^T) B^T for 2-D x; W and bias frozen, all inputs in one dtype
    except A and B, whose gradients come back in their own dtype."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
    ) -> torch.Tensor:
        a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
        x_a = x @ a.t()
        out = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
        out.addmm_(x_a, b.t(), alpha=scaling)
        ctx.save_for_backward(x, weight, a, b, x_a)
        ctx.scaling = scaling
        ctx.adapter_dtypes = (lora_a.dtype, lora_b.dtype)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, a, b, x_a = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x_a = grad @ (b * ctx.scaling)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight
            grad_x.addmm_(grad_x_a, a)
        grad_a = grad_b = None
        if ctx.needs_input_grad[3]:
            grad_a = (grad_x_a.t() @ x).to(ctx.adapter_dtypes[0])
        if ctx.needs_input_grad[4]:
            # (x_a^T grad)^T rather than grad^T x_a: the same numbers, ~40% faster on CPU for these shapes
            grad_b = (x_a.t() @ grad).t().mul_(ctx.scaling).to(ctx.adapter_dtypes[1])
        return grad_x, None, None, grad_a, grad_b, None


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    peft_forward = getattr(self, _PEFT_FORWARD)
    adapters = self.active_adapters
    if args or kwargs or self.disable_adapters or self.merged or len(adapters) != 1:
        return peft_forward(x, *args, **kwargs)
    name = adapters[0]
    if name not in self.lora_A or name in getattr(self, "lora_variant", {}):
        return peft_forward(x, *args, **kwargs)
    base = self.base_layer
    weight, bias = base.weight, base.bias
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    elif weight.dtype == x.dtype:
        dtype = x.dtype
    else:
        return peft_forward(x, *args, **kwargs)
    if weight.requires_grad or (bias is not None and bias.requires_grad):  # only the adapter gets gradients
        return peft_forward(x, *args, **kwargs)
    flat = x.reshape(-1, x.shape[-1]).to(dtype)
    out = LoraLinearFunction.apply(
        flat,
        weight.to(dtype),
        None if bias is None else bias.to(dtype),
        self.lora_A[name].weight,
        self.lora_B[name].weight,
        float(self.scaling[name]),
    )
    return out.view(*x.shape[:-1], out.shape[-1])


def _eligible(module: torch.nn.Module) -> bool:
    from peft.tuners.lora import Linear as LoraLinear

    if not isinstance(module, LoraLinear) or not isinstance(module.base_layer, torch.nn.Linear):
        return False
    if module.fan_in_fan_out:
        return False
    if any(not isinstance(dropout, torch.nn.Identity) for dropout in module.lora_dropout.values()):
        return False
    return not any(getattr(module, "lora_bias", {}).values())


def fuse_lora_layers(model: torch.nn.Module) -> int:
    """Switch every eligible LoRA linear layer of `model` to LoraLinearFunction; returns how many."""
    count = 0
    for module in model.modules():
        if hasattr(module, _PEFT_FORWARD) or not _eligible(module):
            continue
        setattr(module, _PEFT_FORWARD, module.forward)
        module.forward = types.MethodType(_fused_forward, module)
        count += 1
    return count


def unfuse_lora_layers(model: torch.nn.Module) -> None:
    """Give every layer fuse_lora_layers switched its peft forward back."""
    for module in model.modules():
        if hasattr(module, _PEFT_FORWARD):
            module.forward = getattr(module, _PEFT_FORWARD)
            delattr(module, _PEFT_FORWARD)
