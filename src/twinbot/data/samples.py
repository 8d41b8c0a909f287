"""Conversations -> training samples in the OpenAI chat `messages` shape.

One sample per persona ("me") turn that has at least one earlier turn in its conversation; the sample is
    system prompt, up to `context_turns` earlier turns (user/assistant, strictly alternating, opening on a
    user turn), the persona's turn as the final assistant message.
Roles alternate because consecutive turns of the same role are merged: other people's turns in a row
become one user turn; when more than one other person speaks in the conversation every user line is
prefixed with the speaker's name ("Alex: text"). Messages inside a turn are joined with "\n", so a burst
of short messages stays visible as lines.

The context is capped by a budget (characters, or tokens when a `TokenCounter` is given), counted over
the context turns' content; the oldest turns are dropped first, and when even the nearest turn is over
budget only its end is kept. Style-only conversations (no context in the source) give system + assistant
samples, one per persona turn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twinbot.data.records import ChatTurn, Conversation, Sample
from twinbot.models.tokenizers import render_chat

DEFAULT_SYSTEM_PROMPT = "You are {persona}, chatting with friends. Reply the way {persona} does."


class TokenCounter(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text (no special tokens)."""
        ...

    def keep_last(self, text: str, tokens: int) -> str:
        """The end of `text` that fits in `tokens` tokens."""
        ...


@dataclass(frozen=True, slots=True)
class SampleOptions:
    persona: str
    context_turns: int = 8
    context_chars: int = 2000
    context_tokens: int = 1024  # used instead of context_chars when a TokenCounter is given
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def system_text(self) -> str:
        return self.system_prompt.replace("{persona}", self.persona)


def chat_turns(conversation: Conversation) -> list[ChatTurn]:
    """The conversation as alternating user/assistant turns (style-only: one assistant turn per Turn)."""
    if conversation.style_only:
        return [ChatTurn(role="assistant", content="\n".join(t.texts)) for t in conversation.turns]
    others = {t.author_id for t in conversation.turns if not t.is_me}
    name_lines = len(others) > 1
    roles: list[str] = []
    parts: list[list[str]] = []  # joined once at the end: long runs of merged turns stay linear
    for turn in conversation.turns:
        role = "assistant" if turn.is_me else "user"
        if role == "user" and name_lines:
            lines = [f"{turn.author}: {text}" for text in turn.texts]
        else:
            lines = turn.texts
        if roles and roles[-1] == role:
            parts[-1].extend(lines)
        else:
            roles.append(role)
            parts.append(list(lines))
    return [
        ChatTurn(role="assistant" if role == "assistant" else "user", content="\n".join(lines))
        for role, lines in zip(roles, parts, strict=True)
    ]


def count_samples(conversation: Conversation) -> int:
    """How many samples `conversation_samples` will give, without building any text."""
    if conversation.style_only:
        return len(conversation.turns)
    count = 0
    previous_role: bool | None = None  # is_me of the previous merged turn
    seen_other = False
    for turn in conversation.turns:
        if turn.is_me and previous_role is not True and seen_other:
            count += 1
        if not turn.is_me:
            seen_other = True
        previous_role = turn.is_me
    return count


def _context(
    turns: list[ChatTurn],
    sizes: list[int],
    end: int,
    options: SampleOptions,
    counter: TokenCounter | None,
) -> list[ChatTurn]:
    budget = options.context_tokens if counter is not None else options.context_chars
    start = max(0, end - options.context_turns)
    total = sum(sizes[start:end])
    while total > budget and start < end - 1:
        total -= sizes[start]
        start += 1
    context = turns[start:end]
    if total > budget:
        nearest = context[0]
        if counter is not None:
            kept = counter.keep_last(nearest.content, budget)
        else:
            kept = nearest.content[-budget:] if budget > 0 else ""
        context[0] = ChatTurn(role=nearest.role, content=kept)
    while context and context[0].role == "assistant":  # templates want the first turn to be the user's
        context.pop(0)
    return context


def conversation_samples(
    conversation: Conversation, options: SampleOptions, counter: TokenCounter | None = None
) -> Iterator[Sample]:
    turns = chat_turns(conversation)
    system = ChatTurn(role="system", content=options.system_text())
    if conversation.style_only:
        for turn in turns:
            yield Sample(messages=[system, turn], conversation_id=conversation.id, style_only=True)
        return
    if not any(t.role == "assistant" for t in turns[1:]):
        return
    if counter is not None:
        sizes = counter.count([t.content for t in turns])
    else:
        sizes = [len(t.content) for t in turns]
    for index in range(1, len(turns)):
        if turns[index].role != "assistant":
            continue
        context = _context(turns, sizes, index, options, counter)
        if not context:
            continue
        yield Sample(messages=[system, *context, turns[index]], conversation_id=conversation.id)


class HFTokenCounter:
    """`TokenCounter` over a Hugging Face tokenizer, plus the full templated length of a sample."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._has_template = bool(getattr(tokenizer, "chat_template", None))

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def keep_last(self, text: str, tokens: int) -> str:
        if tokens <= 0:
            return ""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return str(self.tokenizer.decode(ids[-tokens:]))

    def templated_lengths(self, samples: Sequence[Sample]) -> list[int]:
        """Token length of each whole sample as the model sees it (chat template applied when it has one)."""
        texts: list[str] = []
        for sample in samples:
            messages = [{"role": t.role, "content": t.content} for t in sample.messages]
            if self._has_template:
                try:
                    texts.append(render_chat(self.tokenizer, messages))
                    continue
                except Exception:  # a template that rejects these roles: fall back to plain text
                    self._has_template = False
            texts.append("\n".join(f"{m['role']}: {m['content']}" for m in messages))
        return self.count(texts)
