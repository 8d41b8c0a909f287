"""The web chat page at `/`, driven in headless Chromium over the DevTools protocol: type, send, read the reply.

Needs Debian's `chromium` (installed by `make test`); skipped with a reason where it is absent.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_serve import FakeEngine
from twinbot.bot.serve import ServerThread, create_app

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`make test` installs it)"
)

REPLY = "sounds good, see you at eight"


class DevTools:
    """A minimal Chrome DevTools protocol client for one page."""

    def __init__(self, websocket_url: str) -> None:
        import websocket

        self.socket = websocket.create_connection(websocket_url, timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def type_into(self, element_id: str, text: str) -> None:
        self.evaluate(f"document.getElementById({json.dumps(element_id)}).focus()")
        self.call("Input.insertText", text=text)

    def click(self, element_id: str) -> None:
        box = self.evaluate(
            f"(() => {{ const r = document.getElementById({json.dumps(element_id)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            )

    def bubbles(self) -> list[list[str]]:
        return self.evaluate(
            "[...document.querySelectorAll('.msg')].map(e => [e.className, e.textContent, e.dataset.state || ''])"
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.socket.close()


@contextlib.contextmanager
def browser_page(
    url: str, profile: Path, ready: str = "!!document.getElementById('prompt')"
) -> Iterator[DevTools]:
    """Headless Chromium on `url`, once the page is loaded and the JavaScript expression `ready` is true."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        url,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    devtools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            assert process.poll() is None, f"chromium exited with code {process.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        page = None
        while page is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                targets = json.load(response)
            page = next((t for t in targets if t.get("type") == "page" and t["url"].startswith(url)), None)
            if page is None:
                assert time.monotonic() < deadline, "chromium did not open the page"
                time.sleep(0.05)
        devtools = DevTools(page["webSocketDebuggerUrl"])
        devtools.wait_for(f"document.readyState === 'complete' && ({ready})")
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


LAST_REPLY_DONE = (
    "(() => { const r = [...document.querySelectorAll('.msg.assistant, .msg.error')].pop();"
    " return !!r && ['done', 'error'].includes(r.dataset.state); })()"
)


def test_type_a_message_and_read_the_streamed_reply(tmp_path: Path) -> None:
    engine = FakeEngine(reply=REPLY, delay=0.02, system_prompt="You are Sam.")
    with ServerThread(create_app(engine)) as server, browser_page(server.base_url + "/", tmp_path) as page:
        page.wait_for("document.getElementById('model').textContent === 'fake-twin'")
        page.type_into("prompt", "dinner tonight?")
        page.click("send")
        page.wait_for(LAST_REPLY_DONE)
        assert page.bubbles() == [["msg user", "dinner tonight?", ""], ["msg assistant", REPLY, "done"]]
        # A second turn sent with Enter carries the conversation so far.
        page.type_into("prompt", "great")
        page.press_enter()
        page.wait_for("document.querySelectorAll('.msg.assistant').length === 2")
        page.wait_for(LAST_REPLY_DONE)
        assert page.bubbles()[-1] == ["msg assistant", REPLY, "done"]
        assert page.evaluate("document.getElementById('prompt').value") == ""
    assert [turn.content for turn in engine.calls[0][0]] == ["You are Sam.", "dinner tonight?"]
    assert [(t.role, t.content) for t in engine.calls[1][0]] == [
        ("system", "You are Sam."),
        ("user", "dinner tonight?"),
        ("assistant", REPLY),
        ("user", "great"),
    ]


def test_page_with_an_api_key_kept_in_session_storage(tmp_path: Path) -> None:
    engine = FakeEngine(reply=REPLY)
    app = create_app(engine, api_key="page-key-42")
    with ServerThread(app) as server, browser_page(server.base_url + "/", tmp_path) as page:
        page.type_into("prompt", "hi")
        page.click("send")
        page.wait_for(LAST_REPLY_DONE)
        [error] = page.bubbles()[1:]
        assert error[0] == "msg error" and "API key" in error[1]
        page.type_into("apikey", "page-key-42")
        page.type_into("prompt", "hi again")
        page.click("send")
        page.wait_for(LAST_REPLY_DONE)
        assert page.bubbles()[-1] == ["msg assistant", REPLY, "done"]
        assert page.evaluate("sessionStorage.getItem('twinbot-api-key')") == "page-key-42"
        assert page.evaluate("localStorage.length") == 0
    assert len(engine.calls) == 1
    # The refused turn was dropped from the history; only the answered one reached the model.
    assert [turn.content for turn in engine.calls[0][0]] == ["hi again"]
