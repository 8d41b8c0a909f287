"""The Backend protocol and what every backend shares: the tokenizer side (prompt and token counts, replies
from `stream`) and the server engine over a backend. Apart from the package's __init__ so that the backend
modules can build on it without importing the package that chooses between them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import threading

    from twinbot.bot.engine import ReplyEngine, SamplingRequest
    from twinbot.bot.generate import GenerationSettings
    from twinbot.data.records import ChatTurn


class Backend(Protocol):
    """A loaded model that replies: what chat, serve, discord and eval call."""

    backend: str  # which library generates: torch, llamacpp or vllm
    name: str  # the model's display name (/v1/models)
    system_prompt: str | None
    context_window: int

    def describe(self) -> str: ...

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self,
        messages: Sequence[ChatTurn],
        settings: GenerationSettings,
        stop: threading.Event | None = None,
    ) -> Iterator[str]: ...

    def generate(self, messages: Sequence[ChatTurn], settings: GenerationSettings) -> str: ...

    def generate_many(
        self, conversations: Sequence[Sequence[ChatTurn]], settings: Sequence[GenerationSettings]
    ) -> list[str]: ...

    def server_engine(self) -> ReplyEngine: ...


class TokenizerSide:
    """What every backend does with the run's Hugging Face tokenizer; subclasses set the attributes and
    `stream`."""

    backend: str
    name: str
    system_prompt: str | None
    context_window: int
    tokenizer: Any
    stop_token_ids: frozenset[int]

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int:
        from twinbot.bot.generate import build_prompt_ids

        return len(build_prompt_ids(self, messages, max_new_tokens))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def stream(
        self,
        messages: Sequence[ChatTurn],
        settings: GenerationSettings,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        raise NotImplementedError

    def generate(self, messages: Sequence[ChatTurn], settings: GenerationSettings) -> str:
        return "".join(self.stream(messages, settings))

    def generate_many(
        self, conversations: Sequence[Sequence[ChatTurn]], settings: Sequence[GenerationSettings]
    ) -> list[str]:
        if len(conversations) != len(settings):
            raise ValueError("one GenerationSettings per conversation")
        return [self.generate(turns, row) for turns, row in zip(conversations, settings, strict=True)]

    def server_engine(self) -> ReplyEngine:
        return BackendEngine(self)  # type: ignore[arg-type]


class BackendEngine:
    """`twinbot serve`'s ReplyEngine over a backend: each request's sampling over the default settings."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.system_prompt = backend.system_prompt
        self.context_window = backend.context_window

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int:
        return self.backend.count_prompt_tokens(messages, max_new_tokens)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]:
        from twinbot.bot.engine import request_settings

        return self.backend.stream(messages, request_settings(sampling), stop)
