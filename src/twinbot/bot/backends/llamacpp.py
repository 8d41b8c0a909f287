"""The llama.cpp backend: llama-cpp-python runs the forward pass, everything else is the torch backend's.

The prompt is built with the run's Hugging Face tokenizer and chat template (generate.build_prompt_ids), each
token is sampled in Python from llama.cpp's logits by the torch backend's sampler (generate._RowSampler),
and the reply ends where the torch backend's would (generate._reply_pieces). So greedy replies on an f32
export are the torch backend's tokens, and a seed draws the same reply up to the rounding of the weights.

A RUN (or adapter) folder is exported once to RUN/export/twin-<type>.gguf with `twinbot export`'s export
and check, and reused while it is newer than the adapter.

Replies are decoded with continuous batching (LlamaDecoder on batching.ContinuousBatcher, the torch
server's scheduling): one decode thread owns the llama.cpp context (which is not thread-safe), and every
reply in progress, from chat, eval or concurrent server requests, is a sequence of that context. One
llama_decode a step gives each running reply its next token's logits while new replies' prompts are
evaluated in the same call, so N concurrent replies share each pass over the weights. The KV cache is one
pool of context-window cells (kv_unified): a reply starts when its prompt and max_new_tokens fit beside the
running ones. The cache of the last reply is kept until the next one ends, so the next turn of a chat
evaluates only the part of its prompt that is new.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twinbot.bot.backends.base import TokenizerSide
from twinbot.bot.batching import ContinuousBatcher, DecodingRow
from twinbot.bot.generate import BATCH_ROWS
from twinbot.console import say
from twinbot.errors import TwinbotError
from twinbot.models.llama_context import (
    LlamaContext,
    amx_repack_avoided,
    import_llama_cpp,
    torch_work_apart,
)
from twinbot.models.loading import EMBEDDED_MODEL

if TYPE_CHECKING:
    from twinbot.bot.generate import GenerationSettings, PromptModel
    from twinbot.data.records import ChatTurn

GGUF_DIR = "export"  # in the RUN folder
# q8_0, llama.cpp's usual choice: one stream of the 135M twin decodes 1.5x faster than in f16 on the quiet
# 2-core machine (79.2 vs 52.6 tok/s; serve 79.1 vs 46.7: BENCHMARKS.md, 2026-12-03 21:12 UTC), which is what
# meets issue 19's 73.5 tok/s; Python's share of a token is ~1 ms, so no overhead cut gets f16 there. The
# price: q8_0 (weights and activations in 8 bits) keeps 96.2-99.2% of the adapter model's greedy top-1
# tokens (the export's llama.cpp check enforces >= 93%; docs/export.md), f16 100%. For the trained model's
# exact greedy tokens: `twinbot export RUN --to gguf twin-f16.gguf --type f16` and chat/serve that file.
DEFAULT_GGUF_TYPE = "q8_0"
# llama.cpp allocates the KV cache for the whole context up front: at most this many tokens.
MAX_CONTEXT = 8192
# Tokens in one llama_decode at most: every decoding row's next token, then prompt tokens of new rows.
DECODE_BATCH = 512
# torch.set_num_threads sets the calling thread's count only where torch runs its ops on OpenMP
_THREAD_LOCAL_TORCH_THREADS = "parallel backend: OpenMP" in torch.__config__.parallel_info()


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
    torch_work_apart(lambda: export(folder, "gguf", cached, gguf_type=gguf_type, overwrite=True))  # type: ignore[arg-type]
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


@dataclass(eq=False)
class _Slot:
    """A running row's place in the context: its sequence id and the tokens in its KV cache."""

    sequence: int
    cached: list[int]
    cells: int  # KV cells reserved for it: its prompt and max_new_tokens


class LlamaDecoder(ContinuousBatcher):
    """Continuous batching on one llama.cpp context: each running row is a sequence of the context, and one
    llama_decode a step feeds every decoding row its last token and the admitted rows (part of) their
    prompts, at most `n_batch` tokens (a long prompt takes several steps; the others keep decoding).

    A row is admitted when a sequence is free and the KV cells it can need (prompt and max_new_tokens) fit
    beside the other rows'. When a row ends, its cache is kept (sequence `max_rows`) until the next one ends:
    a request whose prompt starts the same (the next turn of a chat) evaluates only the rest."""

    def __init__(self, model: PromptModel, context: LlamaContext, max_rows: int = BATCH_ROWS) -> None:
        super().__init__(model, max_rows)
        self.context = context
        self._slots: dict[DecodingRow, _Slot] = {}  # running rows, in admission order
        self._kept: list[int] = []  # the tokens in the cache of sequence `max_rows`, the last row's
        self.reuse_prompts = True  # False: every prompt is evaluated whole (benchmarks of the first token)

    def _run(self) -> None:
        if _THREAD_LOCAL_TORCH_THREADS:
            # The sampler's ops on a vocabulary of logits between two decodes: on one thread, they do not wait
            # for threads that llama.cpp's (still spinning) hold the cores from (under load: ~10x slower).
            torch.set_num_threads(1)
        super()._run()

    def _rows(self) -> list[DecodingRow]:
        return list(self._slots)

    def _reset(self) -> None:
        self.context.clear()
        self._slots = {}
        self._kept = []

    def _admit(self, arrivals: deque[DecodingRow]) -> list[DecodingRow]:
        admitted: list[DecodingRow] = []
        reserved = sum(slot.cells for slot in self._slots.values())
        while arrivals and len(self._slots) + len(admitted) < self.max_rows:
            cells = len(arrivals[0].prompt) + arrivals[0].settings.max_new_tokens
            if cells > self.context.n_ctx:  # it would wait forever (build_prompt_ids' prompts always fit)
                too_long = arrivals.popleft()
                too_long.end(
                    TwinbotError(
                        f"a {len(too_long.prompt)}-token prompt and {too_long.settings.max_new_tokens} new "
                        f"tokens do not fit in the {self.context.n_ctx}-token context; shorten the prompt"
                    )
                )
                continue
            if reserved + cells + len(self._kept) > self.context.n_ctx:
                if not self._kept or reserved + cells > self.context.n_ctx:
                    break  # it waits for rows to end
                self.context.forget(self.max_rows)  # the kept cache makes room
                self._kept = []
            row = arrivals.popleft()
            self._slots[row] = self._start(row, cells)
            reserved += cells
            admitted.append(row)
        return admitted

    def _start(self, row: DecodingRow, cells: int) -> _Slot:
        """The row's slot: a free sequence, holding the kept cache's part that starts its prompt."""
        taken = {slot.sequence for slot in self._slots.values()}
        sequence = next(number for number in range(self.max_rows) if number not in taken)
        self.context.forget(sequence)
        reused = 0
        limit = min(len(self._kept), len(row.prompt) - 1)  # at least one token to evaluate, for its logits
        while reused < limit and self._kept[reused] == row.prompt[reused]:
            reused += 1
        if reused:
            self.context.share(self.max_rows, sequence, reused)
        return _Slot(sequence, row.prompt[:reused], cells)

    def _step(self, admitted: list[DecodingRow]) -> None:
        """Decode one token for every running row (and prompt tokens of the admitted ones)."""
        for row in [row for row in self._slots if not row.wanted()]:
            row.end()  # a reader still waiting (time limit, client gone) gets its end
            self._leave(row)
        fed: list[tuple[_Slot, list[int]]] = []
        sampled: list[tuple[DecodingRow, int]] = []  # rows whose logits this decode gives, and where
        for row, slot in self._slots.items():
            if len(slot.cached) >= len(row.prompt):  # decoding: feed its last token
                token = row.generated[-1]
                sampled.append((row, self.context.add(token, len(slot.cached), slot.sequence, True)))
                fed.append((slot, [token]))
        room = self.context.n_batch - len(fed)
        for row, slot in self._slots.items():
            if room <= 0:
                break
            start = len(slot.cached)
            chunk = row.prompt[start : start + room]
            for offset, token in enumerate(chunk):
                last = start + offset == len(row.prompt) - 1
                index = self.context.add(token, start + offset, slot.sequence, last)
                if last:
                    sampled.append((row, index))
            if chunk:
                fed.append((slot, chunk))
                room -= len(chunk)
        if not fed:
            return
        self.context.decode()
        for slot, tokens in fed:
            slot.cached.extend(tokens)
        with torch.inference_mode():
            for row, index in sampled:
                if not self._take(row, self._scores(row, index)):
                    self._leave(row)

    def _scores(self, row: DecodingRow, index: int) -> torch.Tensor:
        """The row's next-token logits: the output at `index` of the last decode."""
        return self.context.logits(index)

    def _leave(self, row: DecodingRow) -> None:
        """The row has ended: its sequence is free, its cache the kept one."""
        slot = self._slots.pop(row)
        if slot.cached and self.reuse_prompts:
            self.context.forget(self.max_rows)
            self.context.share(slot.sequence, self.max_rows, len(slot.cached))
            self._kept = slot.cached
        self.context.forget(slot.sequence)


class LlamaCppBackend(TokenizerSide):
    backend = "llamacpp"

    def __init__(self, model: GgufModel, device: str = "cpu", max_rows: int = BATCH_ROWS) -> None:
        from twinbot.bot.loading import stop_token_ids

        self.model = model
        self.tokenizer = model.tokenizer
        self.name = model.name
        self.system_prompt = model.system_prompt
        self.threads = torch.get_num_threads()
        limit = getattr(model.tokenizer, "model_max_length", None)
        n_ctx = min(MAX_CONTEXT, limit) if isinstance(limit, int) and limit > 0 else MAX_CONTEXT
        # one sequence per row, and one for the kept cache of the last reply
        self.context = LlamaContext(
            model.path, n_ctx, max_rows + 1, self.threads, device, n_batch=DECODE_BATCH
        )
        self.context_window = self.context.n_ctx
        self.stop_token_ids = stop_token_ids(model.tokenizer) | {self.context.eos}
        self.decoder = LlamaDecoder(self, self.context, max_rows)

    def describe(self) -> str:
        persona = "persona system prompt" if self.system_prompt else "no system prompt"
        amx = "; AMX weight repack off (it crashes: llama.cpp #20824)" if amx_repack_avoided() else ""
        return (
            f"llamacpp {self.model.path}; {self.threads} threads; context {self.context_window} tokens "
            f"shared by up to {self.decoder.max_rows} replies at once; {persona}{amx}"
        )

    def stream(
        self,
        messages: Sequence[ChatTurn],
        settings: GenerationSettings,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        return self.decoder.stream(messages, settings, stop)

    def generate_many(
        self, conversations: Sequence[Sequence[ChatTurn]], settings: Sequence[GenerationSettings]
    ) -> list[str]:
        """Each conversation's reply, up to `max_rows` of them decoded together."""
        if len(conversations) != len(settings):
            raise ValueError("one GenerationSettings per conversation")
        with ThreadPoolExecutor(max_workers=self.decoder.max_rows) as pool:
            return list(pool.map(self.generate, conversations, settings))


def load_llamacpp(
    spec: str | Path | None, device: str = "auto", gguf_type: str | None = None
) -> LlamaCppBackend:
    """`spec` on llama.cpp (on the CPU unless --device names a GPU); a RUN is exported on first use."""
    import_llama_cpp()  # fails before a slow export
    model = find_gguf(spec, gguf_type or DEFAULT_GGUF_TYPE)
    return LlamaCppBackend(model, device="cpu" if device in ("auto", "cpu") else device)
