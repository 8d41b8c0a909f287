"""The web page and JSON API of `twinbot eval RUN --blind`, on the same HTTP stack as `twinbot serve`
(bot/local_http.py: Host allow-list, JSON-only POSTs, strict page headers, loopback by default).

    GET  /                               the page (quality/web/blind.html; no external resources)
    GET  /api/info                       the persona's name, the mode, the number of questions
    POST /api/sessions                   {"seed": N?} -> the session, its first question
    POST /api/sessions/{id}/answers      {"question": i, "choice": 0|1 or "real"|"twin"} -> right or not, the
                                         right choice, the score so far, the next question
    POST /api/sessions/{id}/finish       {} -> ends the session early; the final score

A question holds the context and the reply texts only: which reply is real is kept on the server until the
question is answered. Bound to an address other than loopback, the API needs the access key printed with
the page's address (`#key=...`: the fragment never reaches the server's logs or a Referer header).
"""

from __future__ import annotations

import hmac
import importlib.resources
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from twinbot.bot.local_http import (
    DEFAULT_HOST,
    check_port,
    is_loopback,
    listen,
    page_response,
    protected_app,
    read_json_body,
    serve_until_stopped,
    shown_url,
)
from twinbot.bot.openai_api import ApiError, validation_message
from twinbot.quality.blind import (
    BlindItem,
    BlindLog,
    BlindMode,
    BlindRequestError,
    BlindSession,
    blind_log_path,
    check_mode,
    persona_name,
    plan_questions,
    read_eval_rows,
)

DEFAULT_BLIND_PORT = 8001  # beside `twinbot serve`'s 8000
MAX_SESSIONS = 256  # kept in memory; the oldest is dropped (its answers stay in blind.json)
_BODY_LIMIT = 4096
_BODY_TIMEOUT_S = 30.0


class _StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = Field(default=None, ge=0, lt=2**63)


class _AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: int = Field(ge=0)
    choice: StrictInt | StrictStr  # checked by the session for its mode; not 1.0 or true for 1


class _FinishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlindTest:
    """The questions of one RUN and the sessions being played, apart from the HTTP routing."""

    def __init__(
        self, items: Sequence[BlindItem], mode: BlindMode, name: str, log: BlindLog, access_key: str | None
    ) -> None:
        self.items = {item.row: item for item in items}
        self.mode = check_mode(mode)
        self.name = name
        self.log = log
        self.access_key = access_key
        self.sessions: OrderedDict[str, BlindSession] = OrderedDict()

    def check_key(self, request: Request) -> None:
        if self.access_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.access_key.encode()
        ):
            raise ApiError(
                401,
                "missing or wrong access key; open the address with #key=... that `twinbot eval --blind` printed",
                code="invalid_access_key",
            )

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "total": len(self.items)}

    def start(self, seed: int | None) -> dict[str, Any]:
        seed = secrets.randbelow(2**63) if seed is None else seed
        session = BlindSession(
            id=secrets.token_urlsafe(12),
            mode=self.mode,
            seed=seed,
            questions=plan_questions(sorted(self.items), self.mode, seed),
        )
        self.sessions[session.id] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return {
            "session": session.id,
            "seed": seed,
            "mode": self.mode,
            "name": self.name,
            "total": len(session.questions),
            "question": session.question(0, self.items),
        }

    def answer(self, session_id: str, index: int, choice: int | str) -> dict[str, Any]:
        session = self._session(session_id)
        try:
            answer = session.answer(index, choice)
        except BlindRequestError as exc:
            raise ApiError(exc.status, exc.message, param="choice" if exc.status == 400 else None) from None
        self.log.save(session)
        following = session.current()
        return {
            "correct": answer.correct,
            "solution": session.solution(index),
            "answered": len(session.answers),
            "finished": session.finished,
            "score": asdict(session.score()),
            "next": None if following is None else session.question(following, self.items),
        }

    def finish(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        session.finish()
        if session.answers:  # a session left before its first answer leaves no entry
            self.log.save(session)
        return {"finished": True, "answered": len(session.answers), "score": asdict(session.score())}

    def _session(self, session_id: str) -> BlindSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(
                404,
                "no such session (the server may have restarted); start a new one",
                error_type="not_found_error",
            )
        return session


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await read_json_body(request, max_bytes=_BODY_LIMIT, timeout_s=_BODY_TIMEOUT_S)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise ApiError(400, message, param=param) from None


def create_blind_app(test: BlindTest, allowed_hosts: Sequence[str] = ()) -> FastAPI:
    app = protected_app("twinbot blind test", allowed_hosts)
    page = _blind_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return page_response(page)

    @app.get("/api/info")
    async def info(request: Request) -> dict[str, Any]:
        test.check_key(request)
        return test.info()

    @app.post("/api/sessions")
    async def start(request: Request) -> dict[str, Any]:
        test.check_key(request)
        body: _StartRequest = await _body(request, _StartRequest)
        return test.start(body.seed)

    @app.post("/api/sessions/{session_id}/answers")
    async def answer(session_id: str, request: Request) -> dict[str, Any]:
        test.check_key(request)
        body: _AnswerRequest = await _body(request, _AnswerRequest)
        return test.answer(session_id, body.question, body.choice)

    @app.post("/api/sessions/{session_id}/finish")
    async def finish(session_id: str, request: Request) -> dict[str, Any]:
        test.check_key(request)
        await _body(request, _FinishRequest)
        return test.finish(session_id)

    return app


def _blind_page() -> str:
    return importlib.resources.files("twinbot.quality").joinpath("web/blind.html").read_text(encoding="utf-8")


def load_blind_test(run_dir: Path, mode: BlindMode, access_key: str | None = None) -> BlindTest:
    """The blind test of RUN from its eval.json; a one-line TwinbotError when there is none to play."""
    items, data_dir = read_eval_rows(run_dir)
    return BlindTest(
        items, mode, persona_name(run_dir, data_dir), BlindLog(blind_log_path(run_dir)), access_key
    )


def run_blind(
    run_dir: Path,
    mode: str = "pair",
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_BLIND_PORT,
    allow_hosts: Sequence[str] = (),
) -> None:
    """`twinbot eval RUN --blind [pair|single]`: serve the blind test until Ctrl-C."""
    blind_mode = check_mode(mode)
    check_port(port)
    # The page shows private messages: beyond this machine, only to whoever gets the printed key.
    access_key = None if is_loopback(host) else secrets.token_urlsafe(18)
    test = load_blind_test(run_dir, blind_mode, access_key)
    listener = listen(host, port)
    try:
        app = create_blind_app(test, allowed_hosts=[host, *allow_hosts])
        address = shown_url(host, port) + (f"#key={access_key}" if access_key else "")
        print(
            f"blind test ({mode}, {len(test.items)} questions) at {address}; answers go to "
            f"{test.log.path}; Ctrl-C stops"
        )
        if access_key:
            print("the page shows your private messages: give this address only to the people who play")
        serve_until_stopped(app, listener)
    finally:
        listener.close()
