"""Generating a persona's replies: prompt building, the token loop and where a reply ends.

Generation is a plain token loop with a KV cache (no threads): each step's logits go through the
repetition penalty, temperature and top-p, then greedy (temperature 0) or seeded sampling. The loop stops
at any special token (end of turn, start of a new turn), and the decoded text is watched for the start of
someone else's turn ("<|im_start|>" spelled out, a "user:" line, a "Name:" line of another speaker), so the
persona never writes the other side of the conversation. Text that could still turn into such a marker is
held back while streaming, so streamed pieces always concatenate to the final reply.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from twinbot.bot import sampling_defaults
from twinbot.bot.loading import TURN_MARKERS
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from twinbot.bot.loading import LoadedModel

# Role names that, at the start of a line, mean the model began writing another turn.
ROLE_NAMES = ("user", "User", "USER", "assistant", "Assistant", "system", "System", "Human", "human")
_SPEAKER_LINE = re.compile(r"^([^\n:]{1,40}): \S")


class PromptModel(Protocol):
    """What prompts and reply text need of a model: a LoadedModel, or the tokenizer side of another backend."""

    tokenizer: Any
    context_window: int
    stop_token_ids: frozenset[int]
    system_prompt: str | None


@dataclass(frozen=True)
class GenerationSettings:
    """How one reply is sampled (chat, discord and eval take them from options; serve from each request)."""

    temperature: float = sampling_defaults.TEMPERATURE
    top_p: float = sampling_defaults.TOP_P
    max_new_tokens: int = sampling_defaults.MAX_NEW_TOKENS
    repetition_penalty: float = sampling_defaults.REPETITION_PENALTY
    seed: int | None = None  # fixed seed -> reproducible sampling; temperature 0 -> greedy
    # Names of the other people in the conversation: a line starting "Name:" ends the reply. Names that
    # appear as "Name: ..." lines in the user turns are found automatically.
    other_speakers: tuple[str, ...] = ()


# --- prompts -------------------------------------------------------------------------------------------


def _encode_chat(tokenizer: Any, turns: Sequence[ChatTurn]) -> list[int]:
    from twinbot.finetune.rows import template_messages
    from twinbot.models.tokenizers import render_chat

    rendered = render_chat(tokenizer, template_messages(turns, tokenizer), add_generation_prompt=True)
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def build_prompt_ids(lm: PromptModel, messages: Sequence[ChatTurn], max_new_tokens: int) -> list[int]:
    """The chat template with the generation prompt, trimmed to `context_window - max_new_tokens` tokens.

    The oldest non-system turns go first (a leading assistant turn goes too: templates expect the user
    first); when the newest turn alone is still too long, its beginning is cut.
    """
    budget = lm.context_window - max(0, max_new_tokens)
    if budget <= 0:
        raise TwinbotError(
            f"max new tokens ({max_new_tokens}) leaves no room for the prompt in the "
            f"{lm.context_window}-token context window; lower it"
        )
    head = list(messages[:1]) if messages and messages[0].role == "system" else []
    rest = list(messages[len(head) :])

    def kept(dropped: int) -> list[ChatTurn]:
        turns = rest[dropped:]
        while len(turns) > 1 and turns[0].role == "assistant":
            turns = turns[1:]
        return [*head, *turns]

    ids = _encode_chat(lm.tokenizer, kept(0))
    if len(ids) <= budget or len(rest) <= 1:
        best_dropped = 0
    else:
        low, high = 1, len(rest) - 1
        best_dropped = high
        ids_high = _encode_chat(lm.tokenizer, kept(high))
        if len(ids_high) <= budget:
            while low < high:  # the fewest dropped turns that fit
                middle = (low + high) // 2
                if len(_encode_chat(lm.tokenizer, kept(middle))) <= budget:
                    high = middle
                else:
                    low = middle + 1
            best_dropped = high
        ids = _encode_chat(lm.tokenizer, kept(best_dropped))
    if len(ids) <= budget:
        return ids
    # the newest turn alone does not fit: keep its end
    turns = kept(best_dropped)
    last = turns[-1]
    low, high = 0, len(last.content)  # characters cut from the front
    while low < high:
        middle = (low + high) // 2
        trial = [*turns[:-1], ChatTurn(role=last.role, content=last.content[middle:])]
        if len(_encode_chat(lm.tokenizer, trial)) <= budget:
            high = middle
        else:
            low = middle + 1
    trial = [*turns[:-1], ChatTurn(role=last.role, content=last.content[low:])]
    ids = _encode_chat(lm.tokenizer, trial)
    if len(ids) > budget:
        raise TwinbotError(
            f"the system prompt alone is longer than the {budget} tokens available; shorten it "
            "or lower max new tokens"
        )
    return ids


def speakers_in(messages: Sequence[ChatTurn]) -> list[str]:
    """Names of other people: user turns whose every line reads "Name: text" (prepare's group-chat form)."""
    names: list[str] = []
    for turn in messages:
        if turn.role != "user":
            continue
        lines = [line for line in turn.content.split("\n") if line.strip()]
        matches = [_SPEAKER_LINE.match(line) for line in lines]
        if lines and all(matches):
            for match in matches:
                name = match.group(1).strip() if match else ""
                if name and name not in names:
                    names.append(name)
    return names


def _line_markers(names: Sequence[str]) -> list[str]:
    markers: list[str] = []
    for name in [*ROLE_NAMES, *names]:
        for variant in (name, name.lower(), name.capitalize()):
            marker = f"\n{variant}:"
            if variant and marker not in markers:
                markers.append(marker)
    return markers


class ReplyText:
    """Decoded reply text so far -> the part that is safe to show, and whether another turn started."""

    def __init__(self, names: Sequence[str]) -> None:
        self.line_markers = _line_markers(names)
        self.anywhere_markers = list(TURN_MARKERS)

    def cut(self, raw: str) -> tuple[str, bool]:
        """(text to keep, whether a marker of another turn was found)."""
        text = raw.lstrip()
        framed = "\n" + text  # a reply that opens with "user:" is another turn too
        cut_at: int | None = None
        for marker in self.line_markers:
            index = framed.find(marker)
            if index >= 0 and (cut_at is None or index - 1 < cut_at):
                cut_at = max(index - 1, 0)
        for marker in self.anywhere_markers:
            index = text.find(marker)
            if index >= 0 and (cut_at is None or index < cut_at):
                cut_at = index
        if cut_at is not None:
            return text[:cut_at].rstrip(), True
        return text, False

    def safe(self, text: str) -> str:
        """`text` without a tail that could still become a marker, an incomplete character or whitespace."""
        framed = "\n" + text
        hold = 0
        for marker in [*self.line_markers, *self.anywhere_markers]:
            for size in range(min(len(marker) - 1, len(framed)), 0, -1):
                if framed.endswith(marker[:size]):
                    hold = max(hold, size)
                    break
        kept = text[: max(0, len(text) - hold)]
        return kept.rstrip("\ufffd").rstrip()


# --- generation ----------------------------------------------------------------------------------------


def _logits_processors(settings: GenerationSettings) -> Any:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.temperature > 0:
        if settings.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(settings.temperature))
        if 0 < settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors


def _check_settings(settings: GenerationSettings) -> None:
    if settings.max_new_tokens < 1:
        raise TwinbotError("max new tokens must be at least 1")
    if settings.temperature < 0:
        raise TwinbotError("temperature must be 0 (greedy) or more")
    if not 0 < settings.top_p <= 1:
        raise TwinbotError("top-p must be in (0, 1]")
    if settings.repetition_penalty <= 0:
        raise TwinbotError("repetition penalty must be more than 0 (1 = off)")


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _forward_parameters(model: Any) -> frozenset[str]:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _class_forward_parameters(type(inner))


@functools.cache
def _class_forward_parameters(model_class: type) -> frozenset[str]:
    """Read once per model class: `_forward` asks at every decoding step."""
    import inspect

    try:
        return frozenset(inspect.signature(model_class.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return frozenset()


class _RowSampler:
    """Picks one row's next token: its logits processors over its own ids, then greedy or its seeded draw."""

    def __init__(self, settings: GenerationSettings) -> None:
        self.processors = _logits_processors(settings)
        self.greedy = settings.temperature == 0
        self.generator: torch.Generator | None = None
        if settings.seed is not None and not self.greedy:
            self.generator = torch.Generator(device="cpu")
            self.generator.manual_seed(settings.seed)

    def pick(self, ids: torch.Tensor, scores: torch.Tensor) -> int:
        """`ids`: this row's prompt and generated ids (1 x n); `scores`: its last logits (1 x vocab)."""
        scores = self.processors(ids, scores)
        if self.greedy:
            return int(torch.argmax(scores, dim=-1)[0])
        # exponential-race sampling: argmax(p / E) with E ~ Exp(1) draws from p, faster than multinomial
        probs = torch.softmax(scores[0], dim=-1).cpu()
        noise = torch.empty_like(probs).exponential_(1.0, generator=self.generator)
        return int(torch.argmax(probs / noise))


def _forward(
    model: Any, input_ids: torch.Tensor, cache: dict[str, Any], **inputs: Any
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The last position's logits (float32) and the cache argument for the next step."""
    if "logits_to_keep" in _forward_parameters(model):
        inputs["logits_to_keep"] = 1
    output = model(input_ids=input_ids, use_cache=True, **cache, **inputs)
    # transformers 5.24 renamed `past_key_values` to `cache`; earlier 5.x use the old name
    if getattr(output, "cache", None) is not None:
        cache = {"cache": output.cache}
    else:
        cache = {"past_key_values": output.past_key_values}
    return output.logits[:, -1, :].float(), cache


# One reply's forward pass: the token ids the model has not seen yet (the prompt first, then each sampled
# token) -> the logits at the last of them (1 x vocab, float32). Backends other than torch bring their own.
Forward = Callable[[list[int]], torch.Tensor]


def torch_forward(model: Any) -> Forward:
    """The forward pass of a transformers model, keeping its KV cache between calls (one reply's)."""
    device = _model_device(model)
    cache: dict[str, Any] = {}

    def forward(new_ids: list[int]) -> torch.Tensor:
        nonlocal cache
        scores, cache = _forward(model, torch.tensor([new_ids], dtype=torch.long, device=device), cache)
        return scores

    return forward


def sampled_tokens(
    forward: Forward,
    prompt_ids: list[int],
    settings: GenerationSettings,
    stop_token_ids: frozenset[int],
    stop: threading.Event | None,
) -> Iterator[int]:
    """Generated token ids, one at a time, until a stop token, max_new_tokens or `stop`."""
    sampler = _RowSampler(settings)
    seen = list(prompt_ids)
    new_ids = seen
    for _ in range(settings.max_new_tokens):
        if stop is not None and stop.is_set():
            return
        with torch.inference_mode():
            scores = forward(new_ids)
            token = sampler.pick(torch.tensor([seen], dtype=torch.long, device=scores.device), scores)
        if token in stop_token_ids:
            return
        yield token
        seen.append(token)
        new_ids = [token]


def _token_stream(
    lm: LoadedModel, prompt_ids: list[int], settings: GenerationSettings, stop: threading.Event | None
) -> Iterator[int]:
    """Generated token ids of the torch model, one at a time, until a stop token, max_new_tokens or `stop`."""
    return sampled_tokens(torch_forward(lm.model), prompt_ids, settings, lm.stop_token_ids, stop)


def _reply_pieces(lm: PromptModel, text: ReplyText, tokens: Iterable[int]) -> Iterator[str]:
    """The text pieces that `tokens` make: what stream_reply yields (see there)."""
    generated: list[int] = []
    shown = ""
    for token in tokens:
        generated.append(token)
        raw = lm.tokenizer.decode(generated, skip_special_tokens=True)
        kept, ended = text.cut(raw)
        if ended:
            if kept.startswith(shown) and len(kept) > len(shown):
                yield kept[len(shown) :]
            return
        safe = text.safe(kept)
        if safe.startswith(shown) and len(safe) > len(shown):
            yield safe[len(shown) :]
            shown = safe
    if generated:
        raw = lm.tokenizer.decode(generated, skip_special_tokens=True)
        final = text.cut(raw)[0].rstrip()
        if final.startswith(shown) and len(final) > len(shown):
            yield final[len(shown) :]


def stream_reply(
    lm: PromptModel,
    messages: Sequence[ChatTurn],
    settings: GenerationSettings,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Text pieces of the reply as they are generated; together they are exactly `generate_reply`'s text.

    Ends at an end-of-turn/special token, when the model starts another turn (a turn marker, a "user:" or
    another speaker's "Name:" line), at max_new_tokens, or when `stop` is set from another thread.
    """
    _check_settings(settings)
    prompt_ids = build_prompt_ids(lm, messages, settings.max_new_tokens)
    text = ReplyText([*speakers_in(messages), *settings.other_speakers])
    forward = torch_forward(lm.model)  # type: ignore[attr-defined]
    tokens = sampled_tokens(forward, prompt_ids, settings, lm.stop_token_ids, stop)
    yield from _reply_pieces(lm, text, tokens)


def generate_reply(lm: LoadedModel, messages: Sequence[ChatTurn], settings: GenerationSettings) -> str:
    """The whole reply (what `stream_reply` yields, joined)."""
    return "".join(stream_reply(lm, messages, settings))


# --- several replies at once --------------------------------------------------------------------------------

# Conversations that share one forward pass. Decoding one token reads every weight from memory, so on a CPU
# a batch of 16 costs little more than one reply; more would mostly add padding and cache memory.
BATCH_ROWS = 16


@dataclass
class _BatchRow:
    prompt: list[int]
    settings: GenerationSettings
    text: ReplyText
    sampler: _RowSampler
    generated: list[int]
    done: bool = False


def generate_replies(
    lm: LoadedModel, conversations: Sequence[Sequence[ChatTurn]], settings: Sequence[GenerationSettings]
) -> list[str]:
    """`generate_reply(lm, conversations[i], settings[i])` for every i, with the rows sharing forward passes
    (left-padded batches of up to BATCH_ROWS prompts of similar length, one KV cache). Each row gets its own
    repetition penalty, seeded draws, stop tokens and end-of-turn detection; its tokens can still differ from
    a reply generated alone where the batch shape changes the floating-point rounding."""
    if len(conversations) != len(settings):
        raise ValueError("one GenerationSettings per conversation")
    rows = []
    for messages, row_settings in zip(conversations, settings, strict=True):
        _check_settings(row_settings)
        text = ReplyText([*speakers_in(messages), *row_settings.other_speakers])
        prompt = build_prompt_ids(lm, messages, row_settings.max_new_tokens)
        rows.append(_BatchRow(prompt, row_settings, text, _RowSampler(row_settings), []))
    by_length = sorted(range(len(rows)), key=lambda index: len(rows[index].prompt))
    for start in range(0, len(by_length), BATCH_ROWS):
        _decode_batch(lm, [rows[index] for index in by_length[start : start + BATCH_ROWS]])
    return ["".join(_reply_pieces(lm, row.text, row.generated)) for row in rows]


def _decode_batch(lm: LoadedModel, rows: list[_BatchRow]) -> None:
    """Fills each row's `generated` until its stop token, its end of turn or its max_new_tokens."""
    model, tokenizer = lm.model, lm.tokenizer
    device = _model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(row.prompt) for row in rows)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for number, row in enumerate(rows):
        attention_mask[number, width - len(row.prompt) :] = 1
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        scores, cache = _prefill(model, rows, attention_mask, positions, pad_id, device)
        while True:
            tokens = [
                pad_id if row.done else _next_token(lm, row, scores[number : number + 1])
                for number, row in enumerate(rows)
            ]
            if all(row.done for row in rows):
                return
            attention_mask = torch.cat([attention_mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
            positions = positions[:, -1:] + 1
            scores, cache = _forward(
                model,
                torch.tensor(tokens, dtype=torch.long, device=device)[:, None],
                cache,
                attention_mask=attention_mask.to(device),
                position_ids=positions.to(device),
            )


def _prefill(
    model: Any,
    rows: list[_BatchRow],
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    pad_id: int,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The prompts' last logits and their KV cache, left-padded to one width.

    Each prompt runs alone and the caches are joined, so no compute goes into padding (prompts of eval's
    contexts differ in length several times over); where the model's cache is not transformers' plain
    DynamicCache (sliding windows, other layouts), the padded batch runs at once instead."""
    first_scores, first = _forward(model, torch.tensor([rows[0].prompt], device=device), {})
    if len(rows) == 1:
        return first_scores, first
    (argument, joined), *_ = first.items()
    if not _joinable(joined):
        input_ids = torch.full(attention_mask.shape, pad_id, dtype=torch.long)
        input_ids[attention_mask.bool()] = torch.tensor([token for row in rows for token in row.prompt])
        return _forward(
            model,
            input_ids.to(device),
            {},
            attention_mask=attention_mask.to(device),
            position_ids=positions.to(device),
        )
    parts = [(first_scores, joined)]
    for row in rows[1:]:
        scores, cache = _forward(model, torch.tensor([row.prompt], device=device), {})
        parts.append((scores, next(iter(cache.values()))))
    joined = join_caches([cache for _, cache in parts], attention_mask.shape[1])
    return torch.cat([scores for scores, _ in parts]), {argument: joined}


def join_caches(caches: Sequence[Any], width: int) -> Any:
    """`caches[0]`, now holding the rows of every cache in order, each left-padded to `width` positions
    (all `_joinable`; the padding's attention mask is the caller's)."""
    joined = caches[0]
    for index, layer in enumerate(joined.layers):
        for field in ("keys", "values"):
            padded = []
            for cache in caches:
                states = getattr(cache.layers[index], field)
                padded.append(torch.nn.functional.pad(states, (0, 0, width - states.shape[-2], 0)))
            setattr(layer, field, torch.cat(padded))
    return joined


def _joinable(cache: Any) -> bool:
    """Whether `cache` is a DynamicCache of plain DynamicLayers (key/value tensors batch x heads x seq x dim)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:
        return False
    layers = getattr(cache, "layers", None)
    return (
        type(cache) is DynamicCache and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
    )


def _next_token(lm: LoadedModel, row: _BatchRow, scores: torch.Tensor) -> int:
    """The row's next token (kept in `row.generated` unless it is a stop token); marks the row done at its
    end."""
    ids = torch.tensor([row.prompt + row.generated], dtype=torch.long, device=scores.device)
    token = row.sampler.pick(ids, scores)
    if token in lm.stop_token_ids:
        row.done = True
        return token
    row.generated.append(token)
    raw = lm.tokenizer.decode(row.generated, skip_special_tokens=True)
    row.done = len(row.generated) >= row.settings.max_new_tokens or row.text.cut(raw)[1]
    return token


def with_system_prompt(
    lm: PromptModel, history: Sequence[ChatTurn], system: str | None = None
) -> list[ChatTurn]:
    """`history` behind the system prompt: `system` when given, else the persona's, else none."""
    prompt = system if system is not None else lm.system_prompt
    turns = [turn for turn in history if turn.role != "system"]
    return [ChatTurn(role="system", content=prompt), *turns] if prompt else turns
