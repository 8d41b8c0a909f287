"""The HTTP stack every local twinbot server shares (`serve`, `eval --blind`): the app with its protections,
JSON error bodies, bounded JSON bodies, page headers, and listening (for the CLI and, in a thread, tests).

Protections (`protected_app`): requests addressed to a host name other than a loopback name, the bound host
or an --allow-host name are refused (421, DNS rebinding), and so are POSTs that are not JSON (415: a
cross-site form or `text/plain` POST needs no CORS preflight). Pages get a strict Content-Security-Policy:
no external resources, no framing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from twinbot.bot.openai_api import ApiError, validation_message
from twinbot.errors import TwinbotError

DEFAULT_HOST = "127.0.0.1"

# Host names every server answers to; `protected_app(allowed_hosts=...)` adds the bound host and --allow-host.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def protected_app(title: str, allowed_hosts: Iterable[str] = ()) -> FastAPI:
    """A FastAPI app without docs routes, answering errors as `{"error": {...}}` bodies and requests
    addressed to a loopback name or one of `allowed_hosts` only."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    answer_errors_as_json(app)
    app.add_middleware(SameSiteOnly, allowed_hosts=LOOPBACK_NAMES | {host.lower() for host in allowed_hosts})
    return app


def page_response(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers=PAGE_HEADERS)


class SameSiteOnly:
    """What a web page in the user's browser must not do to a local server: read replies through a host
    name of its own that resolves to this machine (DNS rebinding: the Host header names that site), or
    start work with a cross-site form or `text/plain` POST (no preflight; JSON needs one).
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


def answer_errors_as_json(app: FastAPI) -> None:
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


async def read_json_body(request: Request, max_bytes: int, timeout_s: float) -> Any:
    """The JSON body, refusing (413) bodies over `max_bytes` before reading them whole, and (408) bodies
    that take more than `timeout_s` seconds to arrive."""
    too_large = ApiError(413, f"the request body is too large (at most {max_bytes} bytes)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise too_large
    except TimeoutError:
        raise ApiError(
            408,
            f"the request body did not arrive within {timeout_s:g} seconds",
            code="request_timeout",
            headers={"Connection": "close"},  # the rest of the body is not wanted
        ) from None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None


# ---- listening ----


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise TwinbotError("--port must be between 1 and 65535")


def listen(host: str, port: int) -> socket.socket:
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


def serve_until_stopped(app: FastAPI, listener: socket.socket) -> None:
    """uvicorn serving `app` on `listener` until Ctrl-C (request lines logged without bodies)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, log_level="info", lifespan="off", timeout_graceful_shutdown=5)
    )
    server.run(sockets=[listener])


def _allow_quick_rebind(sock: socket.socket) -> None:
    # On Windows SO_REUSEADDR would let two servers share a port; elsewhere it only skips TIME_WAIT.
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


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
