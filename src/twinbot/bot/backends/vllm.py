"""The vLLM backend (CUDA): the base model with the run's LoRA adapter, continuous batching across requests.

Prompts are twinbot's (generate.build_prompt_ids) and replies end where the torch backend's do
(generate.ReplyText), but vLLM samples with its own sampler: a seed reproduces vLLM's reply, not the torch
backend's. vLLM's engine runs on an event loop in a thread of its own; `stream` hands its tokens over.
Untested here (no CUDA): written against vLLM's documented AsyncLLMEngine / LoRARequest API.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbot.bot.backends.base import TokenizerSide
from twinbot.errors import TwinbotError, one_line

if TYPE_CHECKING:
    from twinbot.bot.generate import GenerationSettings
    from twinbot.data.records import ChatTurn

_END = object()


class VllmBackend(TokenizerSide):
    backend = "vllm"

    def __init__(self, spec: str | Path) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        from twinbot.bot.loading import _tokenizer_from_folder, stop_token_ids
        from twinbot.models.loading import resolve_model
        from twinbot.runs import adapter_persona, find_adapter, read_json, usable_base_model

        path = Path(str(spec)).expanduser()
        found = find_adapter(path) if path.is_dir() else None
        if found is None:
            raise TwinbotError("vllm runs a RUN or adapter folder; use --backend torch for others", path)
        adapter_dir, run_dir = found
        info = adapter_persona(adapter_dir, run_dir)
        base = usable_base_model(run_dir, info.base_model) if run_dir and info.base_model else info.base_model
        self.tokenizer = _tokenizer_from_folder(adapter_dir, base)
        self.stop_token_ids = stop_token_ids(self.tokenizer)
        self.system_prompt = info.system_prompt
        where = run_dir if run_dir is not None else adapter_dir
        self.name = where.resolve().name
        self.base = resolve_model(base)
        rank = int((read_json(adapter_dir / "adapter_config.json") or {}).get("r") or 64)
        self.lora = LoRARequest("twin", 1, str(adapter_dir))
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="twinbot-vllm", daemon=True).start()
        args = AsyncEngineArgs(
            model=self.base, tokenizer=str(adapter_dir), enable_lora=True, max_lora_rank=rank
        )
        self.engine = self._run(_create(AsyncLLMEngine, args))
        self.context_window = int(self.engine.model_config.max_model_len)
        self._ids = itertools.count()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def describe(self) -> str:
        persona = "persona system prompt" if self.system_prompt else "no system prompt"
        return f"vllm {self.base} + adapter {self.lora.lora_path}; context {self.context_window} tokens; {persona}"

    def stream(
        self,
        messages: Sequence[ChatTurn],
        settings: GenerationSettings,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        from vllm import SamplingParams

        from twinbot.bot.generate import (
            ReplyText,
            _check_settings,
            _reply_pieces,
            build_prompt_ids,
            speakers_in,
        )

        _check_settings(settings)
        prompt = build_prompt_ids(self, messages, settings.max_new_tokens)
        params = SamplingParams(
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            repetition_penalty=settings.repetition_penalty,
            seed=settings.seed,
            stop_token_ids=sorted(self.stop_token_ids),
        )
        tokens: queue.Queue[object] = queue.Queue()
        request_id = f"twinbot-{next(self._ids)}"
        done = asyncio.run_coroutine_threadsafe(
            self._generate(prompt, params, request_id, tokens), self._loop
        )

        def new_tokens() -> Iterator[int]:
            try:
                while (item := tokens.get()) is not _END:
                    if isinstance(item, BaseException):
                        raise item
                    if stop is not None and stop.is_set():
                        return
                    yield from item  # type: ignore[misc]
            finally:
                if not done.done():
                    asyncio.run_coroutine_threadsafe(self.engine.abort(request_id), self._loop)

        text = ReplyText([*speakers_in(messages), *settings.other_speakers])
        ended = self.stop_token_ids.__contains__
        yield from _reply_pieces(self, text, itertools.takewhile(lambda t: not ended(t), new_tokens()))

    async def _generate(
        self, prompt: list[int], params: Any, request_id: str, tokens: queue.Queue[object]
    ) -> None:
        sent = 0
        try:
            async for output in self.engine.generate(
                {"prompt_token_ids": prompt}, params, request_id, lora_request=self.lora
            ):
                ids = list(output.outputs[0].token_ids)  # all so far
                tokens.put(ids[sent:])
                sent = len(ids)
        except Exception as exc:
            tokens.put(exc)
        tokens.put(_END)


async def _create(engine_class: Any, args: Any) -> Any:
    return engine_class.from_engine_args(args)


def load_vllm(spec: str | Path | None, device: str = "auto") -> VllmBackend:
    """`spec` (a RUN or adapter folder) on vLLM: CUDA and the vllm package are needed."""
    import torch

    if not torch.cuda.is_available():
        raise TwinbotError("--backend vllm needs a CUDA GPU; use --backend llamacpp or torch on this machine")
    if device not in ("auto",) and not device.startswith("cuda"):
        raise TwinbotError(f"--backend vllm runs on CUDA, not --device {device}; drop --device or use cuda")
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise TwinbotError(
            f"vllm is not installed ({one_line(exc)}); pip install vllm on a CUDA machine, or use --backend torch"
        ) from exc
    if spec is None:
        raise TwinbotError("--backend vllm needs a RUN folder; use --backend torch for the embedded model")
    return VllmBackend(spec)
