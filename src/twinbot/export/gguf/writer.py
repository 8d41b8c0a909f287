"""A merged model as one GGUF file, written straight from Python with the `gguf` package: the family's
model metadata, the tokenizer and chat template (`tokenizer`), the persona's system prompt
(GGUF_SYSTEM_PROMPT_KEY, read back by `twinbot chat/serve`), and the tensors under llama.cpp's names in f32,
f16 or q8_0, transformed as llama.cpp's converter does (`families`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from twinbot.errors import TwinbotError
from twinbot.export.gguf.families import (
    CONVERT_HINT,
    GgufFamily,
    check_gguf_support,
    head_dim,
    llama3_rope_factors,
    rope_parameters,
    rope_theta,
    rotary_dims,
    sliding_window_layers,
)
from twinbot.export.gguf.tokenizer import add_tokenizer
from twinbot.models.llama_context import import_llama_cpp, quiet_llama_cpp
from twinbot.runs import GGUF_SYSTEM_PROMPT_KEY

if TYPE_CHECKING:
    import gguf
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

GgufType = Literal["f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m"]
GGUF_TYPES: tuple[GgufType, ...] = ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")
_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # gguf.LlamaFileType ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
# The k-quants are made by llama.cpp's own quantizer (llama-quantize's code, through llama-cpp-python) from
# an f16 GGUF, with its per-tensor mix ("_m" keeps some attention and feed-forward tensors in a larger
# type) and its fallbacks (q5_0, q8_0) for tensors whose rows are not a multiple of 256 weights.
LLAMA_QUANTIZED: dict[str, str] = {
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
}


def write_gguf(
    merged: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    gguf_type: GgufType,
    name: str = "twinbot",
    system_prompt: str | None = None,
) -> None:
    """Write `merged` (a transformers model of a supported family) as a GGUF file at `path` (not atomic by
    itself). The k-quant types need llama-cpp-python (LLAMA_QUANTIZED)."""
    import gguf

    if gguf_type in LLAMA_QUANTIZED:
        require_quantizer(gguf_type)  # fails before the f16 file is written
        f16_path = path.with_name(path.name + ".f16")
        try:
            write_gguf(merged, tokenizer, f16_path, "f16", name, system_prompt)
            quantize_gguf(f16_path, path, gguf_type)
        finally:
            f16_path.unlink(missing_ok=True)
        return
    family = check_gguf_support(merged.config)
    arch = getattr(gguf.MODEL_ARCH, family.arch)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        _add_model_metadata(writer, merged.config, family)
        writer.add_file_type(_FILE_TYPES[gguf_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(writer, tokenizer, int(merged.config.vocab_size))
        if system_prompt:
            writer.add_string(GGUF_SYSTEM_PROMPT_KEY, system_prompt)
        name_map = gguf.get_tensor_name_map(arch, merged.config.num_hidden_layers)
        for gguf_name, data in _tensors(merged, family, name_map):
            _add_tensor(writer, gguf_name, data, gguf_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_model_metadata(writer: gguf.GGUFWriter, config: PretrainedConfig, family: GgufFamily) -> None:
    import gguf

    writer.add_vocab_size(int(config.vocab_size))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_dimension_count(rotary_dims(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(rope_theta(config) or 10000.0)
    rope = rope_parameters(config)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if family.swa_pattern and sliding_window_layers(config, family):
        writer.add_sliding_window(int(config.sliding_window))
        if (local_theta := rope_theta(config, "sliding_attention")) is not None:
            writer.add_rope_freq_base_swa(local_theta)
    if (softcap := getattr(config, "attn_logit_softcapping", None)) is not None:
        writer.add_attn_logit_softcapping(float(softcap))
    if (softcap := getattr(config, "final_logit_softcapping", None)) is not None:
        writer.add_final_logit_softcapping(float(softcap))
    if rope.get("rope_type") == "longrope":
        writer.add_rope_scaling_attn_factors(longrope_attention_factor(config))
    if family.arch == "PHI3":
        writer.add_rope_scaling_orig_ctx_len(int(config.original_max_position_embeddings))
        writer.add_sliding_window(0)  # llama.cpp runs Phi-3's sliding window as full attention


def _tensors(
    merged: PreTrainedModel, family: GgufFamily, name_map: gguf.TensorNameMap
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every weight under its llama.cpp name, transformed as llama.cpp's converter does, then the tensors
    llama.cpp computes from the config (Llama 3's RoPE frequency factors)."""
    config = merged.config
    n_head, n_head_kv = config.num_attention_heads, config.num_key_value_heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in merged.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq"):
            continue  # llama.cpp reuses token_embd when output.weight is absent
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TwinbotError(f"GGUF export: no GGUF name for tensor {hf_name}; {CONVERT_HINT}")
        data = tensor.detach().to(torch.float32)
        if family.permute_qk and hf_name.endswith("q_proj.weight"):
            data = llama_permute(data, n_head, n_head)
        elif family.permute_qk and hf_name.endswith("k_proj.weight"):
            data = llama_permute(data, n_head, n_head_kv)
        elif family.norm_offset and hf_name.endswith("norm.weight"):
            data = data + family.norm_offset
        yield gguf_name, data
    rope = rope_parameters(config)
    if rope.get("rope_type") == "llama3":
        yield "rope_freqs.weight", llama3_rope_factors(config)
    if rope.get("rope_type") == "longrope":  # llama.cpp picks by context size as transformers by length
        yield "rope_factors_long.weight", torch.tensor(rope["long_factor"], dtype=torch.float32)
        yield "rope_factors_short.weight", torch.tensor(rope["short_factor"], dtype=torch.float32)


def llama_permute(weights: torch.Tensor, n_head: int, n_head_kv: int) -> torch.Tensor:
    """HF q/k projection rows -> llama.cpp's rotary layout (convert_hf_to_gguf's `LlamaModel.permute`)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def longrope_attention_factor(config: PretrainedConfig) -> float:
    """The cos/sin scale of Phi-3's LongRoPE, as transformers computes it (`_compute_longrope_parameters`)."""
    rope = rope_parameters(config)
    if rope.get("attention_factor") is not None:
        return float(rope["attention_factor"])
    original = int(rope.get("original_max_position_embeddings") or config.original_max_position_embeddings)
    scale = config.max_position_embeddings / original
    return math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0


def _add_tensor(writer: gguf.GGUFWriter, name: str, tensor: torch.Tensor, gguf_type: GgufType) -> None:
    import gguf

    array = tensor.contiguous().numpy()
    qtype = _tensor_type(name, array, gguf_type)
    if qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor(name, array)
    elif qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, array.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def _tensor_type(name: str, data: np.ndarray, gguf_type: GgufType) -> gguf.GGMLQuantizationType:
    import gguf

    if data.ndim < 2 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32  # norms and other 1-D tensors stay f32 (as llama.cpp does)
    if gguf_type == "f16":
        return gguf.GGMLQuantizationType.F16
    if gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    if gguf_type == "q8_0":
        return gguf.GGMLQuantizationType.F16  # rows not a multiple of the 32-weight block
    return gguf.GGMLQuantizationType.F32


def require_quantizer(gguf_type: str) -> None:
    """A one-line error unless `gguf_type` can be made here: the k-quants need llama.cpp's quantizer."""
    if gguf_type not in LLAMA_QUANTIZED:
        return
    try:
        import_llama_cpp()
    except TwinbotError:
        raise TwinbotError(
            f"--type {gguf_type} is made by llama.cpp's quantizer, and llama-cpp-python is not available; "
            "pip install 'twinbot[llamacpp]' (`make setup` does), or use --type q8_0"
        ) from None


def quantize_gguf(source: Path, path: Path, gguf_type: str) -> None:
    """`source` (an f16 or f32 GGUF) quantized by llama.cpp to `gguf_type` (one of LLAMA_QUANTIZED) at `path`."""
    import ctypes

    llama_cpp = import_llama_cpp()
    quiet_llama_cpp(llama_cpp)  # its fallback warnings name tensors, not problems
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_QUANTIZED[gguf_type])
    params.nthread = torch.get_num_threads()
    if llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), ctypes.byref(params)) != 0:
        raise TwinbotError(f"llama.cpp could not quantize the model to {gguf_type}; try --type q8_0", path)
