"""`twinbot serve`: an OpenAI-compatible chat server (FastAPI + uvicorn) and a small web chat page.

Endpoints: `POST /v1/chat/completions` (plain JSON or `stream: true` server-sent events, with `usage`),
`GET /v1/models`, `GET /health`, and the chat page at `/`. The wire format itself is in openai_api.py.

Generation runs in worker threads, never on the event loop (engine.py). At most `max_concurrent`
generations run at once; up to `max_queue` more wait for a slot, and requests beyond that get 429 before
any tokenizer work (admission.py). Every stage has a time limit (ServeLimits): reading the body (408),
waiting for a slot (503 with Retry-After) and generating (the reply so far, finish_reason "length"). A
client that goes away (queued, mid-stream or while waiting for a plain reply) stops its generation or
never starts it.

The HTTP protections (Host allow-list, JSON-only POSTs, page headers) and listening are local_http.py's,
shared with `twinbot eval --blind`.

Privacy: request bodies and message text are never logged, and the API key is never printed.
"""

from __future__ import annotations

import asyncio
import codecs
import hmac
import importlib.resources
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError

from twinbot.bot import sampling_defaults
from twinbot.bot.admission import Admission
from twinbot.bot.engine import Generation, ModelEngine, ReplyEngine, SamplingRequest
from twinbot.bot.local_http import (
    DEFAULT_HOST,
    check_port,
    is_loopback,
    page_response,
    protected_app,
    read_json_body,
    serve_until_stopped,
    shown_url,
)
from twinbot.bot.local_http import ServerThread as ServerThread  # where tests and bench/serve.py import it
from twinbot.bot.local_http import listen as _listen  # a module global: tests replace it
from twinbot.bot.openai_api import (
    ApiError,
    ChatCompletionRequest,
    new_completion_id,
    sse,
    validation_message,
)
from twinbot.bot.stop_strings import stop_strings_from
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError, one_line

if TYPE_CHECKING:
    from twinbot.bot.loading import LoadedModel

log = logging.getLogger("twinbot.bot.serve")

DEFAULT_PORT = 8000
API_KEY_ENV = "TWINBOT_API_KEY"


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on what one request may ask for, and how long each of its stages may take."""

    max_tokens: int = 512  # reply tokens per request (also capped by the model's context window)
    default_max_tokens: int = sampling_defaults.MAX_NEW_TOKENS
    max_prompt_chars: int = 32_000  # all message text of one request together
    max_messages: int = 256
    body_timeout_s: float = 30.0  # to receive the whole request body (slow senders hold a connection)
    queue_timeout_s: float = 120.0  # to wait for a generation slot
    generation_timeout_s: float = 300.0  # to generate, from the moment the slot is granted

    def __post_init__(self) -> None:
        if min(self.body_timeout_s, self.queue_timeout_s, self.generation_timeout_s) <= 0:
            raise TwinbotError(
                "--body-timeout, --queue-timeout and --generation-timeout must be more than 0 seconds"
            )


# ---- the app ----


def create_app(
    lm: LoadedModel | ReplyEngine,
    api_key: str | None = None,
    max_concurrent: int = 8,
    max_queue: int = 16,
    limits: ServeLimits | None = None,
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI app serving `lm` (a LoadedModel, or any ReplyEngine such as a test fake), answering
    requests addressed to a loopback name or one of `allowed_hosts` only."""
    engine: ReplyEngine = (
        lm if _is_engine(lm) else ModelEngine(lm, max_rows=max_concurrent)  # type: ignore[arg-type]
    )
    service = ChatService(
        engine=engine,
        admission=Admission(max_concurrent, max_queue),
        limits=limits or ServeLimits(),
        api_key=api_key,
        created=int(time.time()),
    )
    page = _web_page()
    app = protected_app("twinbot", allowed_hosts)
    _add_routes(app, service, page)
    return app


def _is_engine(candidate: object) -> bool:
    return callable(getattr(candidate, "stream", None)) and callable(
        getattr(candidate, "count_prompt_tokens", None)
    )


def _web_page() -> str:
    return importlib.resources.files("twinbot.bot").joinpath("web/index.html").read_text(encoding="utf-8")


def _add_routes(app: FastAPI, service: ChatService, page: str) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return page_response(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        service.check_key(request)
        return service.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        service.check_key(request)
        return await service.chat_completion(request)


# ---- what the routes do ----


@dataclass(frozen=True)
class _Prepared:
    """A checked chat completion request, ready to generate."""

    messages: list[ChatTurn]
    sampling: SamplingRequest
    stop_strings: tuple[str, ...]
    prompt_tokens: int
    include_usage: bool


@dataclass
class ChatService:
    """The server's state and request handling, apart from the HTTP routing."""

    engine: ReplyEngine
    admission: Admission
    limits: ServeLimits
    api_key: str | None  # None: no authentication
    created: int  # when the server started (the model's `created` in /v1/models)

    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.api_key.encode()
        ):
            raise ApiError(
                401,
                "missing or wrong API key; send the header `Authorization: Bearer KEY`",
                code="invalid_api_key",
            )

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": self.engine.name,
            "running": self.admission.running,
            "queued": self.admission.waiting,
            "auth": self.api_key is not None,
        }

    def models(self) -> dict[str, Any]:
        model = {"id": self.engine.name, "object": "model", "created": self.created, "owned_by": "twinbot"}
        return {"object": "list", "data": [model]}

    async def chat_completion(self, request: Request) -> Any:
        """The reply as one JSON body, or as server-sent events when the request asks to `stream`."""
        body = await self._read(request)
        prepared = await self._prepare(body)
        generation = await self._start(prepared, request)
        completion_id = new_completion_id()
        if body.stream:
            return StreamingResponse(
                _stream_events(
                    self.engine, generation, request, prepared, completion_id, created=int(time.time())
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _whole_reply(self.engine, generation, request, prepared, completion_id)

    async def _read(self, request: Request) -> ChatCompletionRequest:
        raw = await read_json_body(
            request, max_bytes=4 * self.limits.max_prompt_chars + 65_536, timeout_s=self.limits.body_timeout_s
        )
        try:
            return ChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            message, param = validation_message(exc.errors())
            raise ApiError(400, message, param=param) from None

    async def _prepare(self, body: ChatCompletionRequest) -> _Prepared:
        """The checked request, holding a generation slot (the caller must start or release it).

        The cheap checks come first; then a place in the queue is taken, so that a request the server is
        too busy for is refused (429) before any tokenizer work; the prompt is tokenized while queued."""
        turns = self._turns(body)
        sampling = self._sampling(body)
        stops = stop_strings_from(body.stop)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.admission.reserve()
        try:
            prompt_tokens = await self._count_prompt_tokens(turns, sampling)
            await self.admission.take_slot(self.limits.queue_timeout_s)
        except BaseException:
            self.admission.cancel()
            raise
        return _Prepared(turns, sampling, stops, prompt_tokens, include_usage)

    async def _count_prompt_tokens(self, turns: list[ChatTurn], sampling: SamplingRequest) -> int:
        try:
            return await asyncio.to_thread(self.engine.count_prompt_tokens, turns, sampling.max_new_tokens)
        except TwinbotError as exc:
            raise ApiError(400, exc.message, param="messages", code="context_length_exceeded") from None

    def _turns(self, body: ChatCompletionRequest) -> list[ChatTurn]:
        """The messages as chat turns, within the limits, behind the persona's system prompt if none is given."""
        limits = self.limits
        if len(body.messages) > limits.max_messages:
            raise ApiError(400, f"too many messages (at most {limits.max_messages})", param="messages")
        texts = [message.text() for message in body.messages]
        if sum(len(text) for text in texts) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"the messages are too long (at most {limits.max_prompt_chars} characters in all)",
                param="messages",
                code="context_length_exceeded",
            )
        turns = [
            ChatTurn(role="system" if message.role == "developer" else message.role, content=text)
            for message, text in zip(body.messages, texts, strict=True)
        ]
        system_prompt = self.engine.system_prompt
        if system_prompt and not any(turn.role == "system" for turn in turns):
            turns.insert(0, ChatTurn(role="system", content=system_prompt))
        return turns

    def _sampling(self, body: ChatCompletionRequest) -> SamplingRequest:
        # Leave room for at least a small prompt inside the context window.
        cap = max(1, min(self.limits.max_tokens, self.engine.context_window // 2))
        requested = body.max_completion_tokens or body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        if requested is not None and requested > cap:
            raise ApiError(400, f"{param} is too large (at most {cap})", param=param)
        return SamplingRequest(
            temperature=sampling_defaults.TEMPERATURE if body.temperature is None else body.temperature,
            top_p=sampling_defaults.TOP_P if body.top_p is None else body.top_p,
            max_new_tokens=requested or min(self.limits.default_max_tokens, cap),
            seed=body.seed,
        )

    async def _start(self, prepared: _Prepared, request: Request) -> Generation:
        """The generation thread on the slot `prepared` holds; the thread releases the slot when it ends.
        A client that went away while queued gets no generation."""
        try:
            if await request.is_disconnected():
                log.info("client disconnected while queued; generation not started")
                raise ApiError(499, "the client closed the request before a generation slot was free")
            generation = Generation(
                self.engine,
                prepared.messages,
                prepared.sampling,
                stop_strings=prepared.stop_strings,
                time_limit_s=self.limits.generation_timeout_s,
                on_finished=self.admission.release,
                loop=asyncio.get_running_loop(),
            )
            generation.start()
        except BaseException:
            self.admission.release()
            raise
        return generation


async def _whole_reply(
    engine: ReplyEngine, generation: Generation, request: Request, prepared: _Prepared, completion_id: str
) -> dict[str, Any]:
    parts: list[str] = []
    try:
        async for piece in generation.pieces_until_done(request):
            parts.append(piece)
    except Exception as exc:
        raise _generation_error(exc) from None
    text = "".join(parts)
    usage = await asyncio.to_thread(_usage, engine, prepared, text)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": engine.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish_reason(generation, usage, prepared),
            }
        ],
        "usage": usage,
    }


async def _stream_events(
    engine: ReplyEngine,
    generation: Generation,
    request: Request,
    prepared: _Prepared,
    completion_id: str,
    created: int,
) -> AsyncIterator[str]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": engine.name,
            "choices": choices,
        }
        if prepared.include_usage:
            data["usage"] = usage  # null on every chunk but the last
        return data

    def delta(content: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return chunk([{"index": 0, "delta": content, "finish_reason": finish_reason}])

    parts: list[str] = []
    try:
        yield sse(delta({"role": "assistant", "content": ""}))
        try:
            async for piece in generation.pieces_until_done(request):
                parts.append(piece)
                yield sse(delta({"content": piece}))
        except Exception as exc:
            yield sse(_generation_error(exc).body())
            yield sse("[DONE]")
            return
        if await request.is_disconnected():
            return
        usage = await asyncio.to_thread(_usage, engine, prepared, "".join(parts))
        yield sse(delta({}, _finish_reason(generation, usage, prepared)))
        if prepared.include_usage:
            yield sse(chunk([], usage))
        yield sse("[DONE]")
    finally:
        generation.stop.set()


def _generation_error(exc: Exception) -> ApiError:
    if isinstance(exc, TwinbotError):  # a problem with the request's settings; its message has no text
        return ApiError(400, exc.message)
    log.error("generation failed (%s)", type(exc).__name__)  # not the message: it could quote input
    return ApiError(500, "generation failed; see the server log", error_type="server_error")


def _usage(engine: ReplyEngine, prepared: _Prepared, text: str) -> dict[str, int]:
    # The reply text re-encoded; that can differ slightly from the generated ids (special tokens, merges),
    # so it is capped at what the request allowed.
    completion = min(engine.count_tokens(text), prepared.sampling.max_new_tokens)
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prepared.prompt_tokens + completion,
    }


def _finish_reason(generation: Generation, usage: dict[str, int], prepared: _Prepared) -> str:
    """Why the reply ended: "stop" at a stop string or its natural end, "length" at max_tokens or at the
    time limit (the finish reason OpenAI clients already handle for a reply that was cut short)."""
    if generation.ended_by == "stop_string":
        return "stop"
    if generation.ended_by == "time_limit":
        return "length"
    return "length" if usage["completion_tokens"] >= prepared.sampling.max_new_tokens else "stop"


# ---- running the server ----


def api_key_from(
    flag: str | None, key_file: Path | None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The API key from exactly one of --api-key, --api-key-file and TWINBOT_API_KEY; None when none is
    given (an empty TWINBOT_API_KEY counts as not set). The key itself never appears in an error."""
    env_key = environ.get(API_KEY_ENV) or None
    sources = [
        name
        for name, value in (("--api-key", flag), ("--api-key-file", key_file), (API_KEY_ENV, env_key))
        if value is not None
    ]
    if len(sources) > 1:
        raise TwinbotError(
            f"the API key is given more than once ({' and '.join(sources)}); give it one way only "
            f"({API_KEY_ENV} or --api-key-file keep it out of the process list)"
        )
    if key_file is not None:
        key = _first_line(key_file)
    elif flag is not None or env_key is not None:
        key = (flag if flag is not None else env_key or "").strip()
    else:
        return None
    if not key:
        where = "the first line of --api-key-file" if key_file is not None else sources[0]
        raise TwinbotError(f"{where} is empty; give the key there, or no key at all to serve without one")
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise TwinbotError(
            f"the API key from {sources[0]} must be printable ASCII without spaces (clients send it in an "
            "HTTP header)"
        )
    return key


def _first_line(path: Path) -> str:
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError as exc:
        raise TwinbotError(
            f"cannot read the API key file: {exc.strerror or one_line(exc)}; give --api-key-file a readable "
            "text file",
            path=path,
        ) from None
    # Windows PowerShell writes UTF-16 (`>`) or UTF-8 with a byte order mark (`Set-Content -Encoding utf8`).
    # Undecodable bytes become U+FFFD, which the key check refuses.
    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    text = head.decode("utf-16" if utf16 else "utf-8-sig", errors="replace")
    return text.splitlines()[0].strip() if text else ""


def run_serve(
    run: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    max_concurrent: int = 8,
    max_queue: int = 16,
    device: str = "auto",
    allow_hosts: Sequence[str] = (),
    insecure_no_auth: bool = False,
    api_key_file: Path | None = None,
    limits: ServeLimits | None = None,
    backend: str = "auto",
    gguf_type: str | None = None,
) -> None:
    """`twinbot serve`: load RUN (or any spec load_for_inference accepts) on `backend` and serve it until
    Ctrl-C. The API key comes from `api_key` (--api-key), `api_key_file` or TWINBOT_API_KEY: one of them at
    most."""
    from twinbot.bot.backends import load_backend

    check_port(port)
    api_key = api_key_from(api_key, api_key_file)
    if not is_loopback(host) and api_key is None and not insecure_no_auth:
        raise TwinbotError(
            f"listening on {host} without an API key would let anyone who reaches this machine question a "
            f"model of your private chats; set {API_KEY_ENV} (or --api-key-file), or pass --insecure-no-auth"
        )
    Admission(max_concurrent, max_queue)  # validate the limits before the slow model load
    listener = _listen(host, port)  # a taken port fails at once, not after loading the model
    try:
        model = load_backend(backend, run, device=device, gguf_type=gguf_type)
        app = create_app(
            model.server_engine(),
            api_key=api_key,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            limits=limits,
            allowed_hosts=[host, *allow_hosts],
        )
        key_state = "set" if api_key else "not set"
        print(f"serving {model.name} at {shown_url(host, port)} (API key: {key_state}); Ctrl-C stops")
        if not is_loopback(host) and api_key is None:
            print(
                f"warning: listening on {host} without an API key: anyone who can reach this machine can "
                f"use the model; set {API_KEY_ENV} or --api-key-file"
            )
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
        serve_until_stopped(app, listener)
    finally:
        listener.close()
