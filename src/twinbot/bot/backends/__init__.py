"""What generates the persona's replies for chat, serve, discord and eval: one Backend per library.

- torch: transformers + PEFT with twinbot's own token loop; every model, on CPU, CUDA or MPS.
- llamacpp: llama.cpp (llama-cpp-python) on the run's GGUF export; several times faster on CPUs, with
  concurrent replies decoded together (continuous batching in one llama.cpp context).
- vllm: vLLM with the run's LoRA adapter on CUDA; continuous batching for many users.
- auto: vllm on CUDA where it is installed, llamacpp elsewhere where llama-cpp-python is, else torch.

Every backend builds the prompt with the run's tokenizer and chat template (generate.build_prompt_ids) and
ends replies at the same places (generate.ReplyText); torch and llamacpp also share the sampler and the
scheduling of concurrent replies (batching.ContinuousBatcher), so greedy and seeded replies agree up to the
precision of the weights, alone or decoded with others.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from twinbot.bot.backends.base import Backend, TokenizerSide
from twinbot.console import say
from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    import threading

    from twinbot.bot.engine import ReplyEngine
    from twinbot.bot.generate import GenerationSettings
    from twinbot.bot.loading import LoadedModel
    from twinbot.data.records import ChatTurn

BackendName = Literal["auto", "torch", "llamacpp", "vllm"]
BACKENDS: tuple[BackendName, ...] = ("auto", "torch", "llamacpp", "vllm")


class TorchBackend(TokenizerSide):
    """transformers + PEFT (generate.py's loop); the server batches its requests (engine.ModelEngine)."""

    backend = "torch"

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.lm.name

    @property
    def system_prompt(self) -> str | None:  # type: ignore[override]
        return self.lm.system_prompt

    @property
    def context_window(self) -> int:  # type: ignore[override]
        return self.lm.context_window

    @property
    def tokenizer(self) -> Any:  # type: ignore[override]
        return self.lm.tokenizer

    @property
    def stop_token_ids(self) -> frozenset[int]:  # type: ignore[override]
        return self.lm.stop_token_ids

    def describe(self) -> str:
        return self.lm.describe()

    def stream(
        self,
        messages: Sequence[ChatTurn],
        settings: GenerationSettings,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        from twinbot.bot.generate import stream_reply

        return stream_reply(self.lm, messages, settings, stop)

    def generate_many(
        self, conversations: Sequence[Sequence[ChatTurn]], settings: Sequence[GenerationSettings]
    ) -> list[str]:
        from twinbot.bot.generate import generate_replies

        return generate_replies(self.lm, conversations, settings)

    def server_engine(self) -> ReplyEngine:
        from twinbot.bot.engine import ModelEngine

        return ModelEngine(self.lm)


# --- choosing and loading -----------------------------------------------------------------------------------


def importable(module: str) -> bool:
    """Whether `module` is installed (without importing it: vllm and llama_cpp take seconds to import)."""
    return importlib.util.find_spec(module) is not None


def choose(requested: str, spec: str | Path | None, device: str) -> tuple[str, str]:
    """(backend, why) for `--backend requested`: `auto` picks vllm on CUDA where vllm is installed,
    llamacpp on other devices where llama-cpp-python is installed and the model is one it can run (a RUN,
    an adapter, a .gguf file, the embedded default), else torch."""
    from twinbot.bot.backends.llamacpp import runs_on_llamacpp
    from twinbot.models.devices import pick_device

    if requested not in BACKENDS:
        raise TwinbotError(f"unknown --backend '{requested}'; use one of: {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested, "--backend"
    if pick_device(device, setting="--device") == "cuda":
        if importable("vllm"):
            return "vllm", "auto: CUDA and vllm is installed"
        return "torch", "auto: CUDA without vllm"
    if not importable("llama_cpp"):
        return "torch", "auto: llama-cpp-python is not installed"
    if not runs_on_llamacpp(spec):
        return "torch", "auto: llama.cpp runs RUN folders, adapters and .gguf files only"
    return "llamacpp", "auto: llama-cpp-python is installed"


def check_gguf_type(gguf_type: str, chosen: str, why: str, spec: str | Path | None) -> None:
    """--gguf-type names the type of a RUN's (or adapter's) llama.cpp export, so it needs that backend
    and such a folder: a .gguf file and the embedded model run as they are."""
    from twinbot.export.gguf import GGUF_TYPES

    if gguf_type not in GGUF_TYPES:
        raise TwinbotError(f"unknown --gguf-type '{gguf_type}'; use one of: {', '.join(GGUF_TYPES)}")
    if chosen != "llamacpp":
        raise TwinbotError(
            f"--gguf-type is for the llamacpp backend, and this runs on {chosen} ({why}); "
            "pass --backend llamacpp, or drop --gguf-type"
        )
    path = Path(str(spec)).expanduser() if spec is not None else None
    if path is None or not path.is_dir():
        raise TwinbotError(
            "--gguf-type picks the type of a RUN folder's llama.cpp export; a .gguf file and the embedded "
            "model run as they are: drop --gguf-type (or `twinbot export --type` a run)"
        )


def load_backend(
    requested: str,
    spec: str | Path | None,
    device: str = "auto",
    gguf_type: str | None = None,
    loaded: LoadedModel | None = None,
) -> Backend:
    """The model `spec` (what load_for_inference accepts) on the chosen backend; says which, once.
    Under `auto`, a model llama.cpp cannot run (its export fails) falls back to torch, saying why. `loaded`:
    `spec` already loaded for torch (eval), used when torch is chosen. `gguf_type` (--gguf-type): the type
    of the RUN's llama.cpp export; with it llama.cpp must run the model, so there is no fallback."""
    chosen, why = choose(requested, spec, device)
    if gguf_type is not None:
        check_gguf_type(gguf_type, chosen, why, spec)
    if chosen == "llamacpp":
        from twinbot.bot.backends.llamacpp import load_llamacpp

        try:
            backend: Backend = load_llamacpp(spec, device=device, gguf_type=gguf_type)
        except TwinbotError as exc:
            if requested != "auto" or gguf_type is not None:
                raise
            chosen, why = "torch", f"auto: llama.cpp cannot run it ({exc.message})"
        else:
            say(f"backend: llamacpp ({why})")
            return backend
    if chosen == "vllm":
        from twinbot.bot.backends.vllm import load_vllm

        say(f"backend: vllm ({why})")
        return load_vllm(spec, device=device)
    from twinbot.bot import loading

    say(f"backend: torch ({why})")
    return TorchBackend(loaded or loading.load_for_inference(spec, device=device))
