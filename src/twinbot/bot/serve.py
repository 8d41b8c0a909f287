"""`twinbot serve`: an OpenAI-compatible chat server (FastAPI + uvicorn) and a small web chat page.

Endpoints: `POST /v1/chat/completions` (plain JSON or `stream: true` server-sent events, with `usage`),
`GET /v1/models`, `GET /health`, and the chat page at `/`. The wire format itself is in openai_api.py.

Generation runs in worker threads, never on the event loop. At most `max_concurrent` generations run at
once; up to `max_queue` more wait for a slot, and requests beyond that get 429. A client that goes away
(mid-stream or while waiting for a plain reply) stops its generation through the `stop` event.

Privacy: request bodies and message text are never logged, and the API key is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from twinbot.bot.openai_api import (
    ApiError,
    ChatCompletionRequest,
    new_completion_id,
    sse,
    validation_message,
)
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError, one_line

if TYPE_CHECKING:
    from twinbot.bot.generate import GenerationSettings
    from twinbot.bot.loading import LoadedModel

log = logging.getLogger("twinbot.bot.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "TWINBOT_API_KEY"
_DISCONNECT_POLL_S = 0.25


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on what one request may ask for."""

    max_tokens: int = 512  # reply tokens per request (also capped by the model's context window)
    default_max_tokens: int = 128
    max_prompt_chars: int = 32_000  # all message text of one request together
    max_messages: int = 256


@dataclass(frozen=True)
class SamplingRequest:
    """The generation settings of one request, before they become the inference API's GenerationSettings."""

    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int | None


class ReplyEngine(Protocol):
    """What the server needs from a model. `ModelEngine` wraps a LoadedModel; tests pass fakes."""

    name: str
    system_prompt: str | None
    context_window: int

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]: ...


class ModelEngine:
    """A ReplyEngine over twinbot.bot.generate."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.name = lm.name
        self.system_prompt = lm.system_prompt
        self.context_window = lm.context_window

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int:
        from twinbot.bot.generate import build_prompt_ids

        return len(build_prompt_ids(self.lm, messages, max_new_tokens))

    def count_tokens(self, text: str) -> int:
        return len(self.lm.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def settings(self, sampling: SamplingRequest) -> GenerationSettings:
        """The request's sampling over the default settings (the repetition penalty is not an API option)."""
        from twinbot.bot.generate import GenerationSettings

        return replace(
            GenerationSettings(),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]:
        from twinbot.bot.generate import stream_reply

        return stream_reply(self.lm, messages, self.settings(sampling), stop=stop)


# ---- admission: bounded concurrency with a bounded queue ----


class Admission:
    """At most `max_concurrent` generations run; at most `max_queue` wait; anything more is refused (429).

    A slot is released by the generation thread itself when it has really finished, so a client that
    disconnects does not free its slot while its generation is still winding down.
    """

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        if max_concurrent < 1 or max_queue < 0:
            raise TwinbotError("--max-concurrent must be at least 1 and --max-queue at least 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._free: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._free is None:
            self._free = asyncio.Condition()
        return self._free

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed. Raises ApiError(429) when the queue is full."""
        if self.running < self.max_concurrent and self.waiting == 0:
            self.running += 1
            return
        if self.waiting >= self.max_queue:
            raise ApiError(
                429,
                "the server is busy (all generation slots and queue places are taken); retry shortly",
                error_type="rate_limit_exceeded",
                code="rate_limit_exceeded",
            )
        free = self._condition()
        self.waiting += 1
        try:
            async with free:
                await free.wait_for(lambda: self.running < self.max_concurrent)
                self.running += 1
        finally:
            self.waiting -= 1

    async def release(self) -> None:
        free = self._condition()
        async with free:
            self.running -= 1
            free.notify()


# ---- generation off the event loop ----

_END = object()


@dataclass
class _Failure:
    error: BaseException


class Generation:
    """One reply generated in a worker thread; pieces are handed to the event loop through a queue."""

    def __init__(
        self,
        engine: ReplyEngine,
        messages: Sequence[ChatTurn],
        sampling: SamplingRequest,
        admission: Admission,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.stop = threading.Event()
        self.pieces: asyncio.Queue[object] = asyncio.Queue()
        self._engine = engine
        self._messages = list(messages)
        self._sampling = sampling
        self._admission = admission
        self._loop = loop
        self.thread = threading.Thread(target=self._run, name="twinbot-generation", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _put(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is shutting down
            self._loop.call_soon_threadsafe(self.pieces.put_nowait, item)

    def _run(self) -> None:
        pieces: Iterator[str] | None = None
        try:
            pieces = self._engine.stream(self._messages, self._sampling, self.stop)
            for piece in pieces:
                if self.stop.is_set():
                    break
                if piece:
                    self._put(piece)
            self._put(_END)
        except BaseException as exc:
            self._put(_Failure(exc))
        finally:
            close = getattr(pieces, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._admission.release(), self._loop)

    async def pieces_until_done(self, request: Request) -> AsyncIterator[str]:
        """The reply's pieces; stops the generation when the client disconnects or the consumer goes away."""
        next_check = time.monotonic() + _DISCONNECT_POLL_S
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.pieces.get(), timeout=_DISCONNECT_POLL_S)
                except TimeoutError:
                    item = None
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + _DISCONNECT_POLL_S
                    if await request.is_disconnected():
                        log.info("client disconnected; generation stopped")
                        return
                if item is None:
                    continue
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                assert isinstance(item, str)
                yield item
        finally:
            self.stop.set()


# ---- the app ----

_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# Host names every server answers to; `create_app(allowed_hosts=...)` adds the bound host and --allow-host.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def create_app(
    lm: LoadedModel | ReplyEngine,
    api_key: str | None = None,
    max_concurrent: int = 2,
    max_queue: int = 16,
    limits: ServeLimits | None = None,
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """The FastAPI app serving `lm` (a LoadedModel, or any ReplyEngine such as a test fake), answering
    requests addressed to a loopback name or one of `allowed_hosts` only."""
    engine: ReplyEngine = lm if _is_engine(lm) else ModelEngine(lm)  # type: ignore[arg-type]
    service = ChatService(
        engine=engine,
        admission=Admission(max_concurrent, max_queue),
        limits=limits or ServeLimits(),
        api_key=api_key,
        created=int(time.time()),
    )
    page = _web_page()
    app = FastAPI(title="twinbot", docs_url=None, redoc_url=None, openapi_url=None)
    _answer_errors_in_openai_shape(app)
    app.add_middleware(_SameSiteOnly, allowed_hosts=LOOPBACK_NAMES | {host.lower() for host in allowed_hosts})
    _add_routes(app, service, page)
    return app


class _SameSiteOnly:
    """What a web page in the user's browser must not do to a local server: read replies through a host
    name of its own that resolves to this machine (DNS rebinding: the Host header names that site), or
    start generations with a cross-site form or `text/plain` POST (no preflight; JSON needs one).
    Plain ASGI, so that a client's disconnect still reaches the routes."""

    def __init__(self, app: Any, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {
                key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]
            }
            refusal = self._refusal(scope["method"], headers)
            if refusal is not None:
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, method: str, headers: dict[str, str]) -> ApiError | None:
        if host_name(headers.get("host", "")) not in self.allowed_hosts:
            return ApiError(
                421,
                "this server answers requests addressed to its own host names only; start it with "
                "--allow-host NAME to add the name you use",
                code="host_not_allowed",
            )
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and media_type != "application/json":
            return ApiError(415, "the request body must be JSON (Content-Type: application/json)")
        return None


def host_name(header: str) -> str:
    """The host of a Host header, without its port or IPv6 brackets, lower-cased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, _, _ = header.partition(":") if header.count(":") == 1 else (header, "", "")
    return name


def _is_engine(candidate: object) -> bool:
    return callable(getattr(candidate, "stream", None)) and callable(
        getattr(candidate, "count_prompt_tokens", None)
    )


def _web_page() -> str:
    return importlib.resources.files("twinbot.bot").joinpath("web/index.html").read_text(encoding="utf-8")


def _answer_errors_in_openai_shape(app: FastAPI) -> None:
    """Our errors, invalid requests and FastAPI's own HTTP errors (404, 405...) all answer ApiError bodies."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc.errors())
        return ApiError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), error_type=error_type).response()


def _add_routes(app: FastAPI, service: ChatService, page: str) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

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
        generation = await self._start(prepared)
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
        raw = await _read_json_body(request, max_bytes=4 * self.limits.max_prompt_chars + 65_536)
        try:
            return ChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            message, param = validation_message(exc.errors())
            raise ApiError(400, message, param=param) from None

    async def _prepare(self, body: ChatCompletionRequest) -> _Prepared:
        turns = self._turns(body)
        sampling = self._sampling(body)
        try:
            prompt_tokens = await asyncio.to_thread(
                self.engine.count_prompt_tokens, turns, sampling.max_new_tokens
            )
        except TwinbotError as exc:
            raise ApiError(400, exc.message, param="messages", code="context_length_exceeded") from None
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _Prepared(turns, sampling, prompt_tokens, include_usage)

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
            temperature=0.7 if body.temperature is None else body.temperature,
            top_p=0.9 if body.top_p is None else body.top_p,
            max_new_tokens=requested or min(self.limits.default_max_tokens, cap),
            seed=body.seed,
        )

    async def _start(self, prepared: _Prepared) -> Generation:
        """A generation slot (waiting in the queue, or 429 when it is full), then the generation thread."""
        await self.admission.acquire()
        generation = Generation(
            self.engine, prepared.messages, prepared.sampling, self.admission, asyncio.get_running_loop()
        )
        try:
            generation.start()
        except BaseException:
            await self.admission.release()
            raise
        return generation


async def _read_json_body(request: Request, max_bytes: int) -> Any:
    """The JSON body, refusing (413) bodies over `max_bytes` before reading them whole."""
    too_large = ApiError(413, f"the request body is too large (at most {max_bytes} bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise too_large
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None


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
                "finish_reason": _finish_reason(usage, prepared),
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
        yield sse(delta({}, _finish_reason(usage, prepared)))
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


def _finish_reason(usage: dict[str, int], prepared: _Prepared) -> str:
    return "length" if usage["completion_tokens"] >= prepared.sampling.max_new_tokens else "stop"


# ---- running the server ----


def _allow_quick_rebind(sock: socket.socket) -> None:
    # On Windows SO_REUSEADDR would let two servers share a port; elsewhere it only skips TIME_WAIT.
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerThread:
    """uvicorn serving `app` on a free (or given) port in a background thread; for tests and benchmarks.

    with ServerThread(app) as server: ... server.base_url ...
    """

    def __init__(self, app: FastAPI, host: str = DEFAULT_HOST, port: int = 0) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        _allow_quick_rebind(self.socket)
        self.socket.bind((host, port))
        self.socket.listen(128)
        self.host = host
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


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
        with path.open(encoding="utf-8") as file:
            return file.readline(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise TwinbotError(
            f"cannot read the API key file: {reason}; give --api-key-file a readable UTF-8 text file",
            path=path,
        ) from None


def run_serve(
    run: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    max_concurrent: int = 2,
    max_queue: int = 16,
    device: str = "auto",
    allow_hosts: Sequence[str] = (),
    insecure_no_auth: bool = False,
    api_key_file: Path | None = None,
) -> None:
    """`twinbot serve`: load RUN (or any spec load_for_inference accepts) and serve it until Ctrl-C.
    The API key comes from `api_key` (--api-key), `api_key_file` or TWINBOT_API_KEY: one of them at most."""
    import uvicorn

    from twinbot.bot.loading import load_for_inference

    if not 1 <= port <= 65535:
        raise TwinbotError("--port must be between 1 and 65535")
    api_key = api_key_from(api_key, api_key_file)
    if not is_loopback(host) and api_key is None and not insecure_no_auth:
        raise TwinbotError(
            f"listening on {host} without an API key would let anyone who reaches this machine question a "
            f"model of your private chats; set {API_KEY_ENV} (or --api-key-file), or pass --insecure-no-auth"
        )
    Admission(max_concurrent, max_queue)  # validate the limits before the slow model load
    listener = _listen(host, port)  # a taken port fails at once, not after loading the model
    try:
        lm = load_for_inference(run, device=device)
        app = create_app(
            lm,
            api_key=api_key,
            max_concurrent=max_concurrent,
            max_queue=max_queue,
            allowed_hosts=[host, *allow_hosts],
        )
        shown_host = f"[{host}]" if ":" in host else host
        key_state = "set" if api_key else "not set"
        print(f"serving {lm.name} at http://{shown_host}:{port}/ (API key: {key_state}); Ctrl-C stops")
        if not is_loopback(host) and api_key is None:
            print(
                f"warning: listening on {host} without an API key: anyone who can reach this machine can "
                f"use the model; set {API_KEY_ENV} or --api-key-file"
            )
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="info", lifespan="off", timeout_graceful_shutdown=5)
        )
        server.run(sockets=[listener])
    finally:
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """A bound listening socket, so a taken port or a bad host is one clear error before serving."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        _allow_quick_rebind(listener)
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        raise TwinbotError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; try another --port"
        ) from exc
    return listener
