"""`twinbot serve`: the OpenAI-compatible API, tested with the official `openai` client over loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from twinbot.bot.engine import SamplingRequest
from twinbot.bot.serve import ServeLimits, ServerThread, create_app
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError

PRIVATE = "my-private-words-7781"  # must never come back in an error message


class FakeEngine:
    """A ReplyEngine that streams the words of `reply`, `delay` seconds per word, counting what it made
    and how many prompts it tokenized."""

    def __init__(
        self, reply: str = "hey there, how are you", delay: float = 0.0, system_prompt: str | None = None
    ) -> None:
        self.name = "fake-twin"
        self.system_prompt = system_prompt
        self.context_window = 512
        self.reply = reply
        self.delay = delay
        self.calls: list[tuple[list[ChatTurn], SamplingRequest]] = []
        self.generated = 0
        self.started = threading.Event()
        self.finished = threading.Event()
        self.saw_stop = False
        self.threads: list[str] = []
        self.prompts_tokenized = 0

    def server_engine(self) -> FakeEngine:  # a backend's engine for `twinbot serve`: itself
        return self

    def count_prompt_tokens(self, messages: Sequence[ChatTurn], max_new_tokens: int) -> int:
        self.prompts_tokenized += 1
        return sum(len(turn.content.split()) + 3 for turn in messages)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]:
        self.calls.append((list(messages), sampling))
        self.threads.append(threading.current_thread().name)
        self.started.set()
        try:
            for index, word in enumerate(self.reply.split(" ")[: sampling.max_new_tokens]):
                if stop.is_set():
                    self.saw_stop = True
                    return
                time.sleep(self.delay)
                self.generated += 1
                yield word if index == 0 else " " + word
        finally:
            self.saw_stop = self.saw_stop or stop.is_set()
            self.finished.set()


def serve(engine: FakeEngine, **kwargs: object) -> ServerThread:
    return ServerThread(create_app(engine, **kwargs))  # type: ignore[arg-type]


def client(server: ServerThread, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def plain_and_streamed(
    api: openai.OpenAI, model: str, messages: list[dict[str, str]]
) -> tuple[Any, list[Any], str]:
    """The same seeded request asked plainly and streamed (with usage): (plain reply, chunks, streamed text)."""
    plain = api.chat.completions.create(
        model=model, messages=messages, temperature=1.0, seed=7, max_tokens=12
    )
    chunks = list(
        api.chat.completions.create(
            model=model,
            messages=messages,
            temperature=1.0,
            seed=7,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return plain, chunks, streamed


def test_reply_with_usage_and_the_runs_system_prompt() -> None:
    engine = FakeEngine(system_prompt="You are Sam.")
    with serve(engine) as server:
        result = client(server).chat.completions.create(
            model="whatever",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0,
            max_tokens=50,
            seed=3,
        )
    assert result.object == "chat.completion"
    assert result.model == "fake-twin"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content == "hey there, how are you"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6 + 4, 5)
    assert result.usage.total_tokens == 15
    messages, sampling = engine.calls[0]
    assert messages == [ChatTurn("system", "You are Sam."), ChatTurn("user", "hi")]
    assert sampling == SamplingRequest(temperature=0.0, top_p=0.9, max_new_tokens=50, seed=3)
    assert engine.threads[0] != threading.main_thread().name


def test_client_system_prompt_replaces_the_runs_and_max_tokens_gives_length() -> None:
    engine = FakeEngine(system_prompt="You are Sam.")
    with serve(engine) as server:
        result = client(server).chat.completions.create(
            model="x",
            messages=[
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "you"}],
                },
            ],
            max_completion_tokens=2,
        )
    assert result.choices[0].message.content == "hey there,"
    assert result.choices[0].finish_reason == "length"
    assert engine.calls[0][0] == [ChatTurn("system", "Be brief."), ChatTurn("user", "hi you")]


def test_pieces_further_apart_than_the_flush_interval_are_chunks_of_their_own() -> None:
    from twinbot.bot.engine import FLUSH_S

    with serve(FakeEngine(delay=FLUSH_S + 0.02)) as server:
        stream = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        contents = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert [text for text in contents if text] == ["hey", " there,", " how", " are", " you"]


def test_stream_chunks_usage_and_done() -> None:
    engine = FakeEngine()
    with serve(engine) as server:
        stream = client(server).chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        with httpx.stream(
            "POST",
            server.base_url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        ) as raw:
            assert raw.headers["content-type"].startswith("text/event-stream")
            events = raw.read().decode().split("\n\n")
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "hey there, how are you"
    contents = [
        chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content
    ]
    assert (
        contents[0] == "hey" and len(contents) <= 5
    )  # the first piece at once, the rest within FLUSH_S together
    finishing = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishing[-1] == "stop" and set(finishing[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 5)
    assert all(chunk.usage is None for chunk in chunks[:-1])
    # Raw wire format: `data: {json}` events ending with `data: [DONE]`; no usage chunk unless asked.
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(event.startswith("data: ") for event in events[:-2])
    assert all(payload["choices"] for payload in payloads) and "usage" not in payloads[0]


def test_models_health_and_page() -> None:
    with serve(FakeEngine()) as server:
        models = client(server).models.list()
        health = httpx.get(server.base_url + "/health").json()
        page = httpx.get(server.base_url + "/")
    assert [model.id for model in models.data] == ["fake-twin"]
    assert health["status"] == "ok" and health["model"] == "fake-twin" and health["auth"] is False
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="prompt"' in page.text and "/v1/chat/completions" in page.text
    # No external resources: nothing loaded from another origin, and the CSP forbids it anyway.
    assert "http://" not in page.text and "https://" not in page.text and "src=" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_api_key_required_on_the_api_but_not_for_health() -> None:
    engine = FakeEngine()
    with serve(engine, api_key="k-123") as server:
        for key in ("wrong", "k-1234", "k-12"):
            with pytest.raises(openai.AuthenticationError) as caught:
                client(server, api_key=key).chat.completions.create(
                    model="x", messages=[{"role": "user", "content": "hi"}]
                )
            assert caught.value.status_code == 401
            assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        assert httpx.post(server.base_url + "/v1/chat/completions", json={}).status_code == 401
        assert httpx.get(server.base_url + "/v1/models").status_code == 401
        assert httpx.get(server.base_url + "/health").status_code == 200
        good = client(server, api_key="k-123")
        assert good.models.list().data[0].id == "fake-twin"
        reply = good.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hey there, how are you"
    assert len(engine.calls) == 1  # refused requests never reached the model


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": PRIVATE}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": PRIVATE}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 100_000}, "max_tokens"),
        ({"messages": [{"role": "user", "content": PRIVATE}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": PRIVATE}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": PRIVATE * 100}]}, "messages"),
        ({"messages": [{"role": "user", "content": PRIVATE}] * 20}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": PRIVATE}]}]}, None),
        ({"messages": "hi " + PRIVATE}, "messages"),
    ],
)
def test_invalid_requests_get_openai_shaped_400_without_message_text(body: dict, param: str | None) -> None:
    engine = FakeEngine()
    limits = ServeLimits(max_tokens=64, max_prompt_chars=1000, max_messages=10)
    with serve(engine, limits=limits) as server:
        response = httpx.post(server.base_url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    assert PRIVATE not in response.text
    assert engine.calls == []


def test_bad_json_and_unknown_route() -> None:
    with serve(FakeEngine()) as server:
        bad = httpx.post(
            server.base_url + "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        missing = httpx.get(server.base_url + "/v1/nothing")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def test_web_pages_cannot_use_the_server_through_another_host_name_or_a_simple_post() -> None:
    """DNS rebinding (a page's own host name resolving to 127.0.0.1) sends that name as Host: refused with
    421 before any route runs; a cross-site form or text/plain POST (no CORS preflight) is refused with 415."""
    engine = FakeEngine()
    url = "/v1/chat/completions"
    with serve(engine) as server:
        rebound = httpx.post(server.base_url + url, json=BODY, headers={"host": "attacker.example:8000"})
        page = httpx.get(server.base_url + "/", headers={"host": "attacker.example"})
        plain = httpx.post(
            server.base_url + url, content=json.dumps(BODY), headers={"content-type": "text/plain"}
        )
        form = httpx.post(server.base_url + url, data={"messages": "hi"})
        for name in ("localhost", "127.0.0.1", "[::1]"):
            assert httpx.get(server.base_url + "/health", headers={"host": f"{name}:8000"}).status_code == 200
        ok = httpx.post(server.base_url + url, json=BODY)
        ok_with_charset = httpx.post(
            server.base_url + url,
            content=json.dumps(BODY),
            headers={"content-type": "application/json; charset=utf-8"},
        )
    assert rebound.status_code == page.status_code == 421
    assert (
        rebound.json()["error"]["code"] == "host_not_allowed"
        and "--allow-host" in rebound.json()["error"]["message"]
    )
    assert plain.status_code == form.status_code == 415
    assert ok.status_code == ok_with_charset.status_code == 200
    assert len(engine.calls) == 2  # the refused requests never reached the model


def test_deep_nesting_and_unbounded_seeds_are_clear_400s() -> None:
    engine = FakeEngine()
    with serve(engine) as server:
        url = server.base_url + "/v1/chat/completions"
        nested = httpx.post(
            url, content=b"[" * 20_000 + b"]" * 20_000, headers={"content-type": "application/json"}
        )
        huge_seed = httpx.post(url, json={**BODY, "seed": 2**70})
        fine_seed = httpx.post(url, json={**BODY, "seed": -(2**63)})
    assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]["message"]
    assert huge_seed.status_code == 400 and huge_seed.json()["error"]["param"] == "seed"
    assert fine_seed.status_code == 200 and len(engine.calls) == 1


def test_allowed_host_names_are_answered() -> None:
    with serve(FakeEngine(), allowed_hosts=["Twin.Lan"]) as server:
        answered = httpx.get(server.base_url + "/health", headers={"host": "twin.lan:8000"})
        other = httpx.get(server.base_url + "/health", headers={"host": "other.lan"})
    assert answered.status_code == 200 and other.status_code == 421


def _stream_in_background(server: ServerThread, results: list[str]) -> threading.Thread:
    def consume() -> None:
        stream = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=64
        )
        results.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    return thread


def test_full_queue_gets_429_and_the_loop_stays_responsive() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 30), delay=0.02)
    with serve(engine, max_concurrent=1, max_queue=1) as server:
        results: list[str] = []
        first = _stream_in_background(server, results)
        assert engine.started.wait(10)
        second = _stream_in_background(server, results)  # waits in the queue
        deadline = time.monotonic() + 5
        while httpx.get(server.base_url + "/health").json()["queued"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        health = httpx.get(server.base_url + "/health").json()
        assert time.monotonic() - started < 0.5  # generation does not block the event loop
        assert (health["running"], health["queued"]) == (1, 1)
        with pytest.raises(openai.RateLimitError) as caught:
            client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 429
        first.join(10)
        second.join(10)
        assert results == [" ".join(["word"] * 30)] * 2
        # Slots come back: a new request is served once the others are done.
        reply = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content
    assert len(engine.calls) == 3


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("how", "hey there, "),
        (["zzz", " are", "there"], "hey "),  # the earliest of several
        ("re, ho", "hey the"),  # across the pieces " there," and " how"
        ("there, hx", "hey there, how are you"),  # held back, then sent: not a stop string after all
    ],
)
def test_stop_strings_end_the_reply_before_them(stop: str | list[str], expected: str) -> None:
    engine = FakeEngine()
    with serve(engine) as server:
        api = client(server)
        messages = [{"role": "user", "content": "hi"}]
        plain = api.chat.completions.create(model="x", messages=messages, stop=stop)
        chunks = list(api.chat.completions.create(model="x", messages=messages, stop=stop, stream=True))
    assert plain.choices[0].message.content == expected
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None and plain.usage.completion_tokens == len(expected.split())
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices]
    assert "".join(piece or "" for piece in pieces) == expected
    assert "" not in pieces[1:-1]  # no empty content chunks for held-back text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_stop_string_stops_the_generation_itself() -> None:
    engine = FakeEngine(reply="one two three " + " ".join(["word"] * 200), delay=0.01)
    with serve(engine) as server:
        reply = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], stop=[" three"], max_tokens=200
        )
        assert engine.finished.wait(5)
    assert reply.choices[0].message.content == "one two"
    assert engine.saw_stop and engine.generated < 100


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], "", ["ok", ""], "x" * 65, 7])
def test_bad_stop_parameters_are_openai_shaped_400s(stop: object) -> None:
    engine = FakeEngine()
    with serve(engine) as server:
        response = httpx.post(server.base_url + "/v1/chat/completions", json={**BODY, "stop": stop})
        with pytest.raises(openai.BadRequestError):
            client(server).chat.completions.create(model="x", messages=BODY["messages"], stop=stop)  # type: ignore[arg-type]
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == "stop"
    assert engine.calls == [] and engine.prompts_tokenized == 0


def _wait_for_load(server: ServerThread, running: int, queued: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        health = httpx.get(server.base_url + "/health").json()
        if (health["running"], health["queued"]) == (running, queued):
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.01)


def test_a_full_queue_is_refused_before_any_tokenizer_work() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 40), delay=0.05)
    with serve(engine, max_concurrent=1, max_queue=1) as server:
        results: list[str] = []
        first = _stream_in_background(server, results)
        assert engine.started.wait(10)
        second = _stream_in_background(server, results)
        _wait_for_load(server, running=1, queued=1)
        assert engine.prompts_tokenized == 2
        refused = httpx.post(server.base_url + "/v1/chat/completions", json=BODY)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.headers["retry-after"].isdigit()
        assert engine.prompts_tokenized == 2  # the refused request's prompt was never tokenized
        first.join(10)
        second.join(10)
    assert len(results) == 2 and len(engine.calls) == 2


def test_waiting_too_long_for_a_slot_is_a_503_with_retry_after() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 40), delay=0.08)
    limits = ServeLimits(queue_timeout_s=0.3)
    with serve(engine, max_concurrent=1, max_queue=4, limits=limits) as server:
        results: list[str] = []
        first = _stream_in_background(server, results)
        assert engine.started.wait(10)
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        waited = time.monotonic() - started
        assert caught.value.status_code == 503 and 0.3 <= waited < 2.5  # the running reply takes 3.2 s
        assert caught.value.response.headers["retry-after"].isdigit()
        error = caught.value.response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("server_error", "queue_timeout")
        _wait_for_load(server, running=1, queued=0)  # its queue place is given back
        first.join(10)
        _wait_for_load(server, running=0, queued=0)
    assert results == [" ".join(["word"] * 40)] and len(engine.calls) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_generation_time_limit_returns_the_reply_so_far_with_length(stream: bool) -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 200), delay=0.02)
    limits = ServeLimits(generation_timeout_s=0.4)
    with serve(engine, max_concurrent=1, max_queue=0, limits=limits) as server:
        started = time.monotonic()
        request = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
        if stream:
            chunks = list(client(server).chat.completions.create(**request, stream=True))
            text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
            finish_reason = chunks[-1].choices[0].finish_reason
        else:
            reply = client(server).chat.completions.create(**request)
            text, finish_reason = reply.choices[0].message.content or "", reply.choices[0].finish_reason
        elapsed = time.monotonic() - started
        assert engine.finished.wait(5)
        _wait_for_load(server, running=0, queued=0)  # the slot is free again
    assert 0.4 <= elapsed < 3.0  # 4 s without the limit
    assert finish_reason == "length"
    assert text.startswith("word") and set(text.split()) == {"word"} and len(text.split()) < 100
    assert engine.saw_stop and engine.generated < 100


def _send_slowly(url: str, body_head: bytes, declared_length: int, drip_s: float) -> tuple[bytes, float]:
    """Send headers and `body_head`, then one more body byte every `drip_s` seconds (never finishing the
    body); return what the server answered and when the server closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        headers = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared_length}\r\n\r\n"
        )
        sock.sendall(headers.encode() + body_head)
        sock.settimeout(drip_s)
        answer = b""
        while time.monotonic() - started < 8:
            try:
                received = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
                continue
            if not received:
                break
            answer += received
    return answer, time.monotonic() - started


def test_a_body_that_trickles_in_gets_408_and_the_connection_closed() -> None:
    engine = FakeEngine()
    with serve(engine, limits=ServeLimits(body_timeout_s=0.5)) as server:
        trickled, trickled_s = _send_slowly(server.base_url, b'{"messages": ', 10_000, drip_s=0.05)
        silent, silent_s = _send_slowly(server.base_url, b"", 100, drip_s=60)
        fine = httpx.post(server.base_url + "/v1/chat/completions", json=BODY)
    for answer, seconds in ((trickled, trickled_s), (silent, silent_s)):
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert 0.5 <= seconds < 4
        error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "request_timeout" and "0.5 seconds" in error["message"]
    assert fine.status_code == 200 and len(engine.calls) == 1


def test_a_client_that_left_while_queued_starts_no_generation() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 40), delay=0.05)
    with serve(engine, max_concurrent=1, max_queue=1) as server:
        results: list[str] = []
        first = _stream_in_background(server, results)
        assert engine.started.wait(10)
        with pytest.raises(httpx.ReadTimeout):  # waits in the queue, then gives up and closes the connection
            httpx.post(server.base_url + "/v1/chat/completions", json=BODY, timeout=0.3)
        first.join(10)
        _wait_for_load(server, running=0, queued=0)  # its slot came, and was given back at once
        assert len(engine.calls) == 1
        engine.reply = "ok"
        reply = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content == "ok" and len(engine.calls) == 2


def test_disconnect_mid_stream_stops_the_generation() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 200), delay=0.02)
    with serve(engine, max_concurrent=1, max_queue=0) as server:
        with httpx.stream(
            "POST",
            server.base_url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 200},
        ) as response:
            first_word = next(line for line in response.iter_lines() if '"content":"word"' in line)
        assert first_word.startswith("data: ")
        assert engine.finished.wait(5), "the generation kept running after the client left"
        assert engine.saw_stop
        assert engine.generated < 100
        # Its slot is free again (max_concurrent=1, no queue): the next request is served, not refused.
        deadline = time.monotonic() + 5
        while httpx.get(server.base_url + "/health").json()["running"] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        engine.reply = "ok"
        reply = client(server).chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content == "ok"


def test_disconnect_while_waiting_for_a_plain_reply_stops_the_generation() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 200), delay=0.02)
    with serve(engine) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                server.base_url + "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200},
                timeout=0.5,
            )
        assert engine.finished.wait(5)
    assert engine.saw_stop and engine.generated < 100


def test_cli_serve_binds_loopback_and_never_prints_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    import twinbot.bot.backends
    import twinbot.bot.serve
    from twinbot.cli import app

    listened: list[tuple[str, int]] = []
    monkeypatch.setattr(twinbot.bot.backends, "load_backend", lambda *args, **kwargs: FakeEngine())
    monkeypatch.setattr(
        twinbot.bot.serve, "_listen", lambda host, port: listened.append((host, port)) or _Dummy()
    )
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.setenv("TWINBOT_API_KEY", "env-secret-key")
    result = CliRunner().invoke(app, ["serve", "some-run"])
    assert result.exit_code == 0, result.output
    assert listened == [("127.0.0.1", 8000)]
    assert "API key: set" in result.output and "env-secret-key" not in result.output
    monkeypatch.delenv("TWINBOT_API_KEY")
    refused = CliRunner().invoke(app, ["serve", "some-run", "--host", "0.0.0.0", "--port", "9001"])
    assert isinstance(refused.exception, TwinbotError)  # `twinbot` prints it as one error line, exit 2
    assert listened == [("127.0.0.1", 8000)]  # refused before binding
    assert str(refused.exception).startswith("listening on 0.0.0.0 without an API key")
    assert "--insecure-no-auth" in str(refused.exception)
    insecure = ["serve", "some-run", "--host", "0.0.0.0", "--port", "9001", "--insecure-no-auth"]
    result = CliRunner().invoke(app, insecure)
    assert listened[-1] == ("0.0.0.0", 9001)
    assert "API key: not set" in result.output and "warning" in result.output


class _Dummy:
    def close(self) -> None:
        pass


def test_api_key_comes_from_exactly_one_of_flag_file_and_environment(tmp_path: Path) -> None:
    from twinbot.bot.serve import api_key_from

    key_file = tmp_path / "key.txt"
    key_file.write_text("  file-secret-1  \nsecond line is ignored\n", encoding="utf-8")
    assert api_key_from(None, None, {}) is None
    assert api_key_from(None, None, {"TWINBOT_API_KEY": ""}) is None  # empty: not set
    assert api_key_from(" flag-secret-2 ", None, {}) == "flag-secret-2"
    assert api_key_from(None, key_file, {}) == "file-secret-1"
    assert api_key_from(None, None, {"TWINBOT_API_KEY": "env-secret-3\n"}) == "env-secret-3"
    for encoding in ("utf-16", "utf-8-sig"):  # what Windows PowerShell's `>` and Set-Content write
        key_file.write_text("file-secret-1\r\n", encoding=encoding)
        assert api_key_from(None, key_file, {}) == "file-secret-1"
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\x00\x9csecret-7\n")
    blank_first_line = tmp_path / "blank.txt"
    blank_first_line.write_text("\nfile-secret-4\n", encoding="utf-8")
    with_spaces = tmp_path / "spaces.txt"
    with_spaces.write_text("two words\n", encoding="utf-8")
    refusals = {
        "more than once (--api-key and TWINBOT_API_KEY)": ("flag-secret-2", None, "env-secret-3"),
        "more than once (--api-key and --api-key-file)": ("flag-secret-2", key_file, None),
        "more than once (--api-key-file and TWINBOT_API_KEY)": (None, key_file, "env-secret-3"),
        "--api-key is empty": ("  ", None, None),
        "the first line of --api-key-file is empty": (None, blank_first_line, None),
        "cannot read the API key file": (None, tmp_path / "missing.txt", None),
        "printable ASCII without spaces": (None, with_spaces, None),
        "from --api-key-file must be printable ASCII": (None, binary, None),
    }
    for expected, (flag, path, env) in refusals.items():
        environ = {} if env is None else {"TWINBOT_API_KEY": env}
        with pytest.raises(TwinbotError) as caught:
            api_key_from(flag, path, environ)
        message = str(caught.value)
        assert expected in message and "\n" not in message
        assert not any(
            secret in message for secret in ("secret-2", "secret-3", "secret-4", "secret-7", "two words")
        )
    with pytest.raises(TwinbotError, match="cannot read the API key file"):
        api_key_from(None, tmp_path, {})  # a folder


def test_cli_serve_reads_the_key_file_and_timeouts_and_refuses_two_key_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    import twinbot.bot.backends
    import twinbot.bot.serve
    from twinbot.cli import app

    apps: list[object] = []
    monkeypatch.setattr(twinbot.bot.backends, "load_backend", lambda *args, **kwargs: FakeEngine())
    monkeypatch.setattr(twinbot.bot.serve, "_listen", lambda host, port: _Dummy())
    monkeypatch.setattr(twinbot.bot.serve, "create_app", lambda lm, **kwargs: apps.append(kwargs) or object())
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.delenv("TWINBOT_API_KEY", raising=False)
    key_file = tmp_path / "key.txt"
    key_file.write_text("file-secret-5\n", encoding="utf-8")
    timeouts = ["--body-timeout", "7", "--queue-timeout", "8.5", "--generation-timeout", "9"]
    result = CliRunner().invoke(app, ["serve", "some-run", "--api-key-file", str(key_file), *timeouts])
    assert result.exit_code == 0, result.output
    assert apps[-1]["api_key"] == "file-secret-5"  # type: ignore[index]
    limits = apps[-1]["limits"]  # type: ignore[index]
    assert (limits.body_timeout_s, limits.queue_timeout_s, limits.generation_timeout_s) == (7, 8.5, 9)
    no_wait = CliRunner().invoke(app, ["serve", "some-run", "--queue-timeout", "0"])
    assert isinstance(no_wait.exception, TwinbotError) and "--queue-timeout" in str(no_wait.exception)
    assert "API key: set" in result.output and "file-secret-5" not in result.output
    monkeypatch.setenv("TWINBOT_API_KEY", "env-secret-6")
    both = CliRunner().invoke(app, ["serve", "some-run", "--api-key-file", str(key_file)])
    assert isinstance(both.exception, TwinbotError) and len(apps) == 1
    assert "--api-key-file and TWINBOT_API_KEY" in str(both.exception)
    assert "secret" not in both.output and "secret" not in str(both.exception)


def test_real_model_streams_the_same_reply_as_a_plain_request(tiny_model_dir: Path) -> None:
    from twinbot.bot.generate import build_prompt_ids
    from twinbot.bot.loading import load_for_inference

    lm = load_for_inference(str(tiny_model_dir), device="cpu")
    messages = [{"role": "user", "content": "hello, how was your day?"}]
    with ServerThread(create_app(lm)) as server:
        api = client(server)
        # Seeded sampling: the random tiny model's greedy reply is only newlines (stripped to nothing).
        plain, chunks, streamed = plain_and_streamed(api, lm.name, messages)
    assert streamed and plain.choices[0].message.content == streamed
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 1
    assert "<|im_start|>" not in streamed and "<|im_end|>" not in streamed
    turns = [ChatTurn("user", messages[0]["content"])]
    if lm.system_prompt:
        turns.insert(0, ChatTurn("system", lm.system_prompt))
    assert plain.usage is not None and chunks[-1].usage is not None
    assert plain.usage.prompt_tokens == len(build_prompt_ids(lm, turns, 12)) == chunks[-1].usage.prompt_tokens
    assert 0 < plain.usage.completion_tokens <= 12
    assert plain.usage.completion_tokens == chunks[-1].usage.completion_tokens


class FailingEngine(FakeEngine):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def stream(
        self, messages: Sequence[ChatTurn], sampling: SamplingRequest, stop: threading.Event
    ) -> Iterator[str]:
        yield "partial"
        raise self.error


def test_generation_errors_are_openai_shaped_and_free_the_slot(caplog: pytest.LogCaptureFixture) -> None:
    from twinbot.errors import TwinbotError

    with serve(FailingEngine(RuntimeError(PRIVATE)), max_concurrent=1, max_queue=0) as server:
        with pytest.raises(openai.InternalServerError) as caught:
            client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.body["type"] == "server_error"  # type: ignore[index]
        with httpx.stream(
            "POST",
            server.base_url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        ) as response:
            events = response.read().decode().split("\n\n")
        assert json.loads(events[-3].removeprefix("data: "))["error"]["type"] == "server_error"
        assert events[-2] == "data: [DONE]"
    assert PRIVATE not in caplog.text and "RuntimeError" in caplog.text
    failing = FailingEngine(TwinbotError("top-p must be in (0, 1]"))
    with serve(failing) as server, pytest.raises(openai.BadRequestError) as bad:
        client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    assert bad.value.body["message"] == "top-p must be in (0, 1]"  # type: ignore[index]


def test_oversized_body_is_refused_before_it_is_read() -> None:
    engine = FakeEngine()
    with serve(engine, limits=ServeLimits(max_prompt_chars=1000)) as server:
        response = httpx.post(
            server.base_url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": PRIVATE * 10_000}]},
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
            yield b'{"messages": [{"role": "user", "content": "'
            yield b"x" * 200_000
            yield b'"}]}'

        chunked = httpx.post(
            server.base_url + "/v1/chat/completions",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413 and chunked.status_code == 413
    assert response.json()["error"]["message"].startswith("the request body is too large")
    assert engine.calls == []
