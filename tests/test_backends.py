"""Backends (twinbot.bot.backends): the `auto` rule, llama.cpp against torch on an f32 export of the tiny
run, and the server's guarantees on llama.cpp. llama.cpp tests skip where llama-cpp-python is not
installed; vllm's where there is no CUDA GPU with vllm."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

from support.llamacpp import pick_a_word_slowly
from support.runs import TrainedRun, copy_run
from test_serve import client, plain_and_streamed
from twinbot.bot import backends
from twinbot.bot.backends import TorchBackend, choose, load_backend
from twinbot.bot.generate import GenerationSettings, build_prompt_ids, sampled_tokens, torch_forward
from twinbot.bot.serve import ServerThread, create_app
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError

HAS_LLAMA_CPP = backends.importable("llama_cpp")
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install 'twinbot[llamacpp]')"
)
SEEDED = GenerationSettings(temperature=1.0, top_p=1.0, max_new_tokens=16, seed=7)


def ask(text: str = "hello, how was your day?") -> list[ChatTurn]:
    return [ChatTurn("system", "You are Sam."), ChatTurn("user", text)]


# --- choosing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "installed", "spec", "expected"),
    [
        ("cuda", {"vllm", "llama_cpp"}, "run", "vllm"),
        ("cuda", {"llama_cpp"}, "run", "torch"),
        ("cpu", {"llama_cpp", "vllm"}, "run", "llamacpp"),
        ("cpu", {"llama_cpp"}, "model.gguf", "llamacpp"),
        ("cpu", {"llama_cpp"}, None, "llamacpp"),  # the embedded model is a GGUF already
        ("cpu", {"llama_cpp"}, "merged", "torch"),  # a merged folder or hub id: torch
        ("mps", set(), "run", "torch"),
    ],
)
def test_auto_picks_by_device_installed_packages_and_model(
    device: str,
    installed: set[str],
    spec: str | None,
    expected: str,
    tiny_run: TrainedRun,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import twinbot.models.devices

    monkeypatch.setattr(twinbot.models.devices, "pick_device", lambda requested, setting: device)
    monkeypatch.setattr(backends, "importable", lambda module: module in installed)
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    paths = {
        "run": tiny_run.path,
        "model.gguf": tmp_path / "model.gguf",
        "merged": tiny_model_dir,
        None: None,
    }
    chosen, why = choose("auto", paths[spec], "auto")
    assert chosen == expected and why.startswith("auto: ")
    assert choose("torch", paths[spec], "auto") == ("torch", "--backend")


def test_unknown_backend_and_vllm_without_cuda_are_one_line_errors(tiny_run: TrainedRun) -> None:
    with pytest.raises(TwinbotError, match="unknown --backend 'onnx'; use one of: auto, torch"):
        load_backend("onnx", tiny_run.path)
    if not torch.cuda.is_available():
        with pytest.raises(TwinbotError, match="--backend vllm needs a CUDA GPU") as caught:
            load_backend("vllm", tiny_run.path)
        assert "\n" not in str(caught.value)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and backends.importable("vllm")),
    reason="vllm needs CUDA and the vllm package",
)
def test_vllm_replies_with_the_adapter(tiny_run: TrainedRun) -> None:
    twin = load_backend("vllm", tiny_run.path)
    replies = twin.generate_many([ask(), ask("and tomorrow?")], [SEEDED, SEEDED])
    assert len(replies) == 2 and all("<|im" not in reply for reply in replies)
    assert "".join(twin.stream(ask(), SEEDED)) == twin.generate(ask(), SEEDED)


# --- llama.cpp against torch ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_copy(tiny_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run, copied: the llama.cpp backend writes its export into the run folder."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("backends") / "run")


@pytest.fixture(scope="module")
def torch_twin(run_copy: Path) -> TorchBackend:
    return load_backend("torch", run_copy, device="cpu")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def llama_twin(run_copy: Path) -> Any:
    from twinbot.bot.backends.llamacpp import LlamaCppBackend

    twin = load_backend("llamacpp", run_copy, device="cpu", gguf_type="f32")  # f32: exact up to rounding
    assert isinstance(twin, LlamaCppBackend)
    return twin


@needs_llama_cpp
def test_a_run_is_exported_once_and_reused(run_copy: Path, llama_twin: Any) -> None:
    from twinbot.bot.backends.llamacpp import find_gguf

    exported = run_copy / "export" / "twin-f32.gguf"
    assert llama_twin.model.path == exported and exported.is_file()
    written = exported.stat().st_mtime_ns
    assert find_gguf(run_copy, "f32").path == exported
    assert exported.stat().st_mtime_ns == written  # newer than the adapter: not exported again


@needs_llama_cpp
def test_greedy_tokens_equal_the_torch_backends(torch_twin: TorchBackend, llama_twin: Any) -> None:
    assert llama_twin.system_prompt == torch_twin.system_prompt
    assert llama_twin.count_prompt_tokens(ask(), 24) == torch_twin.count_prompt_tokens(ask(), 24)
    prompt = build_prompt_ids(torch_twin.lm, ask(), 24)
    # the random tiny model repeats one token; a strong repetition penalty makes it write several
    greedy = GenerationSettings(temperature=0, max_new_tokens=24, repetition_penalty=3.0)
    stops = llama_twin.stop_token_ids
    ours = list(sampled_tokens(torch_forward(torch_twin.lm.model), prompt, greedy, stops, None))
    theirs = list(llama_twin.decoder.token_ids(prompt, greedy))
    assert len(ours) == 24 and len(set(ours)) > 3
    assert theirs == ours


@needs_llama_cpp
def test_seeded_replies_are_reproducible_and_the_torch_backends(
    torch_twin: TorchBackend, llama_twin: Any
) -> None:
    first = llama_twin.generate(ask(), SEEDED)
    assert first and first == llama_twin.generate(ask(), SEEDED)  # the second reuses the prompt's cache
    assert first == torch_twin.generate(ask(), SEEDED)
    assert "".join(llama_twin.stream(ask(), SEEDED)) == first
    others = {
        llama_twin.generate(ask(), GenerationSettings(**{**SEEDED.__dict__, "seed": s})) for s in (1, 2)
    }
    assert len(others | {first}) > 1
    many = llama_twin.generate_many([ask(), ask("and tomorrow?")], [SEEDED, SEEDED])
    assert many == [first, torch_twin.generate(ask("and tomorrow?"), SEEDED)]


def scripted(twin: Any, text: str, then: str = "<|im_end|>") -> None:
    """Make `twin` write `text` then the token `then` (one-hot logits instead of llama.cpp's)."""
    tokenizer = twin.tokenizer
    script = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.convert_tokens_to_ids(then)]
    vocab = twin.context.n_vocab

    def one_hot(row: Any, index: int) -> torch.Tensor:
        logits = torch.full((1, vocab), -30.0)
        logits[0, script[len(row.generated)]] = 30.0
        return logits

    twin.decoder._scores = one_hot


@needs_llama_cpp
def test_replies_end_at_the_end_of_turn_and_at_another_speakers_line(llama_twin: Any) -> None:
    greedy = GenerationSettings(temperature=0, max_new_tokens=30)
    try:
        scripted(llama_twin, "lol same\nBob: wait what")
        assert llama_twin.generate(ask(), greedy) == "lol same\nBob: wait what"  # to the end of turn
        assert (
            llama_twin.generate(ask(), GenerationSettings(**{**greedy.__dict__, "other_speakers": ("Bob",)}))
            == "lol same"
        )
        scripted(llama_twin, "sure\nuser: no way")
        assert llama_twin.generate(ask(), greedy) == "sure"
    finally:
        del llama_twin.decoder._scores


@needs_llama_cpp
def test_chat_replies_through_the_backend(run_copy: Path, llama_twin: Any) -> None:
    from typer.testing import CliRunner

    from twinbot.bot.chat import REPLY_PREFIX
    from twinbot.cli import app

    exported = run_copy / "export" / "twin-f32.gguf"  # llama_twin's export: --gguf-type f32 reuses it
    written = exported.stat().st_mtime_ns
    arguments = ["chat", str(run_copy), "--backend", "llamacpp", "--gguf-type", "f32", "--seed", "7"]
    result = CliRunner().invoke(app, arguments, input="hello there\n/quit\n")
    assert result.exit_code == 0, result.output
    assert REPLY_PREFIX in result.output and "hello there" not in result.output
    assert "backend: llamacpp (--backend)" in result.output and str(exported) in result.output
    assert exported.stat().st_mtime_ns == written


def test_gguf_type_is_checked_before_loading(tiny_run: TrainedRun, tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match="unknown --gguf-type 'q4_k'; use one of: f32, f16, q8_0"):
        load_backend("llamacpp", tiny_run.path, gguf_type="q4_k")
    with pytest.raises(TwinbotError, match="--gguf-type is for the llamacpp backend, and this runs on torch"):
        load_backend("torch", tiny_run.path, gguf_type="q8_0")
    model_file = tmp_path / "twin.gguf"
    model_file.write_bytes(b"GGUF")
    for spec in (model_file, None):  # a .gguf file and the embedded model run as they are
        with pytest.raises(TwinbotError, match="--gguf-type picks the type of a RUN folder's") as caught:
            load_backend("llamacpp", spec, gguf_type="q8_0")
        assert "\n" not in str(caught.value)


# --- the server on llama.cpp ----------------------------------------------------------------------------------


@pytest.fixture()
def slow_llama(llama_twin: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """The llama.cpp twin picking a word every 20 ms; counts the logits it gave."""
    yield pick_a_word_slowly(llama_twin, monkeypatch)


@needs_llama_cpp
def test_server_json_and_sse_with_usage(llama_twin: Any) -> None:
    messages = [{"role": "user", "content": "hello, how was your day?"}]
    with ServerThread(create_app(llama_twin.server_engine())) as server:
        api = client(server)
        plain, chunks, streamed = plain_and_streamed(api, "x", messages)
    assert streamed and plain.choices[0].message.content == streamed and plain.model == llama_twin.name
    turns = [ChatTurn("user", messages[0]["content"])]
    if llama_twin.system_prompt:
        turns.insert(0, ChatTurn("system", llama_twin.system_prompt))
    assert plain.usage is not None and chunks[-1].usage is not None
    assert (
        plain.usage.prompt_tokens
        == llama_twin.count_prompt_tokens(turns, 12)
        == chunks[-1].usage.prompt_tokens
    )
    assert 0 < plain.usage.completion_tokens == chunks[-1].usage.completion_tokens <= 12


@needs_llama_cpp
def test_server_key_429_and_disconnect(llama_twin: Any, slow_llama: dict[str, int]) -> None:
    app = create_app(llama_twin.server_engine(), api_key="k-1", max_concurrent=1, max_queue=0)
    hi = [{"role": "user", "content": "hi"}]
    with ServerThread(app) as server:
        with pytest.raises(openai.AuthenticationError):
            client(server, api_key="wrong").chat.completions.create(model="x", messages=hi)
        headers = {"Authorization": "Bearer k-1"}
        body = {"messages": hi, "stream": True, "max_tokens": 300}
        with httpx.stream(
            "POST", server.base_url + "/v1/chat/completions", json=body, headers=headers
        ) as response:
            lines = response.iter_lines()  # kept: closing it would close the response, a disconnect
            assert next(line for line in lines if '"content":"la' in line)
            refused = httpx.post(server.base_url + "/v1/chat/completions", json=body, headers=headers)
            assert refused.status_code == 429  # one slot, no queue
            assert slow_llama["scores"] < 100
        stopped_at = slow_llama["scores"]
        time.sleep(0.5)
        assert slow_llama["scores"] - stopped_at <= 2 and slow_llama["scores"] < 100
        assert not llama_twin.decoder._slots  # the generation let go of its sequence
        reply = client(server, api_key="k-1").chat.completions.create(model="x", messages=hi, max_tokens=3)
    assert reply.choices[0].message.content == "la la la"


@needs_llama_cpp
@pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(), reason="Debian's chromium is not installed")
def test_web_page_on_llama_cpp(llama_twin: Any, slow_llama: dict[str, int], tmp_path: Path) -> None:
    from test_web_chat import LAST_REPLY_DONE, browser_page

    app = create_app(llama_twin.server_engine())
    with ServerThread(app) as server, browser_page(server.base_url + "/", tmp_path) as page:
        page.wait_for(f"document.getElementById('model').textContent === {llama_twin.name!r}")
        page.type_into("prompt", "dinner tonight?")
        page.click("send")
        page.wait_for(LAST_REPLY_DONE)
        [_, reply] = page.bubbles()
    assert reply[0] == "msg assistant" and reply[2] == "done" and reply[1].startswith("la la")


# --- eval ------------------------------------------------------------------------------------------------------


@needs_llama_cpp
def test_eval_generates_the_adapters_replies_through_the_backend(run_copy: Path, llama_twin: Any) -> None:
    from twinbot.quality.evaluate import EvalOptions, run_eval

    options = EvalOptions(run_dir=run_copy, samples=2, max_new_tokens=6, loss_samples=2, detector_resamples=5)
    on_llama = {**options.__dict__, "backend": "llamacpp", "gguf_type": "f32"}  # the export the others made
    result = run_eval(EvalOptions(**on_llama), quiet=True)
    assert (result.generation["backend"], result.generation["gguf_type"]) == ("llamacpp", "f32")
    torch_result = run_eval(options, quiet=True)
    assert (torch_result.generation["backend"], torch_result.generation["gguf_type"]) == ("torch", None)
    assert [row.adapter for row in result.rows] == [row.adapter for row in torch_result.rows]
