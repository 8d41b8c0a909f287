"""A merged llama-family model as one GGUF file, written straight from Python with the `gguf` package (no
llama.cpp build): model metadata, the byte-level BPE tokenizer and chat template, the persona's system
prompt (GGUF_SYSTEM_PROMPT_KEY, read back by `twinbot chat/serve`), and the tensors in f32, f16 or q8_0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from twinbot.errors import TwinbotError
from twinbot.runs import GGUF_SYSTEM_PROMPT_KEY

if TYPE_CHECKING:
    import gguf
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

GgufType = Literal["f32", "f16", "q8_0"]
GGUF_TYPES: tuple[GgufType, ...] = ("f32", "f16", "q8_0")
SUPPORTED_GGUF_ARCHITECTURES = ("llama",)  # HF model_type values the GGUF writer handles
_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # gguf.LlamaFileType ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0
_CONVERT_HINT = "use `--to merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"


# --- what the writer supports -------------------------------------------------------------------------------


def check_gguf_support(config: PretrainedConfig) -> None:
    """Raise a TwinbotError naming the architecture when the GGUF writer cannot convert this model."""
    model_type = getattr(config, "model_type", "unknown")
    supported = ", ".join(SUPPORTED_GGUF_ARCHITECTURES)
    if model_type not in SUPPORTED_GGUF_ARCHITECTURES:
        raise TwinbotError(
            f"GGUF export does not support the '{model_type}' architecture yet (supported: {supported}); "
            f"{_CONVERT_HINT}"
        )
    rope_type = _rope_parameters(config).get("rope_type", "default")
    problems = []
    if rope_type not in (None, "default"):
        problems.append(f"rope scaling '{rope_type}'")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("bias terms in attention/MLP")
    if _head_dim(config) * config.num_attention_heads != config.hidden_size:
        problems.append("a head size that is not hidden_size / heads")
    if problems:
        raise TwinbotError(
            f"GGUF export supports plain {supported} models; this one has {', '.join(problems)}; "
            f"{_CONVERT_HINT}"
        )


def _rope_parameters(config: PretrainedConfig) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(params) if isinstance(params, dict) else {}


def _head_dim(config: PretrainedConfig) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


# --- the file -----------------------------------------------------------------------------------------------


def write_gguf(
    merged: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    gguf_type: GgufType,
    name: str = "twinbot",
    system_prompt: str | None = None,
) -> None:
    """Write `merged` (a llama-family transformers model) as a GGUF file at `path` (not atomic by itself)."""
    import gguf

    check_gguf_support(merged.config)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _add_model_metadata(writer, merged.config, gguf_type, name)
        _add_tokenizer(writer, tokenizer, int(merged.config.vocab_size))
        if system_prompt:
            writer.add_string(GGUF_SYSTEM_PROMPT_KEY, system_prompt)
        _add_tensors(writer, merged, gguf_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_model_metadata(
    writer: gguf.GGUFWriter, config: PretrainedConfig, gguf_type: GgufType, name: str
) -> None:
    import gguf

    rope = _rope_parameters(config)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_file_type(_FILE_TYPES[gguf_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_tensors(writer: gguf.GGUFWriter, merged: PreTrainedModel, gguf_type: GgufType) -> None:
    """Every weight under its llama.cpp name, q/k rows in llama.cpp's rotary layout, stored as `gguf_type`."""
    import gguf

    config = merged.config
    n_head, n_head_kv = config.num_attention_heads, config.num_key_value_heads
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in merged.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TwinbotError(f"GGUF export: no GGUF name for tensor {hf_name}; use `--to merged` instead")
        data = tensor.detach().to(torch.float32)
        if hf_name.endswith("q_proj.weight"):
            data = llama_permute(data, n_head, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = llama_permute(data, n_head, n_head_kv)
        array = data.contiguous().numpy()
        qtype = _tensor_type(gguf_name, array, gguf_type)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, array)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(gguf_name, array.astype(np.float16))
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def llama_permute(weights: torch.Tensor, n_head: int, n_head_kv: int) -> torch.Tensor:
    """HF q/k projection rows -> llama.cpp's rotary layout (convert_hf_to_gguf's `LlamaModel.permute`)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


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


# --- tokenizer ----------------------------------------------------------------------------------------------


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    tokens, types = _token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(gguf_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(tokenizer))
    special = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    for kind, token_id in special.items():
        if isinstance(token_id, int) and 0 <= token_id < vocab_size:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    encoded = tokenizer("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(bool(encoded) and encoded[0] == tokenizer.bos_token_id)
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def gguf_pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """The `tokenizer.ggml.pre` name llama.cpp needs to split text like the HF tokenizer does."""
    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = state.get("pretokenizers", [state]) if state.get("type") == "Sequence" else [state]
    kinds = [part.get("type") for part in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"  # SmolLM / StarCoder: digits one by one, then GPT-2 byte-level
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def _token_table(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for token_id in range(vocab_size):
        if token_id not in by_id:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        elif token_id in added:
            tokens.append(by_id[token_id])
            types.append(gguf.TokenType.CONTROL if added[token_id].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[token_id])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _merges(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    model_state = json.loads(tokenizer.backend_tokenizer.to_str()).get("model") or {}
    if model_state.get("type") != "BPE":
        raise TwinbotError(
            f"GGUF export supports byte-level BPE tokenizers; this one is {model_state.get('type')}; "
            f"{_CONVERT_HINT}"
        )
    merges = model_state.get("merges") or []
    # tokenizers >= 0.20 stores pairs; GGUF stores "left right" with spaces inside a part as U+0120+...
    return [
        " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
        if isinstance(pair, list)
        else pair
        for pair in merges
    ]
