"""The torch backend's continuous batching (twinbot.bot.batching): replies decoded in one batch, with rows
joining and leaving mid-decode, are the replies each request gets alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from twinbot.bot import batching, generate
from twinbot.bot.batching import BatchDecoder
from twinbot.bot.generate import (
    GenerationSettings,
    _RowSampler,
    _token_stream,
    build_prompt_ids,
    generate_reply,
)
from twinbot.bot.loading import LoadedModel, load_for_inference
from twinbot.data.records import ChatTurn

# (without a repetition penalty the tiny random model greedily writes nothing but newlines)
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=24, repetition_penalty=1.3)
SEEDED = GenerationSettings(temperature=0.9, top_p=0.8, max_new_tokens=24, seed=3)
PENALIZED = GenerationSettings(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=4, repetition_penalty=1.3)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path) -> LoadedModel:
    return load_for_inference(str(tiny_model_dir), device="cpu")


def ask(text: str) -> list[ChatTurn]:
    return [ChatTurn("system", "You are Sam."), ChatTurn("user", text)]


LONG = ask("what did you think of the film last night, honestly? " * 4)
REQUESTS = [(ask("hi"), GREEDY), (LONG, SEEDED), (ask("and tomorrow?"), PENALIZED)]


@pytest.fixture(scope="module")
def alone(tiny_lm: LoadedModel) -> list[str]:
    """REQUESTS' replies, each generated alone (generate.stream_reply)."""
    return [generate_reply(tiny_lm, turns, settings) for turns, settings in REQUESTS]


class Steps:
    """batching._forward, recording each decoding step's rows and cached width. Its first step waits until
    `gather` requests have come (prefilled or waiting to join); `when(rows, action)` runs `action` once, at
    the first step with that many rows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, decoder: BatchDecoder, gather: int) -> None:
        self.rows: list[int] = []
        self.widths: list[int] = []
        self.actions: dict[int, Callable[[], None]] = {}
        self.prefills = 0
        real = batching._forward

        def forward(model: Any, input_ids: torch.Tensor, cache: dict[str, Any], **inputs: Any) -> Any:
            if not cache:  # a prefill
                self.prefills += 1
            else:  # a decoding step
                rows = input_ids.shape[0]
                if not self.rows:
                    wait_until(lambda: self.prefills + len(decoder._arrivals) >= gather)
                mask = inputs.get("attention_mask")
                self.rows.append(rows)
                self.widths.append(mask.shape[1] if mask is not None else -1)
                if rows in self.actions:
                    self.actions.pop(rows)()
            return real(model, input_ids, cache, **inputs)

        monkeypatch.setattr(batching, "_forward", forward)

    def when(self, rows: int, action: Callable[[], None]) -> None:
        self.actions[rows] = action


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "waited 30 s"
        time.sleep(0.002)


def reply(
    pool: ThreadPoolExecutor,
    decoder: BatchDecoder,
    turns: list[ChatTurn],
    settings: GenerationSettings,
    stop: threading.Event | None = None,
) -> Future[str]:
    return pool.submit(lambda: "".join(decoder.stream(turns, settings, stop)))


class RecordingSampler(_RowSampler):
    """A row's sampler that keeps the logits it picked from, by the row's settings."""

    logits: ClassVar[dict[int, list[torch.Tensor]]] = {}

    def __init__(self, settings: GenerationSettings) -> None:
        super().__init__(settings)
        self.seen = RecordingSampler.logits.setdefault(id(settings), [])

    def pick(self, ids: torch.Tensor, scores: torch.Tensor) -> int:
        self.seen.append(scores.clone())
        return super().pick(ids, scores)


def test_rows_joining_mid_decode_get_the_replies_they_get_alone(
    tiny_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three requests decode together (greedy, seeded, seeded with a repetition penalty; prompts of
    different lengths, so rows are left-padded); a fourth joins while they run. Every row gets exactly its
    reply alone, from the same logits up to float32 rounding (padding is masked out, each row has its own
    positions; the batch's matrix shapes change the order of the sums: at most 4e-7 here)."""
    latecomer = (ask("one more"), replace(GREEDY, max_new_tokens=16))
    requests = [*REQUESTS, latecomer]
    monkeypatch.setattr(generate, "_RowSampler", RecordingSampler)
    monkeypatch.setattr(batching, "_RowSampler", RecordingSampler)
    monkeypatch.setattr(RecordingSampler, "logits", {})
    alone = [generate_reply(tiny_lm, turns, settings) for turns, settings in requests]
    assert len(set(alone)) == 4 and all(alone)
    alone_logits = RecordingSampler.logits
    monkeypatch.setattr(RecordingSampler, "logits", {})
    decoder = BatchDecoder(tiny_lm, max_rows=4)
    steps = Steps(monkeypatch, decoder, gather=3)
    steps.when(3, lambda: wait_until(lambda: len(decoder._arrivals) == 1))  # the three wait for the latecomer
    with ThreadPoolExecutor(4) as pool:
        futures = [reply(pool, decoder, turns, settings) for turns, settings in REQUESTS]
        wait_until(lambda: 3 in steps.rows)
        futures.append(reply(pool, decoder, *latecomer))
        together = [future.result(timeout=60) for future in futures]
    assert together == alone
    assert max(steps.rows) == 4
    # While all four rows decode (LONG among them), the cache keeps LONG's whole prompt; after rows leave,
    # which row outlives the others depends on thread timing, and trimming may rightly narrow the cache.
    all_four = [width for width, rows in zip(steps.widths, steps.rows, strict=True) if rows == 4]
    assert all_four and min(all_four) >= len(build_prompt_ids(tiny_lm, LONG, 24))
    for _, settings in requests:
        batched, single = RecordingSampler.logits[id(settings)], alone_logits[id(settings)]
        assert len(batched) == len(single)
        difference = max(float((b - s).abs().max()) for b, s in zip(batched, single, strict=True))
        assert difference < 1e-4, difference


def test_a_cancelled_row_leaves_and_the_others_finish(
    tiny_lm: LoadedModel, alone: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The longest prompt's row is stopped mid-decode: it ends early, the batch goes on with two rows, and
    the left padding only that row needed is dropped from the cache."""
    decoder = BatchDecoder(tiny_lm, max_rows=4)
    steps = Steps(monkeypatch, decoder, gather=3)
    cancel = threading.Event()
    steps.when(3, cancel.set)
    with ThreadPoolExecutor(3) as pool:
        futures = [
            reply(pool, decoder, turns, settings, cancel if turns is LONG else None)
            for turns, settings in REQUESTS
        ]
        together = [future.result(timeout=60) for future in futures]
    assert together[0] == alone[0] and together[2] == alone[2]
    assert len(together[1]) < len(alone[1])
    three = steps.rows.index(3)
    assert steps.rows[three + 1] == 2
    assert steps.widths[three + 1] < steps.widths[three]  # the long prompt's padding went with it


def test_each_row_stops_at_its_stop_tokens_and_max_new_tokens(
    tiny_lm: LoadedModel, alone: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token becomes a stop token: the row that samples it leaves at once, the others go on to their own
    max_new_tokens; each reply equals its reply alone."""
    sampled = list(_token_stream(tiny_lm, build_prompt_ids(tiny_lm, LONG, 24), SEEDED, None))
    stopping = replace(tiny_lm, stop_token_ids=tiny_lm.stop_token_ids | {sampled[5]})
    requests = [*REQUESTS, (ask("short"), replace(GREEDY, max_new_tokens=3))]
    stopped_alone = [generate_reply(stopping, turns, settings) for turns, settings in requests]
    decoder = BatchDecoder(stopping, max_rows=4)
    steps = Steps(monkeypatch, decoder, gather=4)
    with ThreadPoolExecutor(4) as pool:
        together = [f.result(timeout=60) for f in [reply(pool, decoder, *request) for request in requests]]
    assert together == stopped_alone
    assert max(steps.rows) == 4
    assert len(together[1]) < len(alone[1])  # it ended at its stop token


def test_requests_beyond_max_rows_wait_for_a_free_row(
    tiny_lm: LoadedModel, alone: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = BatchDecoder(tiny_lm, max_rows=2)
    steps = Steps(monkeypatch, decoder, gather=3)
    with ThreadPoolExecutor(3) as pool:
        together = [f.result(timeout=60) for f in [reply(pool, decoder, *request) for request in REQUESTS]]
    assert together == alone
    assert max(steps.rows) == 2


def test_caches_that_cannot_be_joined_decode_one_row_per_step(
    tiny_lm: LoadedModel, alone: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sliding-window and other cache layouts: every request is a batch of its own, taking turns."""
    monkeypatch.setattr(batching, "_joinable", lambda cache: False)
    decoder = BatchDecoder(tiny_lm, max_rows=4)
    steps = Steps(monkeypatch, decoder, gather=3)
    with ThreadPoolExecutor(3) as pool:
        together = [f.result(timeout=60) for f in [reply(pool, decoder, *request) for request in REQUESTS]]
    assert together == alone
    assert set(steps.rows) == {1}


def test_a_failing_step_reaches_every_reader_and_the_decoder_goes_on(
    tiny_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = BatchDecoder(tiny_lm, max_rows=4)
    steps = Steps(monkeypatch, decoder, gather=2)

    def fail() -> None:
        raise RuntimeError("out of memory")

    steps.when(2, fail)
    with ThreadPoolExecutor(2) as pool:
        futures = [reply(pool, decoder, *request) for request in REQUESTS[:2]]
        for future in futures:
            with pytest.raises(RuntimeError, match="out of memory"):
                future.result(timeout=60)
    assert "".join(decoder.stream(*REQUESTS[0])) == generate_reply(tiny_lm, *REQUESTS[0])


def test_the_server_batches_concurrent_requests(
    tiny_lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`twinbot serve` on a torch model: concurrent requests share forward passes, each streaming the reply
    (and usage) it gets alone, a stop string cutting one of them as before."""
    import openai

    from twinbot.bot.engine import ModelEngine, SamplingRequest, request_settings
    from twinbot.bot.serve import ServerThread, create_app

    questions = ["hello, how was your day?", "ok", "what are you doing this weekend, anything fun?"]
    sampling = [SamplingRequest(1.0, 0.9, 12, seed) for seed in (7, 8, 9)]
    alone = [
        generate_reply(tiny_lm, [ChatTurn("user", question)], request_settings(request))
        for question, request in zip(questions, sampling, strict=True)
    ]
    assert all(alone) and len(set(alone)) == 3
    engine = ModelEngine(tiny_lm)  # what `twinbot serve` gets for a torch model (backends.TorchBackend)
    app = create_app(engine, max_concurrent=3)  # type: ignore[arg-type]
    steps = Steps(monkeypatch, engine.decoder, gather=3)
    stop = alone[2].split()[-1]  # late in the reply, so that the row is still there when all three decode

    def ask_server(number: int) -> tuple[str, int]:
        chunks = client.chat.completions.create(
            model=tiny_lm.name,
            messages=[{"role": "user", "content": questions[number]}],
            temperature=1.0,
            top_p=0.9,
            seed=sampling[number].seed,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            stop=stop if number == 2 else None,
        )
        parts = list(chunks)
        assert parts[-1].usage is not None
        text = "".join(part.choices[0].delta.content or "" for part in parts if part.choices)
        return text, parts[-1].usage.completion_tokens

    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
        with ThreadPoolExecutor(3) as pool:
            replies = list(pool.map(ask_server, range(3)))
    assert [text for text, _ in replies[:2]] == alone[:2]
    assert replies[2][0] == alone[2][: alone[2].index(stop)]
    assert all(tokens > 0 for _, tokens in replies)
    assert max(steps.rows) == 3
