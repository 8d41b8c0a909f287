"""`twinbot chat`: the REPL under a pipe (scripted model), and a RUN made by really training the tiny model."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from support.runs import TrainedRun
from support.training import FIXTURE_SYSTEM_PROMPT
from test_inference import GREEDY, scripted_lm
from twinbot.bot.backends import TorchBackend
from twinbot.bot.chat import REPLY_PREFIX, ChatSession, run_chat, run_repl
from twinbot.bot.generate import GenerationSettings, build_prompt_ids, generate_reply, with_system_prompt
from twinbot.bot.loading import LoadedModel, load_for_inference
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from twinbot.models.loading import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def repl(
    lm: LoadedModel, lines: str, settings: GenerationSettings = GREEDY
) -> tuple[str, list[str], ChatSession]:
    session = ChatSession(backend=TorchBackend(lm), settings=settings)
    out = io.StringIO()
    notes: list[str] = []
    run_repl(session, io.StringIO(lines), out, interactive=False, note=notes.append)
    return out.getvalue(), notes, session


def prompts_seen(lm: LoadedModel) -> list[str]:
    return [lm.tokenizer.decode(ids) for ids in lm.model.prompts]  # type: ignore[union-attr]


def test_several_message_reply_shows_as_several_lines(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["hey\nwhat's up\nlol<|im_end|>"])
    out, _, session = repl(lm, "hi\n/quit\n")
    assert out.splitlines() == [f"{REPLY_PREFIX}hey", f"{REPLY_PREFIX}what's up", f"{REPLY_PREFIX}lol"]
    assert session.history == [ChatTurn("user", "hi"), ChatTurn("assistant", "hey\nwhat's up\nlol")]


def test_the_repl_shows_no_terminal_control_sequences(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["ok \x1b]0;pwned\x07\x1b[2J\rred\x9b31m \u202eevil\tfine<|im_end|>"])
    out, _, session = repl(lm, "hi\n")
    assert out == f"{REPLY_PREFIX}ok ]0;pwned[2Jred31m evil\tfine\n"
    assert session.history[-1].content.startswith("ok \x1b]0;")  # the history keeps what the model said


def test_the_repl_never_writes_the_other_side(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["sure\n", "<|", "im_start|>user\nand then I said"], filler=" more")
    out, _, session = repl(lm, "tell me\n")
    assert out == f"{REPLY_PREFIX}sure\n"
    lm = scripted_lm(tokenizer, ["sure\nuser: and then I said"], filler=" more")
    out, _, session = repl(lm, "tell me\n")
    assert out == f"{REPLY_PREFIX}sure\n"
    assert session.history[-1] == ChatTurn("assistant", "sure")


def test_multi_turn_history_reset_system_and_quit(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["ok<|im_end|>"] * 5)
    lines = "first\nsecond\n/reset\nthird\n/system Talk like a pirate.\nfourth\n/system\nfifth\n/quit\nnever read\n"
    out, notes, _ = repl(lm, lines)
    prompts = prompts_seen(lm)
    assert len(prompts) == 5  # /quit stopped reading
    assert "first" in prompts[1] and "second" in prompts[1]  # multi-turn: history is sent back
    assert "<|im_start|>assistant\nok<|im_end|>" in prompts[1]
    assert "first" not in prompts[2] and "third" in prompts[2]  # /reset forgot it
    assert "Talk like a pirate." in prompts[3] and "You are Sam." not in prompts[3]
    assert "You are Sam." in prompts[4] and "pirate" not in prompts[4]  # /system alone: the persona's again
    assert notes[0] == "conversation reset"
    assert out.count(REPLY_PREFIX) == 5


def test_end_of_input_and_unknown_commands(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["ok<|im_end|>"])
    out, notes, _ = repl(lm, "/frobnicate\n\n   \n")
    assert out == ""
    assert notes and notes[0].startswith("unknown command /frobnicate")


def test_an_empty_reply_keeps_the_users_turn_open(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["<|im_end|>"], later=[["fine<|im_end|>"]])
    _, _, session = repl(lm, "one\ntwo\n")
    assert session.history == [ChatTurn("user", "one\ntwo"), ChatTurn("assistant", "fine")]


def test_history_longer_than_the_context_window_is_trimmed(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["fine thanks<|im_end|>"] * 40, context_window=150)
    out, _, _ = repl(lm, "".join(f"message number {i}\n" for i in range(40)))
    assert out.count(REPLY_PREFIX) == 40
    last = prompts_seen(lm)[-1]
    assert len(lm.model.prompts[-1]) <= 150 - GREEDY.max_new_tokens  # type: ignore[union-attr]
    assert "message number 39" in last and "message number 0\n" not in last


def test_turns_no_prompt_can_hold_are_forgotten(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, ["fine thanks<|im_end|>"] * 60, context_window=150)
    lines = [f"message number {i}" for i in range(60)]
    _, _, session = repl(lm, "".join(line + "\n" for line in lines))
    assert len(session.history) < 50  # bounded: 120 turns were said, ~4 tokens each
    newer = sum(len(tokenizer.encode(t.content, add_special_tokens=False)) for t in session.history[1:])
    assert newer < 150
    # and nothing a prompt could still use is gone: the next prompt is the one the whole conversation gives
    everything = [
        turn for line in lines for turn in (ChatTurn("user", line), ChatTurn("assistant", "fine thanks"))
    ]
    assert session.history == everything[-len(session.history) :]
    assert build_prompt_ids(
        lm, with_system_prompt(lm, everything), GREEDY.max_new_tokens
    ) == build_prompt_ids(lm, session.messages(), GREEDY.max_new_tokens)


# --- a RUN made by `twinbot train` ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tiny_run: TrainedRun) -> Path:
    """The tiny model trained on the fixture data (conftest.tiny_run), shared: read only."""
    return tiny_run.path


def test_a_trained_run_loads_with_its_system_prompt(trained_run: Path) -> None:
    lm = load_for_inference(trained_run, device="cpu")
    assert lm.kind == "run"
    assert lm.system_prompt == FIXTURE_SYSTEM_PROMPT
    assert type(lm.model).__name__.startswith("Peft")
    assert "(adapter on " in lm.describe() and FIXTURE_SYSTEM_PROMPT not in lm.describe()
    stored = json.loads((trained_run / "adapter" / "twinbot.json").read_text(encoding="utf-8"))
    assert stored["system_prompt"] == FIXTURE_SYSTEM_PROMPT  # cached for when the data moves
    reply = generate_reply(lm, [ChatTurn("user", "hi")], GenerationSettings(max_new_tokens=8, seed=0))
    assert isinstance(reply, str) and "<|im" not in reply


def test_the_system_prompt_survives_moving_the_data(trained_run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(trained_run, moved)
    summary = json.loads((moved / "summary.json").read_text(encoding="utf-8"))
    summary["config"]["data_dir"] = str(tmp_path / "gone")
    (moved / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert load_for_inference(moved / "adapter", device="cpu").system_prompt == FIXTURE_SYSTEM_PROMPT
    (moved / "adapter" / "twinbot.json").unlink()
    lm = load_for_inference(moved, device="cpu")
    assert lm.system_prompt is None  # nothing left to find it from: still loads


def test_twinbot_chat_command_on_a_run(trained_run: Path) -> None:
    from typer.testing import CliRunner

    from twinbot.cli import app

    result = CliRunner().invoke(
        app,
        # torch: llama.cpp would export into the shared run (test_backends covers it on a copy)
        [
            "chat",
            str(trained_run),
            "--device",
            "cpu",
            "--max-new-tokens",
            "6",
            "--seed",
            "1",
            "--backend",
            "torch",
        ],
        input="hello there\n/quit\n",
    )
    assert result.exit_code == 0, result.output
    assert REPLY_PREFIX in result.output
    assert "hello there" not in result.output  # the user's line is not echoed or logged


def test_chat_on_a_missing_run_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError):
        run_chat(
            str(tmp_path / "missing-run"), GREEDY, device="cpu", stdin=io.StringIO(""), out=io.StringIO()
        )


def test_ctrl_c_during_a_reply_stops_it_and_the_repl_goes_on(tokenizer: Any) -> None:
    lm = scripted_lm(tokenizer, [], filler=" la", later=[["next<|im_end|>"]])

    def interrupt(calls: int) -> None:
        if calls == 4:
            raise KeyboardInterrupt

    lm.model.on_call = interrupt  # type: ignore[union-attr]
    out, _, session = repl(lm, "sing\nagain\n")
    assert out.splitlines() == [f"{REPLY_PREFIX}la la la [stopped]", f"{REPLY_PREFIX}next"]
    assert session.history[1] == ChatTurn("assistant", "la la la")
