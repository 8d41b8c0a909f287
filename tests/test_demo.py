"""`twinbot demo` pieces on the tiny model: prepare -> train -> base vs adapter replies, and its guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from twinbot import demo
from twinbot.demo import DemoReply, claim_demo_dir, pick_prompts, replies_table, run_demo
from twinbot.errors import TwinbotError
from twinbot.fileio import read_jsonl


def test_run_demo_on_tiny_model_writes_everything_and_reruns(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "demo"
    console = Console(record=True, width=200)
    result = run_demo(
        out, model=str(tiny_model_dir), max_steps=2, prompts=2, max_new_tokens=3, console=console
    )

    assert (out / "data" / "train.jsonl").is_file() and (out / "data" / "eval.jsonl").is_file()
    assert (result.summary.adapter_dir / "adapter_config.json").is_file()
    assert result.summary.steps == 2 and result.summary.tokens_seen > 0
    summary = json.loads((out / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 2

    saved = json.loads(result.replies_path.read_text(encoding="utf-8"))
    assert len(saved) == len(result.replies) == 2
    eval_samples = [row for _, row in read_jsonl(out / "data" / "eval.jsonl")]
    real_replies = {row["messages"][-1]["content"] for row in eval_samples}
    assert all(reply["real"] in real_replies for reply in saved)
    assert all(set(reply) == {"context", "real", "base", "adapter"} for reply in saved)
    text = console.export_text()
    assert "base model vs trained adapter" in text
    assert result.replies[0].context.split()[0] in text  # one word: the table may wrap lines

    # A second run replaces the demo's own outputs instead of refusing them.
    again = run_demo(
        out, model=str(tiny_model_dir), max_steps=1, prompts=1, max_new_tokens=2, console=Console()
    )
    assert again.summary.steps == 1
    assert json.loads((out / "run" / "summary.json").read_text(encoding="utf-8"))["steps"] == 1
    assert len(json.loads(again.replies_path.read_text(encoding="utf-8"))) == 1


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(TwinbotError, match="not a folder made by `twinbot demo`"):
        claim_demo_dir(theirs)
    assert (theirs / "notes.txt").read_text(encoding="utf-8") == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_demo_dir(empty)
    claim_demo_dir(empty)  # its own folder again: fine
    assert (empty / demo.DEMO_MARKER).is_file()


def _sample(conversation: str, *roles_and_texts: tuple[str, str]) -> dict:
    return {
        "messages": [{"role": role, "content": text} for role, text in roles_and_texts],
        "conversation_id": conversation,
        "style_only": False,
    }


def test_pick_prompts_one_per_conversation_with_context(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    rows = [
        _sample("a", ("system", "s"), ("assistant", "style only, no context")),
        _sample("b", ("system", "s"), ("user", "Ann: hi\nBo: you there?"), ("assistant", "yes")),
        _sample("b", ("system", "s"), ("user", "again"), ("assistant", "same conversation")),
        _sample("c", ("system", "s"), ("user", "Cy: lunch?"), ("assistant", "sure")),
        _sample("d", ("system", "s"), ("user", "Di: late"), ("assistant", "over the limit")),
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    picked = pick_prompts(path, 2)
    assert [sample.messages[-1].content for sample in picked] == ["yes", "sure"]

    only_style = tmp_path / "style.jsonl"
    only_style.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    with pytest.raises(TwinbotError, match="no held-out prompts"):
        pick_prompts(only_style, 3)


def test_replies_table_shows_text_literally() -> None:
    reply = DemoReply(context="[bold]Ann[/bold]: hi", real="yo [x]", base="Hello!", adapter="heyy")
    console = Console(record=True, width=200)
    console.print(replies_table([reply]))
    text = console.export_text()
    assert "[bold]Ann[/bold]: hi" in text and "yo [x]" in text and "heyy" in text


def test_missing_sample_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "SAMPLE_FILES", ("no-such-sample.json",))
    with pytest.raises(TwinbotError, match="bundled sample not found"):
        demo.examples_dir()
