"""`twinbot parse`: the summary, the --jsonl stream, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import twinbot.data.parse as parse_module
from twinbot.cli import main
from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, discord_json, generic_jsonl

FIXTURES = Path(__file__).parent / "fixtures"
DCE_JSON = FIXTURES / "discord" / "dm.json"
JSONL = FIXTURES / "generic" / "family.jsonl"
SECRET = "the secret plan is tuesday"


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["twinbot", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_summary_shows_counts_authors_and_dates_but_no_text(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "parse", str(DCE_JSON))
    assert (code, err) == (0, "")
    assert str(DCE_JSON) in out and "format: discord-json (detected)" in out
    assert "text 4, media 2, system 2, call 1" in out
    assert "2024-02-03 18:00:00+01:00" in out and "2024-02-03 18:30:00-05:00" in out
    for author, author_id in (("Ally", "111111111111111111"), ("bob", "222222222222222222")):
        line = next(row for row in out.splitlines() if author_id in row)
        assert author in line and line.rstrip().endswith("4")
    for message in discord_json.parse(DCE_JSON, ParseOptions()):
        if len(message.text) > 5:
            assert message.text.splitlines()[0] not in out


def test_summary_for_several_paths_and_given_format(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "parse", "--format", "jsonl", str(JSONL), str(JSONL))
    assert code == 0
    assert out.count("format: jsonl (given)") == 2
    assert len(re.findall(r"chats\s+2\b", out)) == 2 and len(re.findall(r"messages\s+6\b", out)) == 2


def test_jsonl_stream_round_trips(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "parse", "--jsonl", str(DCE_JSON), str(JSONL))
    assert (code, err) == (0, "")
    records = [json.loads(line) for line in out.splitlines()]
    expected = list(discord_json.parse(DCE_JSON, ParseOptions())) + list(
        generic_jsonl.parse(JSONL, ParseOptions())
    )
    assert [Message.from_json(r) for r in records] == expected
    assert records[0]["text"] == "hey, anyone up for hiking on saturday?"  # the one place text is printed
    assert set(records[0]) == set(expected[0].to_json())


def test_top_authors_are_capped_and_names_are_sanitised(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    lines = [
        json.dumps({"timestamp": i, "author": f"person{i:02d}", "text": SECRET})
        for i in range(parse_module.TOP_AUTHORS + 5)
    ]
    lines.append(json.dumps({"timestamp": 99, "author": "evil\x1b[31mred\nname", "text": SECRET}))
    lines.append(json.dumps({"timestamp": 100, "author": "person00", "text": SECRET}))
    path.write_text("\n".join(lines), encoding="utf-8")
    code, out, _ = run_cli(monkeypatch, capsys, "parse", str(path))
    assert code == 0
    assert "person00" in out and "... 6 more authors" in out
    assert "\x1b[31m" not in out and SECRET not in out


def test_empty_export_says_no_messages(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "Guild - quiet [5].json"
    path.write_text('{"guild": {"id": "1"}, "channel": {"id": "5"}, "messages": []}', encoding="utf-8")
    code, out, _ = run_cli(monkeypatch, capsys, "parse", "-f", "discord-json", str(path))
    assert code == 0 and "no messages" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["parse", "--format", "nope", "x"], "unknown format 'nope'"),
        (["parse", "does-not-exist.json"], "does-not-exist.json: no such file or folder"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, args: list[str], expected: str) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_broken_file_error_names_file_and_line_without_text(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(
        json.dumps({"timestamp": 1, "author": "a", "text": SECRET})
        + "\n"
        + json.dumps({"author": "a", "text": SECRET}),
        encoding="utf-8",
    )
    code, out, err = run_cli(monkeypatch, capsys, "parse", "--jsonl", str(path))
    assert code == 2 and out == ""  # the whole chat is checked before any record is written
    assert (
        err
        == f"error: {path}:2: missing timestamp; each record needs timestamp, author and text (see docs/formats.md)\n"
    )
    assert SECRET not in err


def test_dayfirst_reaches_the_parser(monkeypatch) -> None:
    seen: list[ParseOptions] = []

    def fake_parse_path(path: Path, fmt: str | None = None, options: ParseOptions | None = None):
        seen.append(options or ParseOptions())
        return iter(())

    monkeypatch.setattr(parse_module, "parse_path", fake_parse_path)
    for dayfirst in (True, False, None):
        parse_module.run_parse([JSONL], fmt="jsonl", jsonl=True, dayfirst=dayfirst)
    assert [o.dayfirst for o in seen] == [True, False, None]


def test_real_process_writes_utf8_whatever_the_console_encoding(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}  # like a Windows console
    result = subprocess.run(
        [sys.executable, "-m", "twinbot", "parse", "--jsonl", str(JSONL)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    assert records[0]["text"] == "Good morning! 🌞"

    broken = tmp_path / "broken.json"
    broken.write_bytes(DCE_JSON.read_bytes()[:700])
    result = subprocess.run(
        [sys.executable, "-m", "twinbot", "parse", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {broken}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
