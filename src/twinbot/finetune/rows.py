"""Samples -> token rows: chat-template tokenization with a supervision mask, packing, and batching.

Supervision: the loss covers only the FINAL assistant turn of each sample (its content tokens plus the
template's end-of-turn token, so the bot learns to stop; not the `<|im_start|>assistant\\n` header, nor
what the template writes after the end-of-turn token). The prompt is the context as chat renders it
(`twinbot.models.tokenizers.render_chat`), so training sees exactly what the bot sees. Earlier assistant
turns in the context are not supervised: `prepare` makes every persona turn the final turn of its own
sample, so supervising context turns too would train on the same reply several times.

Packing: whole samples are packed into rows without padding; `position_ids` restart at 0 for each sample,
and a model called with `attention_mask=None` and `use_cache=False` (sdpa or flash-attention) then keeps
the samples of a row independent (transformers builds a block-diagonal causal mask from the restarts).
With `use_cache=True` transformers skips that detection and samples would attend to each other.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from twinbot.data.records import ChatTurn, Sample
from twinbot.models.tokenizers import REPLY_MARKER, render_chat, reply_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(slots=True)
class TokenizedSample:
    """`target_ids[t]` is the token to predict after position t (`input_ids[t + 1]`) when that token is
    supervised, else -100; the last position is always -100."""

    input_ids: list[int]
    target_ids: list[int]

    @property
    def num_supervised(self) -> int:
        return sum(1 for t in self.target_ids if t != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(slots=True)
class Row:
    """Whole samples concatenated; `position_ids` restart at 0 at each sample."""

    input_ids: list[int]
    target_ids: list[int]
    position_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Batch:
    """Rows padded to the longest one: LongTensors of shape [B, T].

    Feed it as `model(input_ids=..., position_ids=..., attention_mask=None, use_cache=False)` and compute the
    loss against `target_ids` (already shifted: no further shift). Padding forms its own sequence (positions
    from 0) with target -100, so it never attends into real samples nor counts in the loss.
    """

    input_ids: torch.Tensor
    target_ids: torch.Tensor
    position_ids: torch.Tensor
    num_supervised: int
    num_tokens: int  # the samples' tokens (no padding)
    computed_tokens: int  # the non-padding tokens the model runs: fewer when `shared_prefix_row` shares

    def to(self, device: str | torch.device) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            target_ids=self.target_ids.to(device),
            position_ids=self.position_ids.to(device),
            num_supervised=self.num_supervised,
            num_tokens=self.num_tokens,
            computed_tokens=self.computed_tokens,
        )


# --- tokenization ---------------------------------------------------------------------------------------


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _final_turn_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], reply: list[int]
) -> tuple[list[int], int, int]:
    """(prompt + reply token ids, supervised span start, span end). The prompt is what the bot sees at chat
    time: the context rendered with the generation prompt. A sample without context (style-only) has no
    such rendering; the template's text before the reply stands in for it."""
    if messages[:-1]:
        prompt_text = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    else:
        probe = render_chat(tokenizer, [{**messages[-1], "content": REPLY_MARKER}])
        prompt_text = probe.split(REPLY_MARKER, 1)[0]
    prompt = _encode(tokenizer, prompt_text)
    return prompt + reply, len(prompt), len(prompt) + len(reply)


def reply_ids(tokenizer: PreTrainedTokenizerBase, content: str) -> list[int]:
    """The tokens the model should generate for a reply: the template's reply text (`reply_text`) through
    its end-of-turn token (the tokenizer's eos, see `finish_tokenizer`); what the template writes after
    that token (a newline, Phi-3's trailing eos) is not generated and not supervised. Tokenized apart from
    the prompt, as at generation time."""
    ids = _encode(tokenizer, reply_text(tokenizer, content))
    end_of_turn = tokenizer.eos_token_id
    if end_of_turn in ids:
        ids = ids[: ids.index(end_of_turn) + 1]
    return ids


def _targets(input_ids: list[int], start: int, end: int) -> list[int]:
    targets = [IGNORE_INDEX] * len(input_ids)
    for t in range(max(start - 1, 0), min(end, len(input_ids)) - 1):
        targets[t] = input_ids[t + 1]
    return targets


ZERO_WIDTH_SPACE = "\u200b"


@functools.lru_cache(maxsize=8)
def _added_tokens_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    spelled = sorted((t for t in tokens if len(t) > 1), key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in spelled)) if spelled else None


def plain_text(text: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """`text` with every spelled-out added token ("<|im_end|>") broken by a zero-width space after its first
    character. The tokenizer turns such strings into the special token itself, so a message quoting one would
    end its turn early or forge a turn of the other side; broken, it stays text."""
    tokens = tuple(token.content for token in tokenizer.added_tokens_decoder.values())
    pattern = _added_tokens_pattern(tokens)
    if pattern is None:
        return text
    return pattern.sub(lambda match: match.group(0)[0] + ZERO_WIDTH_SPACE + match.group(0)[1:], text)


def template_messages(turns: Sequence[ChatTurn], tokenizer: PreTrainedTokenizerBase) -> list[dict[str, str]]:
    """Turns as chat templates take them, their text made plain (see `plain_text`)."""
    return [{"role": turn.role, "content": plain_text(turn.content, tokenizer)} for turn in turns]


def tokenize_sample(
    sample: Sample, tokenizer: PreTrainedTokenizerBase, max_tokens: int
) -> TokenizedSample | None:
    """Tokenize one sample with its chat template; supervise only the final assistant turn.

    Too long: drop the oldest context turns (the system prompt and the final turn stay); if the final
    turn alone still does not fit, cut the end of the reply. None when nothing supervised remains.
    """
    messages = sample.messages
    head = list(messages[:1]) if messages and messages[0].role == "system" else []
    context = list(messages[len(head) : -1])
    final = messages[-1]

    reply = reply_ids(tokenizer, plain_text(final.content, tokenizer))

    def attempt(dropped: int) -> tuple[list[int], int, int]:
        return _final_turn_ids(
            tokenizer, template_messages([*head, *context[dropped:], final], tokenizer), reply
        )

    ids, start, end = attempt(0)
    if len(ids) > max_tokens and context:
        low, high = 1, len(context)
        best = attempt(high)
        if len(best[0]) <= max_tokens:
            # the fewest dropped turns that fit (a conversation only gets shorter as turns are dropped)
            while low < high:
                middle = (low + high) // 2
                trial = attempt(middle)
                if len(trial[0]) <= max_tokens:
                    best, high = trial, middle
                else:
                    low = middle + 1
        ids, start, end = best
    if len(ids) > max_tokens:
        ids = ids[:max_tokens]
        end = min(end, max_tokens)
    if end - start < 1:
        return None
    return TokenizedSample(input_ids=ids, target_ids=_targets(ids, start, end))


def tokenize_samples(
    samples: Sequence[Sample], tokenizer: PreTrainedTokenizerBase, max_tokens: int
) -> list[TokenizedSample]:
    """Tokenize every sample, leaving out those with nothing supervised left."""
    tokenized = (tokenize_sample(sample, tokenizer, max_tokens) for sample in samples)
    return [t for t in tokenized if t is not None]


# --- rows and batches -----------------------------------------------------------------------------------


def _row_of(samples: Sequence[TokenizedSample]) -> Row:
    input_ids: list[int] = []
    target_ids: list[int] = []
    position_ids: list[int] = []
    for sample in samples:
        input_ids.extend(sample.input_ids)
        target_ids.extend(sample.target_ids)
        position_ids.extend(range(len(sample.input_ids)))
    return Row(input_ids=input_ids, target_ids=target_ids, position_ids=position_ids)


def pack_rows(samples: Sequence[TokenizedSample], row_tokens: int) -> list[Row]:
    """Pack whole samples into rows of at most `row_tokens` tokens, without padding.

    First-fit in the given order: each sample goes into the first row that still has room, else opens a
    new row. Rows come out in the order they were opened and keep their samples in the given order, so
    shuffling the samples shuffles the rows. Deterministic; O(n log n) via a max-tree over row space left.
    """
    too_long = max((len(s.input_ids) for s in samples), default=0)
    if too_long > row_tokens:
        raise ValueError(f"a sample has {too_long} tokens, more than row_tokens={row_tokens}")
    if not samples:
        return []
    size = 1
    while size < len(samples):
        size *= 2
    # tree[size + r] = room left in row r (rows not opened yet are empty); inner nodes hold their max
    room = [0] * size + [row_tokens] * len(samples) + [0] * (size - len(samples))
    for node in range(size - 1, 0, -1):
        room[node] = max(room[2 * node], room[2 * node + 1])
    members: list[list[TokenizedSample]] = []
    for sample in samples:
        need = len(sample.input_ids)
        node = 1
        while node < size:
            node = 2 * node if room[2 * node] >= need else 2 * node + 1
        row = node - size
        if row == len(members):
            members.append([])
        members[row].append(sample)
        room[node] -= need
        node //= 2
        while node:
            room[node] = max(room[2 * node], room[2 * node + 1])
            node //= 2
    return [_row_of(row_samples) for row_samples in members]


def row_samples(row: Row) -> list[TokenizedSample]:
    """The samples packed into `row`, cut where the position ids restart at 0."""
    starts = [i for i, position in enumerate(row.position_ids) if position == 0] or [0]
    return [
        TokenizedSample(row.input_ids[start:end], row.target_ids[start:end])
        for start, end in zip(starts, [*starts[1:], len(row.input_ids)], strict=True)
    ]


def shared_prefix_length(sample: TokenizedSample, first: TokenizedSample) -> int:
    """How many of `sample`'s first tokens equal `first`'s and predict nothing supervised (on a persona's
    data at least the system prompt); every sample keeps at least its last token."""
    shared = 0
    limit = min(len(sample.input_ids) - 1, len(first.input_ids))
    while (
        shared < limit
        and sample.input_ids[shared] == first.input_ids[shared]
        and sample.target_ids[shared] == IGNORE_INDEX
    ):
        shared += 1
    return shared


def shared_prefix_row(rows: Sequence[Row]) -> Row:
    """A micro-batch as one padding-free row in which the samples after the first leave out the tokens they
    share with the first sample's beginning: those are computed once. A sample that leaves out p tokens
    starts at position p, and `twinbot.kernels.attention.packed_sdpa` lets it attend to the row's first p tokens,
    so every token sees exactly what it saw in its own sample (causal attention: a token's states depend
    only on the tokens before it, which are the same). The loss is unchanged: the tokens left out have no
    target. On the bundled sample this leaves out ~21% of the tokens (BENCHMARKS.md, attempt 28)."""
    samples = [sample for row in rows for sample in row_samples(row)]
    input_ids: list[int] = []
    target_ids: list[int] = []
    position_ids: list[int] = []
    for index, sample in enumerate(samples):
        shared = shared_prefix_length(sample, samples[0]) if index else 0
        input_ids.extend(sample.input_ids[shared:])
        target_ids.extend(sample.target_ids[shared:])
        position_ids.extend(range(shared, len(sample.input_ids)))
    return Row(input_ids=input_ids, target_ids=target_ids, position_ids=position_ids)


def one_sample_rows(samples: Sequence[TokenizedSample]) -> list[Row]:
    """One sample per row (packing off)."""
    return [_row_of([sample]) for sample in samples]


def collate(rows: Sequence[Row], pad_id: int) -> Batch:
    """Pad rows to the longest; padding gets target -100 and its own positions from 0."""
    if not rows:
        raise ValueError("collate needs at least one row")
    width = max(len(row.input_ids) for row in rows)
    input_ids: list[list[int]] = []
    target_ids: list[list[int]] = []
    position_ids: list[list[int]] = []
    for row in rows:
        padding = width - len(row.input_ids)
        input_ids.append(row.input_ids + [pad_id] * padding)
        target_ids.append(row.target_ids + [IGNORE_INDEX] * padding)
        position_ids.append(row.position_ids + list(range(padding)))
    targets = torch.tensor(target_ids, dtype=torch.long)
    real_tokens = sum(len(row.input_ids) for row in rows)
    return Batch(
        input_ids=torch.tensor(input_ids, dtype=torch.long),
        target_ids=targets,
        position_ids=torch.tensor(position_ids, dtype=torch.long),
        num_supervised=int((targets != IGNORE_INDEX).sum()),
        num_tokens=real_tokens,
        computed_tokens=real_tokens,
    )
