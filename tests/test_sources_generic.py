"""Generic JSON Lines and CSV sources: the documented schema, defaults, ordering, bad input, fuzzing."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.chat_order import sort_chat, time_key
from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, format_module, generic_csv, generic_jsonl
from twinbot.data.sources.common import from_unix_seconds, parse_iso_datetime
from twinbot.errors import TwinbotError

FIXTURES = Path(__file__).parent / "fixtures" / "generic"
JSONL = FIXTURES / "family.jsonl"
CSV = FIXTURES / "chat.csv"
SECRET = "the secret plan is tuesday"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_jsonl(path: Path) -> list[Message]:
    return list(generic_jsonl.parse(path, ParseOptions()))


def parse_csv(path: Path) -> list[Message]:
    return list(generic_csv.parse(path, ParseOptions()))


def error_of(parse_fn: object, path: Path) -> TwinbotError:
    with pytest.raises(TwinbotError) as info:
        list(parse_fn(path))  # type: ignore[operator]
    assert info.value.path == path
    assert SECRET not in str(info.value)
    return info.value


def test_registered_names() -> None:
    assert format_module("jsonl") is generic_jsonl
    assert format_module("csv") is generic_csv


# --- JSON Lines -----------------------------------------------------------------------------------


def test_jsonl_fixture() -> None:
    messages = parse_jsonl(JSONL)
    assert {m.platform for m in messages} == {"jsonl"}
    assert [(m.chat_id, m.id) for m in messages] == [
        ("family", "m1"),  # chat defaults to the file name
        ("family", "m3"),
        ("family", "m2"),
        ("family", "m4"),
        ("work", "7"),  # id defaults to the line number (blank lines still count)
        ("work", "6"),
    ]
    by_id = {m.id: m for m in messages}
    assert by_id["m1"].timestamp == datetime(2024, 5, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    assert by_id["m2"].timestamp == datetime(2024, 5, 1, 7, 1, tzinfo=UTC)  # unix seconds -> UTC
    assert by_id["m2"].reply_to == "m1" and by_id["m2"].author_id == "u2"
    assert (by_id["m3"].kind, by_id["m3"].attachments) == ("media", 1)
    assert by_id["m4"].kind == "system"
    assert by_id["m4"].timestamp.microsecond == 500000  # unix seconds as a string, with a fraction
    assert by_id["6"].author_id == "Sam"  # author_id defaults to author
    assert by_id["6"].timestamp == datetime(2024, 5, 2, 10, 0)  # no zone: naive
    assert by_id["7"].is_bot and not by_id["6"].is_bot


def test_jsonl_sniff(tmp_path: Path) -> None:
    assert generic_jsonl.sniff(JSONL)
    assert not generic_jsonl.sniff(CSV)
    other = tmp_path / "o.jsonl"
    other.write_text('{"ts": 1, "who": "a", "msg": "b"}\n', encoding="utf-8")
    assert not generic_jsonl.sniff(other)
    assert not generic_jsonl.sniff(tmp_path)
    assert not generic_jsonl.sniff(FIXTURES.parent / "discord" / "dm.json")


def test_jsonl_bom_crlf_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(
        b'\xef\xbb\xbf{"timestamp": 20, "author": "x", "text": "two", "chat": "c"}\r\n'
        b'{"timestamp": 10, "author": "x", "text": "one", "chat": "c"}\r\n'
    )
    (folder / "b.jsonl").write_text('{"timestamp": 15, "author": "y", "text": "mid", "chat": "c"}\n')
    (folder / "ignored.txt").write_text("not read")
    messages = parse_jsonl(folder)
    assert [m.text for m in messages] == ["one", "mid", "two"]  # one chat across files, in time order


def test_jsonl_equal_times_keep_file_order(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [f'{{"timestamp": "2024-01-01T00:00:00Z", "author": "a", "text": "{i}"}}' for i in range(20)]
    lines.insert(5, '{"timestamp": "2023-12-31T23:59:59+00:00", "author": "a", "text": "early"}')
    path.write_text("\n".join(lines), encoding="utf-8")
    assert [m.text for m in parse_jsonl(path)] == ["early", *[str(i) for i in range(20)]]


def test_jsonl_mixed_naive_and_aware_times_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "mix.jsonl"
    path.write_text(
        '{"timestamp": "2024-01-01T12:00:00+00:00", "author": "a", "text": "b"}\n'
        '{"timestamp": "2024-01-01T11:00:00", "author": "a", "text": "a"}\n',
        encoding="utf-8",
    )
    assert [m.text for m in parse_jsonl(path)] == ["a", "b"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f'{{"author": "a", "text": "{SECRET}"}}', "missing timestamp"),
        (f'{{"timestamp": 1, "text": "{SECRET}"}}', "missing author"),
        ('{"timestamp": 1, "author": "a"}', "missing text"),
        (f'{{"timestamp": "soon", "author": "a", "text": "{SECRET}"}}', "unreadable timestamp"),
        (f'{{"timestamp": 1e300, "author": "a", "text": "{SECRET}"}}', "unreadable timestamp"),
        (f'{{"timestamp": [1], "author": "a", "text": "{SECRET}"}}', "timestamp must be"),
        (f'{{"timestamp": 1, "author": " ", "text": "{SECRET}"}}', "empty author"),
        (f'{{"timestamp": 1, "author": {{}}, "text": "{SECRET}"}}', "author must be"),
        ('{"timestamp": 1, "author": "a", "text": 5}', "text must be"),
        (f'{{"timestamp": 1, "author": "a", "text": "{SECRET}", "kind": "sticker"}}', "unknown kind"),
        (f'{{"timestamp": 1, "author": "a", "text": "{SECRET}", "id": 1.2e18}}', "not a decimal"),
        (f'{{"timestamp": 1, "author": "a", "text": "{SECRET}", "attachments": -1}}', "attachments"),
        (f'{{"timestamp": 1, "author": "a", "text": "{SECRET}", "is_bot": "maybe"}}', "is_bot"),
        (f'["{SECRET}"]', "JSON object per line"),
        (f'{{"timestamp": 1, "author": "a", "text": "{SECRET}"', "not a JSON object"),
    ],
)
def test_jsonl_bad_records_name_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 1, "author": "a", "text": "fine"}\n\n' + line + "\n", encoding="utf-8")
    error = error_of(parse_jsonl, path)
    assert error.line == 3
    assert expected in error.message


def test_jsonl_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    assert "no records" in error_of(parse_jsonl, empty).message
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(
        b'{"timestamp": 1, "author": "a", "text": "ok"}\n{"timestamp": 1, "author": "\xe9", "text": ""}\n'
    )
    error = error_of(parse_jsonl, latin1)
    assert (error.line, "UTF-8" in error.message) == (2, True)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    error_of(parse_jsonl, binary)
    folder = tmp_path / "nothing"
    folder.mkdir()
    assert "no .jsonl files" in error_of(parse_jsonl, folder).message
    missing = tmp_path / "missing.jsonl"
    assert "cannot read" in error_of(parse_jsonl, missing).message


@FUZZ
@given(st.binary(max_size=300))
def test_jsonl_fuzz_random_bytes(data: bytes) -> None:
    assert_only_twinbot_errors(parse_jsonl, data, ".jsonl")


@FUZZ
@given(st.data())
def test_jsonl_fuzz_mutated_fixture(data: st.DataObject) -> None:
    assert_only_twinbot_errors(parse_jsonl, mutate(JSONL.read_bytes(), data), ".jsonl")


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "timestamp",
                "author",
                "text",
                "chat",
                "id",
                "author_id",
                "reply_to",
                "kind",
                "attachments",
                "is_bot",
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda children: (
                st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=3), children, max_size=2)
            ),
            max_leaves=4,
        ),
    )
)
def test_jsonl_fuzz_field_values(record: dict[str, object]) -> None:
    import json

    assert_only_twinbot_errors(parse_jsonl, json.dumps(record).encode(), ".jsonl")


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_fixture() -> None:
    raw = CSV.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    messages = parse_csv(CSV)
    assert {m.platform for m in messages} == {"csv"}
    assert [(m.chat_id, m.id, m.author) for m in messages] == [
        ("family", "1", "Mum"),
        ("family", "2", "Sam"),
        ("chat", "3", "Sam"),  # empty chat cell: the file name
    ]
    first, second, third = messages
    assert first.text == "Good morning,\nall of you"  # multi-line value, CRLF normalized
    assert second.reply_to == "1" and second.timestamp == datetime(2024, 5, 1, 7, 1, tzinfo=UTC)
    assert third.text == 'she said "hi"' and third.timestamp == datetime(2024, 5, 1, 10, 0)
    assert first.author_id == "Mum"


def test_csv_sniff_and_delimiters(tmp_path: Path) -> None:
    assert generic_csv.sniff(CSV)
    assert not generic_csv.sniff(JSONL)
    assert not generic_csv.sniff(
        FIXTURES.parent / "discord" / "Direct Messages - bob [900000000000000002].csv"
    )
    for delimiter in (";", "\t"):
        path = tmp_path / f"d{ord(delimiter)}.csv"
        path.write_text(
            delimiter.join(["author", "text", "timestamp", "kind"])
            + "\n"
            + delimiter.join(["ann", "a, b", "1700000000", "text"])
            + "\n",
            encoding="utf-8",
        )
        assert generic_csv.sniff(path)
        (message,) = parse_csv(path)
        assert (message.author, message.text, message.timestamp.year) == ("ann", "a, b", 2023)


@pytest.mark.parametrize(
    ("body", "expected", "line"),
    [
        (f"2024-01-01,a,{SECRET},x,y\n", "row has 5 columns", 2),
        (f"whenever,a,{SECRET}\n", "unreadable timestamp", 2),
        (f",a,{SECRET}\n", "unreadable timestamp", 2),
        (f"2024-01-01,,{SECRET}\n", "empty author", 2),
        (f'2024-01-01,a,"{SECRET}\nmore"\n2024-01-01,,x\n', "empty author", 4),
    ],
)
def test_csv_bad_rows(tmp_path: Path, body: str, expected: str, line: int) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,author,text\n" + body, encoding="utf-8")
    error = error_of(parse_csv, path)
    assert expected in error.message and error.line == line


def test_csv_bad_files(tmp_path: Path) -> None:
    cases = {
        "empty.csv": (b"", "no header row"),
        "noheader.csv": (b"when,who,what\n1,a,b\n", "header row must name"),
        "latin1.csv": (b"timestamp,author,text\n1,a,caf\xe9\n", "UTF-8"),
        "unclosed.csv": (b'timestamp,author,text\n1,a,"' + b"x" * 140_000, "malformed CSV"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert expected in error_of(parse_csv, path).message, name


@FUZZ
@given(st.binary(max_size=300))
def test_csv_fuzz_random_bytes(data: bytes) -> None:
    assert_only_twinbot_errors(parse_csv, b"timestamp,author,text,kind,id,attachments\n" + data, ".csv")


@FUZZ
@given(st.data())
def test_csv_fuzz_mutated_fixture(data: st.DataObject) -> None:
    assert_only_twinbot_errors(parse_csv, mutate(CSV.read_bytes(), data), ".csv")


# --- shared helpers -------------------------------------------------------------------------------


def test_timestamp_helpers() -> None:
    assert parse_iso_datetime("2024-01-01T00:00:00.123456789Z") == datetime(
        2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_iso_datetime("2020-08-25 22:54:05.726000+00:00").tzinfo is not None
    with pytest.raises(ValueError):
        parse_iso_datetime("31/12/2024")
    assert from_unix_seconds("0") == datetime(1970, 1, 1, tzinfo=UTC)
    for bad in ("nan", "1e20", True):
        with pytest.raises(ValueError):
            from_unix_seconds(bad)  # type: ignore[arg-type]
    aware = datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert time_key(aware) == time_key(datetime(2024, 1, 1, 10))


def test_sort_chat_is_stable_and_handles_mixed_zones() -> None:
    def message(identifier: str, moment: datetime) -> Message:
        return Message("x", "c", identifier, moment, "a", "a", "")

    messages = [
        message("late", datetime(2024, 1, 2, tzinfo=UTC)),
        message("tie1", datetime(2024, 1, 1)),
        message("tie2", datetime(2024, 1, 1, tzinfo=UTC)),
        message("tie3", datetime(2024, 1, 1)),
    ]
    assert [m.id for m in sort_chat(messages)] == ["tie1", "tie2", "tie3", "late"]


def assert_only_twinbot_errors(parse_fn: object, data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            for message in parse_fn(path):  # type: ignore[operator]
                assert isinstance(message, Message) and isinstance(message.timestamp, datetime)
        except TwinbotError as exc:
            assert exc.path == path


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    buffer = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        if not buffer:
            break
        position = data.draw(st.integers(0, len(buffer) - 1))
        action = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        if action == "truncate":
            del buffer[position:]
        elif action == "flip":
            buffer[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            buffer[position:position] = data.draw(
                st.sampled_from([b'"', b",", b"{", b"\n", b"\xff", b"\x00", b"1e999"])
            )
        else:
            del buffer[position : position + data.draw(st.integers(1, 20))]
    return bytes(buffer)
