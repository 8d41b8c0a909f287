"""The llama.cpp backend: llama-cpp-python runs the forward pass, everything else is the torch backend's.

The prompt is built with the run's Hugging Face tokenizer and chat template (generate.build_prompt_ids), each
token is sampled in Python from llama.cpp's logits by the torch backend's sampler, and the reply ends where
the torch backend's would (generate.stream_reply). So greedy replies on an f32 export are the torch
backend's tokens, and a seed draws the same reply up to the rounding of the weights.

A RUN (or adapter) folder is exported once to RUN/export/twin-<type>.gguf with `twinbot export`'s export
and check, and reused while it is newer than the adapter. One Llama serves every request, one at a time
(llama.cpp's context is not thread-safe); the next reply reuses the KV cache of the prompt's start that
the last one already computed (a chat's history).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twinbot.bot.backends.base import TokenizerSide
from twinbot.console import say
from twinbot.errors import TwinbotError, one_line
from twinbot.models.loading import EMBEDDED_MODEL

if TYPE_CHECKING:
    from twinbot.bot.generate import Forward, GenerationSettings
    from twinbot.data.records import ChatTurn

GGUF_DIR = "export"  # in the RUN folder
# f16, not q8_0: in llama.cpp f16 keeps 100% of the adapter model's top-1 tokens on the embedded twin, q8_0
# (weights and activations in 8 bits) 96.2-99.2% (docs/export.md): the twin should reply as it was trained.
DEFAULT_GGUF_TYPE = "f16"
# llama.cpp allocates the KV cache for the whole context up front: at most this many tokens.
MAX_CONTEXT = 8192
INSTALL_HINT = "pip install 'twinbot[llamacpp]' (`make setup` does), or use --backend torch"


@dataclass(frozen=True)
class GgufModel:
    """A GGUF file to run and what twinbot needs beside it: the run's tokenizer and persona."""

    path: Path
    tokenizer: Any
    system_prompt: str | None
    name: str


def runs_on_llamacpp(spec: str | Path | None) -> bool:
    """Whether `spec` is a model this backend runs: a RUN or adapter folder, a .gguf file, the embedded one."""
    from twinbot.runs import find_adapter

    if spec is None or str(spec) == EMBEDDED_MODEL:
        return True
    path = Path(str(spec)).expanduser()
    if path.suffix.lower() == ".gguf":
        return path.is_file()
    return path.is_dir() and find_adapter(path) is not None


def run_gguf(folder: Path, adapter_dir: Path, gguf_type: str) -> Path:
    """RUN/export/twin-<type>.gguf: exported and checked now unless it is newer than the adapter."""
    from twinbot.export.exporter import export

    cached = folder / GGUF_DIR / f"twin-{gguf_type}.gguf"
    adapter_time = max(path.stat().st_mtime_ns for path in adapter_dir.iterdir() if path.is_file())
    if cached.is_file() and cached.stat().st_mtime_ns >= adapter_time:
        return cached
    say(f"llama.cpp: exporting the run to {cached} ({gguf_type}, once; reused until the adapter changes)")
    cached.parent.mkdir(exist_ok=True)
    export(folder, "gguf", cached, gguf_type=gguf_type, overwrite=True)  # type: ignore[arg-type]
    return cached


def find_gguf(spec: str | Path | None, gguf_type: str) -> GgufModel:
    """The GGUF for `spec` (see runs_on_llamacpp) with its tokenizer and persona."""
    from twinbot.bot.loading import _gguf_persona, _tokenizer_from_folder
    from twinbot.models.gguf_import import tokenizer_from_gguf
    from twinbot.models.loading import embedded_gguf_path, load_tokenizer
    from twinbot.runs import adapter_persona, find_adapter, usable_base_model

    if spec is None or str(spec) == EMBEDDED_MODEL:
        return GgufModel(embedded_gguf_path(), load_tokenizer(None), None, EMBEDDED_MODEL)
    path = Path(str(spec)).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise TwinbotError("model file not found; check the path", path)
        return GgufModel(path, tokenizer_from_gguf(path), _gguf_persona(path), path.stem)
    found = find_adapter(path) if path.is_dir() else None
    if found is None:
        raise TwinbotError(
            "llama.cpp runs a RUN folder, an adapter folder or a .gguf file; use --backend torch for others",
            path,
        )
    adapter_dir, run_dir = found
    folder = run_dir if run_dir is not None else adapter_dir
    info = adapter_persona(adapter_dir, run_dir)
    base = usable_base_model(run_dir, info.base_model) if run_dir and info.base_model else info.base_model
    tokenizer = _tokenizer_from_folder(adapter_dir, base)
    gguf = run_gguf(folder, adapter_dir, gguf_type)
    return GgufModel(gguf, tokenizer, info.system_prompt, folder.resolve().name)


class LlamaCppBackend(TokenizerSide):
    backend = "llamacpp"

    def __init__(self, model: GgufModel, device: str = "cpu") -> None:
        from twinbot.bot.loading import stop_token_ids

        llama_cpp = _import_llama_cpp()
        self.model = model
        self.tokenizer = model.tokenizer
        self.name = model.name
        self.system_prompt = model.system_prompt
        self.threads = torch.get_num_threads()
        limit = getattr(model.tokenizer, "model_max_length", None)
        n_ctx = min(MAX_CONTEXT, limit) if isinstance(limit, int) and limit > 0 else MAX_CONTEXT
        self.llama = self._load(llama_cpp, n_ctx, device)
        trained = llama_cpp.llama_model_n_ctx_train(self.llama.model)
        if 0 < trained < n_ctx:  # the model's own limit is lower: reload (mmap: cheap) with a smaller cache
            self.llama.close()
            self.llama = self._load(llama_cpp, trained, device)
        self.context_window = self.llama.n_ctx()
        self.stop_token_ids = stop_token_ids(model.tokenizer) | {self.llama.token_eos()}
        self._logits_at = llama_cpp.llama_get_logits_ith
        self._lock = threading.Lock()

    def _load(self, llama_cpp: Any, n_ctx: int, device: str) -> Any:
        try:
            return llama_cpp.Llama(
                model_path=str(self.model.path),
                n_ctx=n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_gpu_layers=0 if device == "cpu" else -1,  # a CPU-only build ignores it
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise TwinbotError(f"llama.cpp cannot load this GGUF: {one_line(exc)}", self.model.path) from exc

    def describe(self) -> str:
        persona = "persona system prompt" if self.system_prompt else "no system prompt"
        return (
            f"llamacpp {self.model.path}; {self.threads} threads; context {self.context_window} tokens; "
            f"{persona}"
        )

    def stream(
        self,
        messages: Sequence[ChatTurn],
        settings: GenerationSettings,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        from twinbot.bot.generate import stream_reply

        with self._lock:
            yield from stream_reply(self, messages, settings, stop, forward=self._forward())

    def _forward(self) -> Forward:
        """One reply's forward pass on the shared Llama (the caller holds the lock)."""
        import numpy as np

        llama, vocab = self.llama, self.llama.n_vocab()
        first = True

        def forward(new_ids: list[int]) -> torch.Tensor:
            nonlocal first
            if first:  # keep what the last reply computed for the same prompt start; evaluate the rest
                first = False
                seen = llama.input_ids[: llama.n_tokens].tolist()
                kept = 0
                while kept < min(len(seen), len(new_ids) - 1) and seen[kept] == new_ids[kept]:
                    kept += 1
                llama.n_tokens = kept
                new_ids = new_ids[kept:]
            llama.eval(new_ids)
            logits = np.ctypeslib.as_array(self._logits_at(llama.ctx, -1), shape=(vocab,))
            return torch.from_numpy(logits.copy())[None]

        return forward


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise TwinbotError(f"llama-cpp-python is not installed ({one_line(exc)}); {INSTALL_HINT}") from exc
    except OSError as exc:  # the package is there but its compiled library does not load
        raise TwinbotError(f"llama-cpp-python does not load ({one_line(exc)}); {INSTALL_HINT}") from exc
    return llama_cpp


def load_llamacpp(
    spec: str | Path | None, device: str = "auto", gguf_type: str | None = None
) -> LlamaCppBackend:
    """`spec` on llama.cpp (on the CPU unless --device names a GPU); a RUN is exported on first use."""
    _import_llama_cpp()  # fails before a slow export
    model = find_gguf(spec, gguf_type or DEFAULT_GGUF_TYPE)
    return LlamaCppBackend(model, device="cpu" if device in ("auto", "cpu") else device)
