"""Loading a trained persona for generation (used by chat, discord, serve, eval).

`load_for_inference` accepts what the other stages produce: a RUN folder (`twinbot train`), an adapter
folder, a merged model folder or a `.gguf` file (`twinbot export`), or a base model spec for comparisons.
The LoadedModel it returns knows the persona's system prompt, its context window and every token that ends
a reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.models.devices import pick_device, pick_dtype
from twinbot.models.gguf_import import gguf_reading, gguf_string_field
from twinbot.models.loading import EMBEDDED_MODEL, load_model, load_tokenizer
from twinbot.models.tokenizers import finish_tokenizer
from twinbot.runs import (
    CHECKPOINTS_DIR,
    GGUF_SYSTEM_PROMPT_KEY,
    PERSONA_FILE,
    RUN_MARKER,
    PersonaInfo,
    adapter_persona,
    find_adapter,
    read_persona_info,
    usable_base_model,
)

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# What to do with a .gguf file transformers cannot read as llama.cpp runs it (`gguf_import.gguf_reading`).
TORCH_GGUF_HINT = (
    "chat with --backend llamacpp or with the merged folder (`twinbot export RUN DIR --to merged`)"
)

ModelKind = Literal["run", "adapter", "merged", "gguf", "base"]

# Turn markers of common chat templates: as tokens they end a reply; a model that spells one out with
# ordinary tokens has started another turn too (see generate.ReplyText).
TURN_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "</s>",
)


@dataclass
class LoadedModel:
    model: PreTrainedModel | PeftModel
    tokenizer: PreTrainedTokenizerBase
    kind: ModelKind
    source: str  # what was loaded
    system_prompt: str | None  # the persona's system prompt used in training, when known
    context_window: int  # max tokens (prompt + reply)
    name: str  # a display name for /v1/models etc.
    base_model: str | None = None  # the base model under an adapter, when there is one
    device: str = "cpu"
    dtype: str = "float32"
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)

    def describe(self) -> str:
        """One line: what is loaded, on what, in which precision (never any message text)."""
        what = f"{self.kind} {self.source}"
        if self.base_model is not None and self.kind in ("run", "adapter"):
            what += f" (adapter on {self.base_model})"
        persona = "persona system prompt" if self.system_prompt else "no system prompt"
        return f"{what}; {self.dtype} on {self.device}; context {self.context_window} tokens; {persona}"


def _context_window(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    limits = [int(positions)] if isinstance(positions, int) and positions > 0 else []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 10_000_000:
        limits.append(tokenizer_limit)
    return min(limits) if limits else 2048


def stop_token_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """Every token that ends a reply: eos ids and every special token (turn markers, padding, ...)."""
    ids: set[int] = set()

    def add(value: Any) -> None:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple | set):
            ids.update(v for v in value if isinstance(v, int))

    add(tokenizer.eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        add(generation_config.eos_token_id)
    add(list(getattr(tokenizer, "all_special_ids", []) or []))
    unk = tokenizer.unk_token_id
    for marker in TURN_MARKERS:
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != unk and token_id >= 0:
            ids.add(token_id)
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    for token_id, token in added.items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return frozenset(ids)


def _finish(
    model: Any,
    tokenizer: Any,
    device: torch.device,
    dtype: torch.dtype,
    *,
    kind: ModelKind,
    source: str,
    name: str,
    system_prompt: str | None = None,
    base_model: str | None = None,
) -> LoadedModel:
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        source=source,
        system_prompt=system_prompt,
        context_window=_context_window(model, tokenizer),
        name=name,
        base_model=base_model,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        stop_token_ids=stop_token_ids(tokenizer, model),
    )


def _load_whole(
    spec: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    kind: ModelKind,
    name: str,
    persona: PersonaInfo | None = None,
) -> LoadedModel:
    """A model with its own tokenizer: a base model, an exported merged folder or .gguf file."""
    tokenizer = load_tokenizer(spec)
    model = load_model(spec, dtype=dtype, device=device)
    return _finish(
        model,
        tokenizer,
        device,
        dtype,
        kind=kind,
        source=spec,
        name=name,
        system_prompt=persona.system_prompt if persona else None,
        base_model=persona.base_model if persona else None,
    )


def _tokenizer_from_folder(folder: Path, fallback_spec: str | None) -> Any:
    from transformers import AutoTokenizer

    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        try:
            return finish_tokenizer(AutoTokenizer.from_pretrained(str(folder)))
        except Exception:
            pass  # fall back to the base model's tokenizer
    return load_tokenizer(fallback_spec)


def _with_adapter(base_model: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False)
    except Exception as exc:
        raise TwinbotError(
            f"cannot load the adapter: {one_line(exc)}; was it trained on this base model?",
            adapter_dir,
        ) from exc


def _load_adapter(
    adapter_dir: Path, run_dir: Path | None, device: torch.device, dtype: torch.dtype
) -> LoadedModel:
    info = adapter_persona(adapter_dir, run_dir)
    if info.base_model is None:
        raise TwinbotError(
            "cannot tell which base model this adapter belongs to (no summary.json, no "
            "base_model_name_or_path in adapter_config.json); pass the RUN folder made by `twinbot train`",
            adapter_dir,
        )
    base_spec = usable_base_model(run_dir, info.base_model) if run_dir is not None else info.base_model
    tokenizer = _tokenizer_from_folder(adapter_dir, base_spec)
    base = load_model(base_spec, dtype=dtype, device=device)
    model = _with_adapter(base, adapter_dir)
    where = run_dir if run_dir is not None else adapter_dir
    return _finish(
        model,
        tokenizer,
        device,
        dtype,
        kind="run" if run_dir is not None else "adapter",
        source=str(where),
        name=where.resolve().name,
        system_prompt=info.system_prompt,
        base_model=info.base_model,
    )


def _load_folder(path: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """A RUN folder, an adapter folder or a merged model folder."""
    adapter = find_adapter(path)
    if adapter is not None:
        return _load_adapter(*adapter, device, dtype)
    if (path / "config.json").is_file():
        persona = read_persona_info(path / PERSONA_FILE)
        return _load_whole(str(path), device, dtype, kind="merged", name=path.resolve().name, persona=persona)
    if (path / CHECKPOINTS_DIR).is_dir() or (path / RUN_MARKER).is_file():
        raise TwinbotError(
            "this run has no adapter yet (training unfinished?); finish it with `twinbot train --resume`",
            path,
        )
    raise TwinbotError(
        "not a model folder: expected a RUN folder (`twinbot train`), an adapter folder or an exported "
        "merged model (config.json)",
        path,
    )


def _gguf_persona(gguf_path: Path) -> str | None:
    """The system prompt of an exported .gguf: its persona sidecar's, the folder's, else its metadata's."""
    sidecars = (gguf_path.with_name(gguf_path.name + "." + PERSONA_FILE), gguf_path.parent / PERSONA_FILE)
    for sidecar in sidecars:
        info = read_persona_info(sidecar)
        if info is not None and info.system_prompt is not None:
            return info.system_prompt
    return gguf_string_field(gguf_path, GGUF_SYSTEM_PROMPT_KEY) or None


def _looks_like_a_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "\\", "~"))
        or bool(re.match(r"^[A-Za-z]:[\\/]", text))
        or text.count("/") > 1
    )


def load_for_inference(
    spec: str | Path | None, device: str = "auto", dtype: torch.dtype | None = None
) -> LoadedModel:
    """Load a RUN folder, adapter folder, merged folder, .gguf file or base model spec for generation.

    Bad spec -> TwinbotError (one line).
    """
    target = torch.device(pick_device(device, setting="--device"))
    dtype = dtype or pick_dtype(target)
    if spec is None or str(spec) == EMBEDDED_MODEL:
        return _load_whole(EMBEDDED_MODEL, target, dtype, kind="base", name=EMBEDDED_MODEL)
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_folder(path, target, dtype)
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise TwinbotError("model file not found; check the path", path)
        problem = gguf_reading(path).problem  # transformers would build another model than the file's
        if problem is not None:
            raise TwinbotError(f"{problem}; {TORCH_GGUF_HINT}", path)
        persona = PersonaInfo(system_prompt=_gguf_persona(path), base_model=None)
        return _load_whole(str(path), target, dtype, kind="gguf", name=path.stem, persona=persona)
    if path.exists():
        raise TwinbotError("not a model: pass a RUN folder, a model folder or a .gguf file", path)
    if _looks_like_a_path(text):
        raise TwinbotError("no such file or folder; check the path", path)
    return _load_whole(text, target, dtype, kind="base", name=text)
