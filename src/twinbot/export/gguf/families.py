"""The model families the GGUF writer handles and what each one needs written differently for llama.cpp.

Each family follows llama.cpp's own converter (convert_hf_to_gguf.py, conversion/{llama,qwen,gemma,phi}.py):
its GGUF architecture, the q/k row permutation of the LLAMA architecture, Gemma's RMSNorm weights stored
as 1 + w, and the settings llama.cpp reads or assumes (RoPE scaling, sliding-window layer pattern,
soft-capping, attention scale). `check_gguf_support` refuses a model whose settings llama.cpp cannot express,
before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CONVERT_HINT = "use `--to merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"


@dataclass(frozen=True)
class GgufFamily:
    """How one transformers model_type is written as GGUF: what differs from the plain llama layout."""

    name: str  # what messages call it
    arch: str  # the gguf.MODEL_ARCH member
    activation: str  # the MLP activation llama.cpp's graph for `arch` computes
    permute_qk: bool = False  # LLAMA rotates adjacent pairs: HF's rotate-half q/k rows are permuted
    norm_offset: float = 0.0  # Gemma's RMSNorm computes x * (1 + w); llama.cpp's computes x * w
    rope_types: tuple[str, ...] = ("default",)  # RoPE scaling types llama.cpp computes like transformers
    swa_pattern: int = 0  # llama.cpp's fixed sliding-window layers: every n-th layer is full; 0 = none
    tied_output_only: bool = False  # llama.cpp always reuses token_embd as the output layer
    biases: bool = False  # q/k/v projection biases (Qwen2)
    large_layers: int = 0  # the layer count of the size for which llama.cpp scales queries by hidden/heads


FAMILIES: dict[str, GgufFamily] = {
    "llama": GgufFamily("llama (incl. Llama 3.x, SmolLM)", "LLAMA", "silu", permute_qk=True,
                        rope_types=("default", "linear", "llama3")),
    "mistral": GgufFamily("mistral", "LLAMA", "silu", permute_qk=True, rope_types=("default", "linear")),
    "qwen2": GgufFamily("qwen2", "QWEN2", "silu", biases=True),
    "qwen3": GgufFamily("qwen3", "QWEN3", "silu"),
    "gemma2": GgufFamily("gemma2", "GEMMA2", "gelu_pytorch_tanh", norm_offset=1.0, swa_pattern=2,
                         tied_output_only=True, large_layers=46),
    "gemma3_text": GgufFamily("gemma3 (text)", "GEMMA3", "gelu_pytorch_tanh", norm_offset=1.0, swa_pattern=6,
                              rope_types=("default", "linear"), large_layers=62),
    "phi3": GgufFamily("phi3", "PHI3", "silu", rope_types=("default", "longrope")),
}  # fmt: skip


def supported_families() -> str:
    return ", ".join(dict.fromkeys(family.name for family in FAMILIES.values()))


def check_gguf_support(config: PretrainedConfig) -> GgufFamily:
    """The family of `config`; a TwinbotError naming what is unsupported when llama.cpp cannot run it as
    transformers does."""
    model_type = getattr(config, "model_type", "unknown")
    family = FAMILIES.get(model_type)
    if family is None:
        raise TwinbotError(
            f"GGUF export does not support the '{model_type}' architecture yet "
            f"(supported: {supported_families()}); {CONVERT_HINT}"
        )
    problems = _problems(config, family)
    if problems:
        raise TwinbotError(
            f"GGUF export cannot express this {family.name} model for llama.cpp: {', '.join(problems)}; "
            f"{CONVERT_HINT}"
        )
    return family


def _problems(config: PretrainedConfig, family: GgufFamily) -> list[str]:
    problems = []
    rope_type = rope_parameters(config).get("rope_type") or "default"
    if rope_type not in family.rope_types:
        problems.append(f"rope scaling '{rope_type}'")
    if (rope_parameters(config, "sliding_attention").get("rope_type") or "default") != "default":
        problems.append("rope scaling on the sliding-window layers")
    activation = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    if activation != family.activation:
        problems.append(f"activation '{activation}'")
    if not family.biases and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        problems.append("bias terms in attention/MLP")
    if getattr(config, "use_sliding_window", False):
        problems.append("sliding-window attention")
    if family.tied_output_only and not getattr(config, "tie_word_embeddings", True):
        problems.append("an output layer separate from the embeddings")
    if family.swa_pattern:
        problems += _gemma_problems(config, family)
    return problems


def _gemma_problems(config: PretrainedConfig, family: GgufFamily) -> list[str]:
    problems = []
    if sliding_window_layers(config, family) is None:
        problems.append(
            f"sliding-window layers other than llama.cpp's (one full layer in {family.swa_pattern})"
        )
    # llama.cpp scales queries by 1/sqrt(head_dim), or by hidden/heads for the largest model (gemma_pytorch)
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    scalar = config.hidden_size // n_heads if n_layers == family.large_layers else head_dim(config)
    if getattr(config, "query_pre_attn_scalar", scalar) != scalar:
        problems.append(f"query_pre_attn_scalar {config.query_pre_attn_scalar} (llama.cpp uses {scalar})")
    attn_softcap = getattr(config, "attn_logit_softcapping", None)
    if family.arch == "GEMMA2" and attn_softcap is None:
        problems.append("no attention soft-capping")
    if family.arch == "GEMMA3" and attn_softcap is not None:
        problems.append("attention soft-capping")
    return problems


# --- settings as llama.cpp reads them -----------------------------------------------------------------------


def rope_parameters(config: PretrainedConfig, layer_type: str = "full_attention") -> dict[str, Any]:
    """The RoPE settings of `layer_type` layers (Gemma 3 has two sets), else the model's only set."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if not isinstance(params, dict):
        return {}
    if "full_attention" in params or "sliding_attention" in params:
        return dict(params.get(layer_type) or {})
    return dict(params) if layer_type == "full_attention" else {}


def rope_theta(config: PretrainedConfig, layer_type: str = "full_attention") -> float | None:
    theta = rope_parameters(config, layer_type).get("rope_theta")
    if theta is None and layer_type == "full_attention":
        theta = getattr(config, "rope_theta", 10000.0)
    return None if theta is None else float(theta)


def head_dim(config: PretrainedConfig) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def rotary_dims(config: PretrainedConfig) -> int:
    """How many dimensions of each head RoPE rotates (Phi-3 variants rotate a part only)."""
    partial = rope_parameters(config).get("partial_rotary_factor") or getattr(
        config, "partial_rotary_factor", 1.0
    )
    return int(float(partial or 1.0) * head_dim(config))


def sliding_window_layers(config: PretrainedConfig, family: GgufFamily) -> bool | None:
    """True when the model has llama.cpp's sliding-window layer pattern for `family`, False when no layer
    slides (Gemma 3 only), None when its layers differ from what llama.cpp assumes."""
    n_layers, pattern = config.num_hidden_layers, family.swa_pattern
    layer_types = getattr(config, "layer_types", None) or []
    sliding = [kind == "sliding_attention" for kind in layer_types]
    if len(sliding) != n_layers:
        return None
    if not any(sliding) and family.arch == "GEMMA3":
        return False
    assumed = [layer % pattern < pattern - 1 for layer in range(n_layers)]  # llama_hparams::set_swa_pattern
    return True if sliding == assumed and getattr(config, "sliding_window", None) else None


def llama3_rope_factors(config: PretrainedConfig) -> torch.Tensor:
    """Llama 3.1's per-frequency RoPE divisors, which llama.cpp reads from `rope_freqs.weight`
    (convert_hf_to_gguf's LlamaModel.generate_extra_tensors)."""
    rope = rope_parameters(config)
    dim = head_dim(config)
    freqs = 1.0 / (
        float(rope.get("rope_theta", 10000.0)) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    )
    factor = float(rope.get("factor", 8.0))
    low_freq_factor = float(rope.get("low_freq_factor", 1.0))
    high_freq_factor = float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    low_freq_wavelen, high_freq_wavelen = old_context / low_freq_factor, old_context / high_freq_factor
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            factors.append(1.0)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)
