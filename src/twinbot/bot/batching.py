"""Continuous batching: replies generated at the same time share forward passes.

One decode thread owns the model. Requests wait in a queue until the decoder has room for them (a free row;
for llama.cpp also room in its KV cache), then join the running rows, so a request starts decoding at the
next step instead of waiting for the others to finish. Each row keeps its own sampler (seed, temperature,
top-p, repetition penalty over its own ids), its stop tokens and its max_new_tokens. A row leaves when it
ends or when its reader stops listening (its stop event: client gone, time limit, stop string; or the
reader saw the end of the turn).

ContinuousBatcher is that scheduling, whatever runs the model; a backend brings the step that decodes one
token for every running row (and admits the new ones). Readers get token ids through a queue and turn them
into text with generate._reply_pieces, so they receive exactly the pieces stream_reply would give them.

BatchDecoder is the torch backend's: a request's prompt runs alone (prefill), then its KV cache joins the
running batch, left-padded to the batch's width. When rows leave, their rows of the cache are dropped, and
the left padding that no remaining row needs goes with them, so the cache does not grow without bound.
Where the model's cache cannot be joined (sliding-window or other cache layouts, see generate._joinable),
each request is a batch of its own and the batches take turns, one step each. (llama.cpp's is
backends/llamacpp.py's LlamaDecoder.)

Decoding one token reads every weight once whatever the batch size, so on a CPU a step of 8 rows costs
little more than a step of 1: the rows share that cost.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from twinbot.bot.generate import (
    BATCH_ROWS,
    GenerationSettings,
    PromptModel,
    ReplyText,
    _check_settings,
    _forward,
    _joinable,
    _model_device,
    _reply_pieces,
    _RowSampler,
    build_prompt_ids,
    join_caches,
    speakers_in,
)

if TYPE_CHECKING:
    from twinbot.bot.loading import LoadedModel
    from twinbot.data.records import ChatTurn

_END = object()  # a reply's last item in its queue


@dataclass(eq=False)
class DecodingRow:
    """One reply being decoded."""

    prompt: list[int]
    settings: GenerationSettings
    sampler: _RowSampler
    stop: threading.Event | None  # the caller's: set, the row leaves at the next step
    tokens: queue.SimpleQueue[object]  # to the reader: token ids, then _END or the exception that ended it
    generated: list[int] = field(default_factory=list)
    reader_gone: bool = False  # the reader stopped listening (end of turn seen, stream closed)
    # the prompt and generated ids so far, for the sampler's repetition penalty: [:, :len(prompt) + len(generated)]
    ids: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = torch.zeros((1, len(self.prompt) + self.settings.max_new_tokens), dtype=torch.long)
        self.ids[0, : len(self.prompt)] = torch.tensor(self.prompt, dtype=torch.long)

    def wanted(self) -> bool:
        return not self.reader_gone and not (self.stop is not None and self.stop.is_set())

    def end(self, item: object = _END) -> None:
        self.tokens.put(item)


class ContinuousBatcher:
    """Streams replies of `model`, up to `max_rows` of them decoding together; more wait in a queue.

    Subclasses run the model: `_admit` takes the waiting rows there is room for, `_step` decodes one token for
    every running row (taking the admitted ones in first) and calls `_take` with each row's logits, `_rows`
    lists the running rows and `_reset` forgets them after a failed step."""

    def __init__(self, model: PromptModel, max_rows: int = BATCH_ROWS) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.model = model
        self.max_rows = max_rows
        self._arrivals: deque[DecodingRow] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # runs while there is work, started again on demand

    def stream(
        self, messages: Sequence[ChatTurn], settings: GenerationSettings, stop: threading.Event | None = None
    ) -> Iterator[str]:
        """What generate.stream_reply yields for the same arguments, decoded with the other running rows."""
        _check_settings(settings)
        prompt = build_prompt_ids(self.model, messages, settings.max_new_tokens)
        text = ReplyText([*speakers_in(messages), *settings.other_speakers])
        with closing(self.token_ids(prompt, settings, stop)) as tokens:
            yield from _reply_pieces(self.model, text, tokens)

    def token_ids(
        self, prompt: list[int], settings: GenerationSettings, stop: threading.Event | None = None
    ) -> Iterator[int]:
        """The reply's token ids after `prompt` (what generate.sampled_tokens gives with the model's stop
        tokens), decoded with the other running rows."""
        _check_settings(settings)
        row = DecodingRow(prompt, settings, _RowSampler(settings), stop, queue.SimpleQueue())
        self._submit(row)
        try:
            yield from _received(row)
        finally:
            row.reader_gone = True  # the row leaves at the next step

    def _submit(self, row: DecodingRow) -> None:
        with self._lock:
            self._arrivals.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="twinbot-decode", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                for row in [row for row in self._arrivals if not row.wanted()]:
                    self._arrivals.remove(row)
                    row.end()
                if not self._arrivals and not self._rows():
                    self._thread = None
                    return
                admitted = self._admit(self._arrivals)
            try:
                self._step(admitted)
            except Exception as exc:  # the readers raise it; the decoder starts afresh
                for row in dict.fromkeys([*admitted, *self._rows()]):
                    row.end(exc)
                self._reset()

    def _admit(self, arrivals: deque[DecodingRow]) -> list[DecodingRow]:
        """The waiting rows to start now, taken from the front of `arrivals` (in order): as many as there
        are free rows."""
        room = self.max_rows - len(self._rows())
        return [arrivals.popleft() for _ in range(min(room, len(arrivals)))]

    def _step(self, admitted: list[DecodingRow]) -> None:
        raise NotImplementedError

    def _rows(self) -> list[DecodingRow]:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _take(self, row: DecodingRow, scores: torch.Tensor) -> bool:
        """Sample the row's next token from its logits (1 x vocab) and send it; False when the row has ended."""
        seen = len(row.prompt) + len(row.generated)
        token = row.sampler.pick(row.ids[:, :seen].to(scores.device), scores)
        if token in self.model.stop_token_ids:
            row.end()
            return False
        row.generated.append(token)
        row.ids[0, seen] = token
        row.tokens.put(token)
        if len(row.generated) >= row.settings.max_new_tokens:
            row.end()
            return False
        return True


@dataclass(eq=False)
class _Batch:
    """Rows decoding together: one KV cache, row i's cache left-padded where attention_mask[i] is 0."""

    rows: list[DecodingRow]
    cache: dict[str, Any]  # generate._forward's cache argument
    attention_mask: torch.Tensor  # rows x cached positions
    joinable: bool


class BatchDecoder(ContinuousBatcher):
    """The torch backend's continuous batching (see the module's docstring)."""

    def __init__(self, lm: LoadedModel, max_rows: int = BATCH_ROWS) -> None:
        super().__init__(lm, max_rows)
        self.lm = lm
        self.device = _model_device(lm.model)
        self._batches: list[_Batch] = []  # the decode thread's own

    def _rows(self) -> list[DecodingRow]:
        return [row for batch in self._batches for row in batch.rows]

    def _reset(self) -> None:
        self._batches = []

    def _step(self, admitted: list[DecodingRow]) -> None:
        with torch.inference_mode():
            for row in admitted:
                self._prefill(row)
            for batch in self._batches:
                self._step_batch(batch)
        self._batches = [batch for batch in self._batches if batch.rows]

    def _prefill(self, row: DecodingRow) -> None:
        """Prefill the row's prompt alone, take its first token and join it to a batch."""
        scores, cache = _forward(self.lm.model, torch.tensor([row.prompt], device=self.device), {})
        if not self._take(row, scores):
            return
        mask = torch.ones((1, len(row.prompt)), dtype=torch.long, device=self.device)
        (argument, new), *_ = cache.items()
        joinable = _joinable(new)
        target = next((batch for batch in self._batches if batch.joinable), None) if joinable else None
        if target is None:
            self._batches.append(_Batch([row], cache, mask, joinable))
            return
        width = max(target.attention_mask.shape[1], mask.shape[1])
        target.cache = {argument: join_caches([target.cache[argument], new], width)}
        target.attention_mask = torch.cat([_left_pad(target.attention_mask, width), _left_pad(mask, width)])
        target.rows.append(row)

    def _step_batch(self, batch: _Batch) -> None:
        """Drop the rows whose readers stopped, then decode one token for every other row."""
        wanted = [row.wanted() for row in batch.rows]
        for row, keep in zip(batch.rows, wanted, strict=True):
            if not keep:
                row.end()  # a reader still waiting (time limit, client gone) gets its end
        self._keep(batch, [number for number, keep in enumerate(wanted) if keep])
        if not batch.rows:
            return
        inputs = torch.tensor([[row.generated[-1]] for row in batch.rows], device=self.device)
        mask = batch.attention_mask
        batch.attention_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if bool(mask.all()):  # no padding: the very call of a reply decoded alone
            scores, batch.cache = _forward(self.lm.model, inputs, batch.cache)
        else:
            scores, batch.cache = _forward(
                self.lm.model,
                inputs,
                batch.cache,
                attention_mask=batch.attention_mask,
                position_ids=mask.sum(dim=1, keepdim=True),  # each row's own length so far
            )
        going = [
            number for number, row in enumerate(batch.rows) if self._take(row, scores[number : number + 1])
        ]
        self._keep(batch, going)

    def _keep(self, batch: _Batch, numbers: list[int]) -> None:
        """Keep only these rows of the batch (the others have ended), and drop the left padding nobody needs."""
        if len(numbers) == len(batch.rows):
            return
        batch.rows = [batch.rows[number] for number in numbers]
        if not batch.rows:
            batch.cache = {}
            return
        index = torch.tensor(numbers, device=self.device)
        mask = batch.attention_mask.index_select(0, index)
        start = int((mask.shape[1] - mask.sum(dim=1)).min())
        batch.attention_mask = mask[:, start:]
        for cache in batch.cache.values():
            for layer in cache.layers:
                layer.keys = layer.keys.index_select(0, index)[:, :, start:]
                layer.values = layer.values.index_select(0, index)[:, :, start:]


def _received(row: DecodingRow) -> Iterator[int]:
    """The row's token ids as the decode thread sends them."""
    while True:
        item = row.tokens.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, int)
        yield item


def _left_pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))
