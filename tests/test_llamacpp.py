"""The llama.cpp backend's continuous batching (backends/llamacpp.py's LlamaDecoder): replies decoded
together in one llama.cpp context, with rows joining and leaving mid-decode, are the replies each request
gets alone, on an f32 export of the tiny run (token for token)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from support.llamacpp import pick_a_word_slowly
from support.runs import TrainedRun, copy_run
from twinbot.bot import backends
from twinbot.bot.generate import GenerationSettings, _token_stream, build_prompt_ids
from twinbot.bot.loading import LoadedModel, load_for_inference
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError

pytestmark = pytest.mark.skipif(
    not backends.importable("llama_cpp"),
    reason="llama-cpp-python is not installed (pip install 'twinbot[llamacpp]')",
)

# (the random tiny model repeats one token greedily; a strong repetition penalty makes it write several)
GREEDY = GenerationSettings(temperature=0, max_new_tokens=24, repetition_penalty=3.0)
SEEDED = GenerationSettings(temperature=0.9, top_p=0.8, max_new_tokens=24, seed=3)
PENALIZED = GenerationSettings(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=4, repetition_penalty=1.3)


def ask(text: str) -> list[ChatTurn]:
    return [ChatTurn("system", "You are Sam."), ChatTurn("user", text)]


LONG = ask("what did you think of the film last night, honestly? " * 4)
LONGER = ask("what did you think of the film last night, honestly? " * 12)
QUESTIONS = [ask("hi"), LONG, ask("and tomorrow?"), ask("where are you? we are all at the lake already")]


@pytest.fixture(scope="module")
def gguf(tiny_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny run's f32 export (f32: llama.cpp computes what torch does, up to rounding)."""
    from twinbot.bot.backends.llamacpp import find_gguf

    return find_gguf(copy_run(tiny_run, tmp_path_factory.mktemp("llamacpp") / "run"), "f32")


@pytest.fixture(scope="module")
def adapter_lm(tiny_run: TrainedRun) -> LoadedModel:
    return load_for_inference(str(tiny_run.path), device="cpu")


def twin(gguf: Any, max_rows: int = 4) -> Any:
    """A fresh backend: its own context, nothing cached."""
    from twinbot.bot.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(gguf, max_rows=max_rows)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "waited 30 s"
        time.sleep(0.002)


@dataclass
class Decode:
    sequences: list[int]  # each token's sequence
    outputs: int  # tokens whose logits were asked for: one per row that samples after this decode


@dataclass
class Decodes:
    """The backend's llama_decode calls, recorded. The first waits until `gather` requests have come;
    `when(outputs, action)` runs `action` once, at the first decode with that many outputs."""

    twin: Any
    gather: int = 0
    delay_s: float = 0.0
    calls: list[Decode] = field(default_factory=list)
    actions: dict[int, Callable[[], None]] = field(default_factory=dict)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Decodes:
        context, decoder = self.twin.context, self.twin.decoder
        real = context.decode

        def decode() -> None:
            if not self.calls and self.gather:
                wait_until(lambda: len(decoder._arrivals) + len(decoder._slots) >= self.gather)
            batch = context.batch
            tokens = range(context.queued)
            call = Decode([batch.seq_id[i][0] for i in tokens], sum(bool(batch.logits[i]) for i in tokens))
            self.calls.append(call)
            if call.outputs in self.actions:
                self.actions.pop(call.outputs)()
            time.sleep(self.delay_s)
            real()

        monkeypatch.setattr(context, "decode", decode)
        return self

    def when(self, outputs: int, action: Callable[[], None]) -> None:
        self.actions[outputs] = action

    @property
    def most_rows(self) -> int:
        return max(call.outputs for call in self.calls)


def together(
    backend: Any, requests: list[tuple[list[ChatTurn], GenerationSettings]], stops: dict[int, threading.Event]
) -> list[Future[str]]:
    pool = ThreadPoolExecutor(len(requests))
    futures = [
        pool.submit(lambda n=n, r=r: "".join(backend.stream(*r, stops.get(n))))
        for n, r in enumerate(requests)
    ]
    pool.shutdown(wait=False)
    return futures


def test_concurrent_greedy_replies_are_the_replies_alone_and_torchs(
    gguf: Any, adapter_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four greedy requests (prompts of different lengths) decode in one llama_decode a step: each gets the
    tokens it gets alone, which are the torch backend's tokens for the same adapter."""
    prompts = [build_prompt_ids(adapter_lm, turns, GREEDY.max_new_tokens) for turns in QUESTIONS]
    torch_tokens = [list(_token_stream(adapter_lm, prompt, GREEDY, None)) for prompt in prompts]
    alone_twin = twin(gguf)
    alone = [list(alone_twin.decoder.token_ids(prompt, GREEDY)) for prompt in prompts]
    assert alone == torch_tokens
    assert all(alone) and max(map(len, alone)) == 24 and len({tuple(tokens) for tokens in alone}) > 1
    batched = twin(gguf)
    decodes = Decodes(batched, gather=4).install(monkeypatch)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda p=p: list(batched.decoder.token_ids(p, GREEDY))) for p in prompts]
        assert [future.result(timeout=60) for future in futures] == alone
    assert decodes.most_rows == 4
    assert len(set(decodes.calls[-20].sequences)) == 4  # four sequences in one context


def test_seeded_requests_draw_the_same_reply_alone_and_in_a_batch(
    gguf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [(QUESTIONS[0], SEEDED), (LONG, PENALIZED), (QUESTIONS[2], GREEDY)]
    alone_twin = twin(gguf)
    alone = [alone_twin.generate(*request) for request in requests]
    assert all(alone) and len(set(alone)) == 3
    batched = twin(gguf)
    decodes = Decodes(batched, gather=3).install(monkeypatch)
    assert [future.result(timeout=60) for future in together(batched, requests, {})] == alone
    assert decodes.most_rows == 3
    assert batched.generate_many([turns for turns, _ in requests], [s for _, s in requests]) == alone


def test_a_row_that_stops_listening_leaves_and_the_others_finish(
    gguf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The long prompt's client goes away mid-decode: its sequence is dropped at the next step, the other
    replies are the ones they get alone, and the decoder ends idle with every sequence free."""
    requests = [(turns, GREEDY) for turns in QUESTIONS[:3]]
    alone_twin = twin(gguf)
    alone = [alone_twin.generate(*request) for request in requests]
    batched = twin(gguf)
    decodes = Decodes(batched, gather=3).install(monkeypatch)
    gone = threading.Event()
    decodes.when(3, gone.set)
    replies = [future.result(timeout=60) for future in together(batched, requests, {1: gone})]
    assert replies[0] == alone[0] and replies[2] == alone[2]
    assert len(replies[1]) < len(alone[1])
    three = next(number for number, call in enumerate(decodes.calls) if call.outputs == 3)
    assert decodes.calls[three + 1].outputs == 2
    wait_until(lambda: batched.decoder._thread is None)
    assert not batched.decoder._slots


def test_rows_join_mid_decode_and_long_prompts_take_several_steps(
    gguf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three rows decode; a fourth with the longest prompt arrives meanwhile. With 16 tokens a decode, its
    prompt is evaluated over several steps alongside the others' next tokens, then it decodes with them."""
    late = (LONG, replace(GREEDY, max_new_tokens=16))
    requests = [(turns, GREEDY) for turns in (QUESTIONS[0], QUESTIONS[2], QUESTIONS[3])]
    alone_twin = twin(gguf)
    alone = [alone_twin.generate(*request) for request in [*requests, late]]
    batched = twin(gguf)
    batched.context.n_batch = 16
    decodes = Decodes(batched, gather=3).install(monkeypatch)
    arrived = threading.Event()
    decodes.when(3, lambda: (arrived.set(), wait_until(lambda: len(batched.decoder._arrivals) == 1)))
    futures = together(batched, requests, {})
    arrived.wait(timeout=60)
    futures += together(batched, [late], {})
    assert [future.result(timeout=60) for future in futures] == alone
    late_prompt = len(build_prompt_ids(batched, LONG, 16))
    late_sequence = 3  # the three others hold 0-2
    mixed = [call for call in decodes.calls if call.sequences.count(late_sequence) > 1 and call.outputs >= 3]
    assert len(mixed) >= late_prompt // 16  # its prompt in pieces, beside the decoding rows' tokens
    assert all(len(call.sequences) <= 16 for call in decodes.calls)
    assert decodes.most_rows == 4


def test_rows_wait_for_room_in_the_kv_cache(gguf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 160-token context: each request needs its prompt and 48 new tokens, so two decode at once and the
    others wait for a free place; all four get their replies alone. Prompts are trimmed to the context."""
    from twinbot.bot.backends import llamacpp

    monkeypatch.setattr(llamacpp, "MAX_CONTEXT", 160)
    settings = replace(GREEDY, max_new_tokens=48)
    small = twin(gguf)
    assert small.context_window == 160
    requests = [(turns, settings) for turns in (QUESTIONS[0], QUESTIONS[2], QUESTIONS[3], QUESTIONS[0])]
    cells = [small.count_prompt_tokens(turns, 48) + 48 for turns, _ in requests]
    assert sum(cells[:2]) <= 160 < sum(cells[:3])
    alone = [small.generate(*request) for request in requests]
    decodes = Decodes(small, gather=4).install(monkeypatch)
    assert [future.result(timeout=60) for future in together(small, requests, {})] == alone
    assert decodes.most_rows == 2
    assert small.count_prompt_tokens(LONGER, 48) <= 160 - 48 < small.count_prompt_tokens(LONGER, 0)
    assert small.generate(LONGER, settings)
    with pytest.raises(TwinbotError, match="leaves no room for the prompt"):
        small.generate(QUESTIONS[0], replace(GREEDY, max_new_tokens=160))
    with pytest.raises(TwinbotError, match="150-token prompt and 24 new tokens do not fit in the 160-token"):
        list(small.decoder.token_ids([1] * 150, GREEDY))  # a prompt not built to fit: refused, not waiting


def test_the_next_turn_reuses_the_cache_of_the_last_reply(gguf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chat's next prompt starts with the last one: only the new part is evaluated, for the same reply a
    fresh context gives."""
    chatting = twin(gguf)
    first_reply = chatting.generate(LONG, GREEDY)
    follow_up = [*LONG, ChatTurn("assistant", first_reply), ChatTurn("user", "ok and then?")]
    decodes = Decodes(chatting).install(monkeypatch)
    reply = chatting.generate(follow_up, GREEDY)
    assert reply == twin(gguf).generate(follow_up, GREEDY)
    evaluated = len(decodes.calls[0].sequences)  # the first decode: the prompt's part not cached
    assert (
        evaluated
        < len(build_prompt_ids(chatting, follow_up, GREEDY.max_new_tokens))
        - len(build_prompt_ids(chatting, LONG, GREEDY.max_new_tokens))
        + 8
    )


def test_a_failing_decode_reaches_every_reader_and_the_decoder_goes_on(
    gguf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = twin(gguf)
    expected = twin(gguf).generate(QUESTIONS[0], GREEDY)
    decodes = Decodes(backend, gather=2).install(monkeypatch)

    def fail() -> None:
        raise TwinbotError("llama.cpp could not decode a batch (status 1); try again")

    decodes.when(2, fail)
    for future in together(backend, [(QUESTIONS[0], GREEDY), (QUESTIONS[2], SEEDED)], {}):
        with pytest.raises(TwinbotError, match="could not decode"):
            future.result(timeout=60)
    assert backend.generate(QUESTIONS[0], GREEDY) == expected


@pytest.fixture()
def word_twin(gguf: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, int]]]:
    """A backend picking a word every 20 ms (support.llamacpp.pick_a_word_slowly); counts its logits."""
    backend = twin(gguf, max_rows=8)
    yield backend, pick_a_word_slowly(backend, monkeypatch)


def test_the_server_batches_requests_and_still_refuses_beyond_its_queue(
    word_twin: tuple[Any, dict[str, int]],
) -> None:
    """`twinbot serve` on llama.cpp: two streams decode together; with both slots and the one queue place
    taken, another request gets 429; clients that go away free their rows, and the queued request runs."""
    import httpx

    from twinbot.bot.serve import ServerThread, create_app

    backend, counted = word_twin
    app = create_app(backend.server_engine(), max_concurrent=2, max_queue=1)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 300}
    short = {**body, "stream": False, "max_tokens": 3}
    queued: list[httpx.Response] = []
    with ServerThread(app) as server:
        url = server.base_url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body) as first, httpx.stream("POST", url, json=body) as second:
            kept = [response.iter_lines() for response in (first, second)]  # closing one is a disconnect
            for lines in kept:
                assert next(line for line in lines if '"content":"la' in line)
            assert len(backend.decoder._slots) == 2  # decoding together
            waiting = threading.Thread(target=lambda: queued.append(httpx.post(url, json=short, timeout=60)))
            waiting.start()
            wait_until(lambda: httpx.get(server.base_url + "/health").json()["queued"] == 1)
            assert httpx.post(url, json=body, timeout=60).status_code == 429
        waiting.join(timeout=60)  # the two clients went away: their slots went to the queued request
        wait_until(lambda: backend.decoder._thread is None)
    assert queued[0].json()["choices"][0]["message"]["content"] == "la la la"
    assert not backend.decoder._slots
    assert counted["scores"] < 200  # the streams stopped soon after their clients left, not at 300 tokens


def test_the_embedded_quantized_gguf_answers_a_long_prompt() -> None:
    """The embedded GGUF is Q4_1 with a q8_0 embedding: on CPUs with AMX, llama.cpp's repack of such weights
    crashed the process at the first prompt of a few dozen tokens (models/llama_context.py)."""
    backend = backends.load_backend("llamacpp", None, device="cpu")
    reply = backend.generate(LONG, GenerationSettings(temperature=0, max_new_tokens=8))
    assert reply.strip()


def test_torch_work_apart_runs_in_a_thread_that_ends_and_gives_back_its_result_or_error() -> None:
    from twinbot.models.llama_context import torch_work_apart

    where: list[threading.Thread] = []

    def work() -> int:
        where.append(threading.current_thread())
        return 7

    assert torch_work_apart(work) == 7
    assert where[0] is not threading.current_thread() and not where[0].is_alive()

    def fail() -> None:
        raise TwinbotError("export failed")

    with pytest.raises(TwinbotError, match="export failed"):
        torch_work_apart(fail)
