"""The prepare pipeline: core over Message lists, split, atomic output, report, CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from twinbot.data import prepare as prepare_module
from twinbot.data.prepare import (
    PersonaNotFound,
    PrepareOptions,
    prepare_messages,
    run_prepare,
    split_conversations,
    write_outputs,
)
from twinbot.data.records import Message, MessageKind, Sample
from twinbot.errors import TwinbotError
from twinbot.fileio import OUTPUT_MARKER, keyed_digest

FIXTURE = Path(__file__).parent / "fixtures" / "prepare" / "chats.jsonl"
T0 = datetime(2024, 1, 1, 9, 0, 3, tzinfo=UTC)


def msg(
    author: str,
    text: str,
    at: datetime,
    chat: str = "c1",
    kind: MessageKind = "text",
    platform: str = "test",
    author_id: str | None = None,
) -> Message:
    return Message(
        platform=platform,
        chat_id=chat,
        id="0",
        timestamp=at,
        author_id=author_id or f"u-{author.lower()}",
        author=author,
        text=text,
        kind=kind,
    )


def many_conversations(n: int, chats: int = 3) -> list[Message]:
    """n sessions spread over a few chats, each: friend asks, Sam answers, friend, Sam."""
    messages = []
    for i in range(n):
        chat = f"chat-{i % chats}"
        start = T0 + timedelta(days=i)
        friend = ["Alex", "Jo", "Kim"][i % chats]
        messages += [
            msg(friend, f"question {i}", start, chat),
            msg("Sam", f"answer {i}", start + timedelta(minutes=1), chat),
            msg(friend, f"follow-up {i}", start + timedelta(minutes=2), chat),
            msg("Sam", f"second answer {i}", start + timedelta(minutes=3), chat),
        ]
    return messages


def read_samples(path: Path) -> list[Sample]:
    return [Sample.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


# --- core ---------------------------------------------------------------------------------------------


def test_prepare_messages_counts_reasons_persona_drops_pii_and_authors() -> None:
    messages = [
        msg("Alex", "hey, mail me at alex@example.com", T0),
        msg("Sam", "sure thing", T0 + timedelta(seconds=30)),
        msg("Sam", "sure thing", T0 + timedelta(seconds=40)),  # duplicate (persona)
        msg("Sam", "", T0 + timedelta(seconds=50), kind="media"),  # media-only (persona)
        msg("Alex", "Alex started a call", T0 + timedelta(seconds=60), kind="system"),
        msg("MEE6", "GG Alex, you leveled up", T0 + timedelta(seconds=70)),  # bot by name
        msg("Alex", "!rank", T0 + timedelta(seconds=80)),
        msg("Sam", "call me +44 7700 900123", T0 + timedelta(seconds=90)),
    ]
    data = prepare_messages(messages, PrepareOptions(me=["sam"]))
    stats = data.stats
    assert stats.messages_read == 8
    assert stats.by_kind == {"text": 6, "media": 1, "system": 1, "call": 0}
    assert stats.kept == 3
    assert {k: v for k, v in stats.dropped.items() if v} == {
        "duplicate": 1,
        "media_only": 1,
        "system": 1,
        "bot": 1,
        "bot_command": 1,
    }
    assert {k: v for k, v in stats.dropped_persona.items() if v} == {"duplicate": 1, "media_only": 1}
    assert stats.pii["EMAIL"] == 1 and stats.pii["PHONE"] == 1
    assert stats.persona_messages == 2
    assert [(a.author, a.messages) for a in stats.authors] == [("Sam", 4), ("Alex", 2), ("MEE6", 1)]
    assert data.persona == "Sam"
    assert data.me_ids == {"u-sam"}
    texts = [t for c in data.conversations for turn in c.turns for t in turn.texts]
    assert texts == ["hey, mail me at <EMAIL>", "sure thing", "call me <PHONE>"]


def test_phone_number_display_names_are_scrubbed_in_samples(tmp_path: Path) -> None:
    # WhatsApp names unsaved contacts by their number; names reach the samples as "Name: text" prefixes.
    messages = [
        msg("+44 7700 900123", "who's in?", T0),
        msg("Jo", "me", T0 + timedelta(seconds=5)),
        msg("Sam", "count me in", T0 + timedelta(seconds=9)),
    ]
    options = PrepareOptions(me=["Sam"], out=tmp_path / "data")
    data = prepare_messages(messages, options)
    assert "<PHONE>" in [a.author for a in data.stats.authors]
    write_outputs(data, options)
    written = (tmp_path / "data" / "train.jsonl").read_text(encoding="utf-8")
    assert "<PHONE>: who's in?\\nJo: me" in written
    assert "7700" not in written
    report = (tmp_path / "data" / "report.json").read_text(encoding="utf-8")
    assert "<PHONE>" in report  # the report names authors the way the samples do
    assert "7700" not in report


def test_redact_lists_replace_names_in_text_and_speaker_names(tmp_path: Path) -> None:
    messages = [
        msg("Jo Smith", "ask kai, he lives on elm street", T0),
        msg("Lee", "or text him", T0 + timedelta(seconds=5)),
        msg("Sam", "kai is away", T0 + timedelta(seconds=9)),
    ]
    names = tmp_path / "names.txt"
    names.write_text("Elm Street\n", encoding="utf-8")
    options = PrepareOptions(
        me=["Sam"], out=tmp_path / "data", redact=["Kai", "Jo Smith"], redact_files=[names]
    )
    data = prepare_messages(messages, options)
    write_outputs(data, options)
    written = (tmp_path / "data" / "train.jsonl").read_text(encoding="utf-8")
    written += (tmp_path / "data" / "eval.jsonl").read_text(encoding="utf-8")
    assert "<REDACTED>: ask <REDACTED>, he lives on <REDACTED>\\nLee: or text him" in written
    assert "<REDACTED> is away" in written
    assert "Jo" not in written and "kai" not in written.casefold() and "elm" not in written.casefold()
    report = json.loads((tmp_path / "data" / "report.json").read_text(encoding="utf-8"))
    assert report["pii"]["REDACTED"] == 3  # message text only: speaker names are not counted


def test_conversation_ids_are_salted_per_data_set_and_reproducible(tmp_path: Path) -> None:
    messages = [msg("Jo", "hey", T0), msg("Sam", "hi", T0 + timedelta(seconds=5))]

    def ids(out: Path) -> set[str]:
        data = prepare_messages(messages, PrepareOptions(me=["Sam"], out=out))
        return {c.id for c in data.conversations}

    assert ids(tmp_path / "a") == ids(tmp_path / "a")
    assert ids(tmp_path / "a").isdisjoint(ids(tmp_path / "b"))


def test_no_scrub_keeps_the_text() -> None:
    messages = [msg("Alex", "alex@example.com", T0), msg("Sam", "ok", T0 + timedelta(seconds=5))]
    data = prepare_messages(messages, PrepareOptions(me=["Sam"], scrub=False))
    assert data.conversations[0].turns[0].texts == ["alex@example.com"]
    assert sum(data.stats.pii.values()) == 0


def test_me_matches_ids_and_names_case_insensitively_exactly_and_repeatably() -> None:
    messages = [
        msg("Sam", "a", T0, author_id="111"),
        msg("Sammy", "b", T0 + timedelta(seconds=1), author_id="222"),
        msg("S.", "c", T0 + timedelta(seconds=2), author_id="333"),
    ]
    assert prepare_messages(messages, PrepareOptions(me=["SAM"])).me_ids == {"111"}
    assert prepare_messages(messages, PrepareOptions(me=["sam", "333"])).me_ids == {"111", "333"}
    with pytest.raises(PersonaNotFound):
        prepare_messages(messages, PrepareOptions(me=["sa"]))


def test_persona_defaults_to_the_most_common_name_and_can_be_overridden() -> None:
    messages = [
        msg("Sam", "a", T0, author_id="1"),
        msg("Sam L.", "b", T0 + timedelta(seconds=1), author_id="1"),
        msg("Sam L.", "c", T0 + timedelta(seconds=2), author_id="1"),
    ]
    assert prepare_messages(messages, PrepareOptions(me=["1"])).persona == "Sam L."
    assert prepare_messages(messages, PrepareOptions(me=["1"], persona="Samantha")).persona == "Samantha"


def test_missing_or_unknown_me_lists_top_authors_without_text() -> None:
    messages = [msg(f"Person{i}", "secret text", T0 + timedelta(seconds=i)) for i in range(15)]
    messages += [msg("Person3", "more", T0 + timedelta(minutes=1))]
    with pytest.raises(PersonaNotFound) as missing:
        prepare_messages(messages, PrepareOptions(me=[]))
    assert len(missing.value.authors) == 10
    assert missing.value.authors[0].author == "Person3"
    assert missing.value.authors[0].messages == 2
    assert "--me" in str(missing.value)
    with pytest.raises(PersonaNotFound, match="matches no author"):
        prepare_messages(messages, PrepareOptions(me=["nobody"]))


def test_empty_and_unusable_input_are_one_line_errors() -> None:
    with pytest.raises(TwinbotError, match="no messages"):
        prepare_messages([], PrepareOptions(me=["Sam"]))
    only_system = [msg("Sam", "joined", T0, kind="system"), msg("Sam", "", T0, kind="media")]
    with pytest.raises(TwinbotError, match="filtered out"):
        prepare_messages(only_system, PrepareOptions(me=["Sam"]))
    persona_dropped = [msg("Alex", "hi", T0), msg("Sam", "!help", T0 + timedelta(seconds=1))]
    with pytest.raises(TwinbotError, match="none of your messages"):
        prepare_messages(persona_dropped, PrepareOptions(me=["Sam"]))
    with pytest.raises(TwinbotError, match="eval-fraction"):
        prepare_messages(many_conversations(2), PrepareOptions(me=["Sam"], eval_fraction=1.0))


def test_style_only_source_counts_as_persona() -> None:
    package = [
        msg("sam_99", "my own words", T0, platform="discord-package", author_id="42"),
        msg("sam_99", "more of them", T0 + timedelta(seconds=10), platform="discord-package", author_id="42"),
    ]
    data = prepare_messages([*package, msg("Sam", "hi", T0, chat="wa")], PrepareOptions(me=["Sam"]))
    assert data.stats.persona_messages == 3
    style = [c for c in data.conversations if c.style_only]
    assert len(style) == 1 and style[0].turns[0].texts == ["my own words", "more of them"]


# --- split --------------------------------------------------------------------------------------------


def _split_ids(seed: int, strategy: str = "conversation", n: int = 30) -> tuple[list[str], list[str]]:
    data = prepare_messages(many_conversations(n), PrepareOptions(me=["Sam"]))
    train, evaluation = split_conversations(data.conversations, strategy, 0.2, seed)
    return [c.id for c in train], [c.id for c in evaluation]


def test_split_is_deterministic_per_seed_and_by_whole_conversation() -> None:
    train, evaluation = _split_ids(seed=1)
    assert (train, evaluation) == _split_ids(seed=1)
    assert len(evaluation) == 6 and len(train) == 24
    assert not set(train) & set(evaluation)
    assert _split_ids(seed=2)[1] != evaluation


def test_time_split_puts_the_latest_conversations_in_eval() -> None:
    data = prepare_messages(many_conversations(10), PrepareOptions(me=["Sam"]))
    train, evaluation = split_conversations(data.conversations, "time", 0.2, 0)
    latest_train = max(c.turns[-1].end for c in train)
    assert len(evaluation) == 2
    assert all(c.turns[0].start > latest_train for c in evaluation)


def test_split_edge_cases() -> None:
    data = prepare_messages(many_conversations(2), PrepareOptions(me=["Sam"]))
    train, evaluation = split_conversations(data.conversations, "conversation", 0.01, 0)
    assert len(train) == 1 and len(evaluation) == 1  # at least one eval conversation when >= 2
    train, evaluation = split_conversations(data.conversations, "conversation", 0.0, 0)
    assert len(train) == 2 and evaluation == []
    one = prepare_messages(many_conversations(1), PrepareOptions(me=["Sam"]))
    train, evaluation = split_conversations(one.conversations, "conversation", 0.5, 0)
    assert len(train) == 1 and evaluation == []


def test_no_window_of_one_conversation_lands_on_both_sides(tmp_path: Path) -> None:
    # Long conversations give many overlapping windows; none may be shared between train and eval.
    messages = []
    for c in range(8):
        start = T0 + timedelta(days=c)
        for i in range(12):
            who = "Sam" if i % 2 else "Alex"
            messages.append(msg(who, f"c{c} line {i}", start + timedelta(minutes=i), chat=f"chat{c % 2}"))
    options = PrepareOptions(me=["Sam"], out=tmp_path / "out", eval_fraction=0.25, seed=5)
    report = write_outputs(prepare_messages(messages, options), options)
    train = read_samples(tmp_path / "out" / "train.jsonl")
    evaluation = read_samples(tmp_path / "out" / "eval.jsonl")
    assert report.samples_train == len(train) and report.samples_eval == len(evaluation)
    assert evaluation and train
    assert not {s.conversation_id for s in train} & {s.conversation_id for s in evaluation}
    train_lines = {t.content for s in train for t in s.messages[1:]}
    eval_lines = {t.content for s in evaluation for t in s.messages[1:]}
    assert not train_lines & eval_lines


# --- outputs ------------------------------------------------------------------------------------------


def test_write_outputs_creates_all_files_and_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "data"
    options = PrepareOptions(me=["Sam"], out=out)
    write_outputs(prepare_messages(many_conversations(10), options), options)
    assert sorted(p.name for p in out.iterdir()) == [
        OUTPUT_MARKER,
        "eval.jsonl",
        "lengths.png",
        "report.json",
        "train.jsonl",
    ]
    assert (out / "lengths.png").read_bytes().startswith(b"\x89PNG")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for key in (
        "messages_read",
        "by_kind",
        "kept",
        "dropped",
        "pii",
        "sessions",
        "samples_train",
        "samples_eval",
        "persona_messages",
        "authors",
    ):
        assert key in report, key
    assert report["sessions"] == 10
    assert report["samples_train"] + report["samples_eval"] == 20
    assert report["authors"][0] == {
        "author_key": keyed_digest("author-ids", "u-sam"),
        "author": "Sam",
        "messages": 20,
    }
    assert "u-sam" not in json.dumps(report)
    assert "token_lengths" not in report
    for sample in read_samples(out / "train.jsonl") + read_samples(out / "eval.jsonl"):
        assert sample.messages[0].role == "system"
        assert sample.messages[-1].role == "assistant"


def test_a_failure_while_writing_leaves_no_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "data"
    options = PrepareOptions(me=["Sam"], out=out)
    data = prepare_messages(many_conversations(4), options)

    def broken_plot(path: Path, lengths: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(prepare_module, "plot_lengths", broken_plot)
    with pytest.raises(OSError):
        write_outputs(data, options)
    assert list(tmp_path.iterdir()) == []


def test_no_samples_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    messages = [msg("Sam", "talking to myself", T0), msg("Alex", "hello?", T0 + timedelta(seconds=5))]
    options = PrepareOptions(me=["Sam"], out=tmp_path / "data")
    with pytest.raises(TwinbotError, match="no training samples"):
        write_outputs(prepare_messages(messages, options), options)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite_and_only_twinbots_own_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    options = PrepareOptions(paths=[FIXTURE], me=["Sam"], out=out)
    with pytest.raises(TwinbotError, match="--overwrite"):
        run_prepare(options)
    options.overwrite = True
    with pytest.raises(TwinbotError, match="twinbot did not write it"):
        run_prepare(options)  # --out ~/Documents --overwrite must not wipe the user's folder
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"

    options.out = tmp_path / "prepared"
    run_prepare(options)
    (options.out / "stale.txt").write_text("old run", encoding="utf-8")
    run_prepare(options)  # a folder prepare wrote is replaced as a whole
    assert not (options.out / "stale.txt").exists()
    assert (options.out / "train.jsonl").exists() and (options.out / OUTPUT_MARKER).is_file()


class FakeTokenizer:
    """Just enough of a Hugging Face tokenizer: one token per character."""

    chat_template = "fake"

    def __call__(self, texts: Any, add_special_tokens: bool = False) -> dict[str, Any]:
        if isinstance(texts, str):
            return {"input_ids": list(range(len(texts)))}
        return {"input_ids": [list(range(len(t))) for t in texts]}

    def decode(self, ids: Sequence[int]) -> str:
        return "x" * len(ids)

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False, **_: Any) -> str:
        return "".join(f"<{m['role']}>{m['content']}</s>" for m in messages)


def test_token_lengths_are_reported_with_a_tokenizer(tmp_path: Path) -> None:
    options = PrepareOptions(me=["Sam"], out=tmp_path / "data", model="fake")
    report = write_outputs(prepare_messages(many_conversations(5), options), options, FakeTokenizer())
    saved = json.loads((tmp_path / "data" / "report.json").read_text(encoding="utf-8"))
    assert saved["token_lengths"] == report.token_lengths
    samples = read_samples(tmp_path / "data" / "train.jsonl") + read_samples(tmp_path / "data" / "eval.jsonl")
    longest = max(len(FakeTokenizer().apply_chat_template(s.to_json()["messages"])) for s in samples)
    assert saved["token_lengths"]["max"] == longest
    assert saved["token_lengths"]["p50"] <= saved["token_lengths"]["p90"] <= longest


# --- end to end through the jsonl source and the CLI ---------------------------------------------------


def test_run_prepare_on_the_fixture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    report = run_prepare(PrepareOptions(paths=[FIXTURE], me=["sam"], out=out, seed=3))
    saved = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert saved["messages_read"] == 25
    assert saved["by_kind"] == {"text": 23, "media": 1, "system": 1, "call": 0}
    dropped = {k: v for k, v in saved["dropped"].items() if v}
    assert dropped == {
        "bot": 1,
        "bot_command": 1,
        "link_only": 1,
        "media_only": 1,
        "system": 1,
        "duplicate": 1,
    }
    assert {k: v for k, v in saved["dropped_persona"].items() if v} == {"media_only": 1, "duplicate": 1}
    assert saved["kept"] == 19 and saved["persona_messages"] == 8
    assert saved["pii"]["EMAIL"] == 1 and saved["pii"]["PHONE"] == 1
    assert saved["sessions"] == 5
    assert saved["samples_train"] + saved["samples_eval"] == 6
    assert saved["samples_eval"] >= 1
    assert report.persona == "Sam"
    everything = (out / "train.jsonl").read_text(encoding="utf-8") + (out / "eval.jsonl").read_text(
        encoding="utf-8"
    )
    assert "jo.b@example.com" not in everything and "7700" not in everything
    assert "Alex: anyone up for pizza tonight?\\nJo: always" in everything
    printed = capsys.readouterr().out
    assert "samples train" in printed
    assert "pizza" not in printed  # counts only, never message text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twinbot", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_me_not_found_lists_authors_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = _cli("prepare", str(FIXTURE), "--me", "nobody", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --me 'nobody' matches no author")
    assert "Alex" in result.stderr and "u-alex" in result.stderr
    assert "pizza" not in result.stderr + result.stdout
    assert not out.exists()
    missing = _cli("prepare", str(FIXTURE), "--out", str(out))
    assert missing.returncode == 2 and "--me is required" in missing.stderr


def test_cli_prepare_writes_the_folder_and_bad_paths_fail_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = _cli("prepare", str(FIXTURE), "--me", "u-sam", "--out", str(out), "--split", "time")
    assert result.returncode == 0, result.stderr
    assert (out / "train.jsonl").exists() and (out / "report.json").exists()
    again = _cli("prepare", str(FIXTURE), "--me", "u-sam", "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    other = tmp_path / "other"
    bad = _cli("prepare", str(FIXTURE), str(tmp_path / "missing.jsonl"), "--me", "Sam", "--out", str(other))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "missing.jsonl" in bad.stderr
    assert not other.exists()


def test_real_tokenizer_budget_and_lengths(tiny_model_dir: Path, tmp_path: Path) -> None:
    from twinbot.models.loading import load_tokenizer

    out = tmp_path / "data"
    options = PrepareOptions(
        paths=[FIXTURE], me=["Sam"], out=out, model=str(tiny_model_dir), context_tokens=6
    )
    report = run_prepare(options)
    assert report.token_lengths is not None
    assert 0 < report.token_lengths["p50"] <= report.token_lengths["max"]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    samples = read_samples(out / "train.jsonl") + read_samples(out / "eval.jsonl")
    templated = [
        len(tokenizer(tokenizer.apply_chat_template(s.to_json()["messages"], tokenize=False))["input_ids"])
        for s in samples
    ]
    assert report.token_lengths["max"] == max(templated)
    for sample in samples:
        context = [t.content for t in sample.messages[1:-1]]
        used = sum(len(ids) for ids in tokenizer(context, add_special_tokens=False)["input_ids"])
        assert used <= 6 + 1, context  # decode/re-encode of a cut turn may shift one token


def test_cli_bot_option_drops_that_author(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = _cli("prepare", str(FIXTURE), "--me", "Sam", "--out", str(out), "--bot", "kim", "--bot", "u-jo")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["dropped"]["bot"] == 1 + 1 + 3  # PizzaBot (is_bot), Kim, and Jo's three non-system messages


def test_sample_lines_are_exactly_json_dumps_of_the_samples(tmp_path: Path) -> None:
    # The writer reuses the JSON of turns shared between samples; the result must be byte-identical.
    messages = []
    for i in range(30):
        who = "Sam" if i % 3 == 2 else ["Alex", "Jo"][i % 2]
        messages.append(msg(who, f'line {i} "quoted" é\\n' + "x" * (i * 7), T0 + timedelta(minutes=i)))
    options = PrepareOptions(me=["Sam"], out=tmp_path / "data", context_chars=120, eval_fraction=0.0)
    write_outputs(prepare_messages(messages, options), options)
    lines = (tmp_path / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10
    for line in lines:
        sample = Sample.from_json(json.loads(line))
        assert line == json.dumps(sample.to_json(), ensure_ascii=False)
    sample = Sample.from_json(json.loads(lines[0]))
    sample.extra["weight"] = 2
    assert prepare_module.sample_line(sample, {}) == json.dumps(sample.to_json(), ensure_ascii=False)
    sample.extra.clear()
    sample.style_only = True
    sample.conversation_id = 'odd "id" \u2028'
    assert prepare_module.sample_line(sample, {}) == json.dumps(sample.to_json(), ensure_ascii=False)
