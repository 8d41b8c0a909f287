"""Telegram Desktop JSON parser: fixtures in tests/fixtures/telegram/ cover each quirk of FORMATS.md."""

from __future__ import annotations

import importlib.util
import json
import random
import tempfile
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.records import Message
from twinbot.data.sources import FORMAT_MODULES, ParseOptions, detect_format, parse_path, telegram
from twinbot.errors import TwinbotError

FIXTURES = Path(__file__).parent / "fixtures" / "telegram"
SINGLE = FIXTURES / "single_chat.json"
FULL = FIXTURES / "full_export.json"
LEGACY = FIXTURES / "legacy_tool.json"
MIXED = FIXTURES / "mixed_dates.json"


def parse(path: Path) -> list[Message]:
    return list(telegram.parse(path, ParseOptions()))


def by_id(messages: list[Message]) -> dict[str, Message]:
    return {m.id: m for m in messages}


def write_json(tmp_path: Path, data: Any, name: str = "result.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --------------------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize("path", [SINGLE, FULL, LEGACY, MIXED])
def test_sniff_accepts_every_fixture(path: Path) -> None:
    assert telegram.sniff(path)


def test_sniff_accepts_an_export_folder_holding_result_json(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_bytes(SINGLE.read_bytes())
    assert telegram.sniff(tmp_path)
    assert [m.id for m in parse(tmp_path)] == [m.id for m in parse(SINGLE)]


@pytest.mark.parametrize(
    "content",
    [
        b'{"participants": [{"name": "A"}], "messages": [{"sender_name": "A", "timestamp_ms": 1}]}',
        b'{"guild": {"id": "0"}, "channel": {"id": "1"}, "messages": []}',
        b'[{"type": "message", "user": "U1", "ts": "1.0"}]',
        b"12/03/2021, 10:00 - Alice: hi\n",
        b"\x00\x01\x02binary",
        b"",
    ],
)
def test_sniff_rejects_other_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(content)
    assert not telegram.sniff(path)


def test_sniff_rejects_missing_paths_and_folders_without_result(tmp_path: Path) -> None:
    assert not telegram.sniff(tmp_path / "nope.json")
    assert not telegram.sniff(tmp_path)


def test_detect_format_picks_telegram() -> None:
    missing = [m for m in FORMAT_MODULES.values() if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"format modules not written yet: {missing}")
    assert detect_format(FULL) == "telegram"
    assert [m.id for m in parse_path(SINGLE)] == [m.id for m in parse(SINGLE)]


# --------------------------------------------------------------------------------------- single chat


def test_single_chat_with_bom_parses_every_message_in_order() -> None:
    messages = parse(SINGLE)
    assert [m.id for m in messages] == [str(i) for i in range(1, 12)]
    assert {m.chat_id for m in messages} == {"4242"}
    assert {m.platform for m in messages} == {"telegram"}
    assert all(m.timestamp.tzinfo is not None for m in messages)
    assert [m.timestamp for m in messages] == sorted(m.timestamp for m in messages)


def test_date_unixtime_is_preferred_and_utc() -> None:
    first = by_id(parse(SINGLE))["2"]
    assert first.timestamp == utc(2021, 3, 1, 10, 5)
    assert first.timestamp.utcoffset().total_seconds() == 0


def test_text_entities_are_concatenated_and_reply_is_kept() -> None:
    message = by_id(parse(SINGLE))["3"]
    assert message.text == "yes! see this page and hurry @alice"
    assert message.kind == "text"
    assert message.reply_to == "2"
    assert (message.author_id, message.author) == ("user222", "Bob Owner")


def test_service_phone_call_is_a_call_with_the_actor_as_author() -> None:
    call = by_id(parse(SINGLE))["1"]
    assert call.kind == "call"
    assert (call.author_id, call.author) == ("user111", "Alice Example")


@pytest.mark.parametrize("message_id", ["4", "5", "6", "8", "9", "11"])
def test_media_without_text_is_media_with_one_attachment(message_id: str) -> None:
    message = by_id(parse(SINGLE))[message_id]
    assert message.kind == "media"
    assert message.attachments == 1
    assert message.text == ""


def test_media_with_caption_stays_text() -> None:
    message = by_id(parse(SINGLE))["7"]
    assert (message.kind, message.text, message.attachments) == ("text", "caption here", 1)


def test_text_entities_are_used_when_text_is_missing(tmp_path: Path) -> None:
    entities = [{"type": "plain", "text": "only "}, {"type": "italic", "text": "entities"}]
    data = {
        "name": "N",
        "type": "personal_chat",
        "id": 1,
        "messages": [
            {"id": 1, "type": "message", "date_unixtime": "5", "from": "A", "text_entities": entities}
        ],
    }
    assert [m.text for m in parse(write_json(tmp_path, data))] == ["only entities"]


def test_message_without_text_or_media_is_system(tmp_path: Path) -> None:
    data = {
        "name": "N",
        "type": "personal_chat",
        "id": 1,
        "messages": [
            {"id": 1, "type": "message", "date_unixtime": "5", "from": "A", "from_id": "user1", "text": ""},
            {
                "id": 2,
                "type": "message",
                "date_unixtime": "6",
                "from": "A",
                "from_id": "user1",
                "text": [" "],
            },
        ],
    }
    assert [m.kind for m in parse(write_json(tmp_path, data))] == ["system", "system"]


def test_message_without_any_time_borrows_the_previous_time() -> None:
    messages = parse(SINGLE)
    ids = [m.id for m in messages]
    undated = messages[ids.index("10")]
    assert undated.timestamp == messages[ids.index("9")].timestamp == utc(2021, 3, 1, 10, 12)
    assert ids.index("9") < ids.index("10") < ids.index("11")


# --------------------------------------------------------------------------------------- full export


def test_full_export_yields_every_chat_including_left_chats() -> None:
    messages = parse(FULL)
    chats = [m.chat_id for m in messages]
    assert list(dict.fromkeys(chats)) == ["111", "333", "888", "444"]
    assert sum(1 for c in chats if c == "333") == 4


def test_full_export_chat_is_sorted_stably_by_time() -> None:
    group = [m for m in parse(FULL) if m.chat_id == "333"]
    # id 6 is listed after id 7 but sent earlier; 7 and 8 share a second and keep their file order.
    assert [m.id for m in group] == ["5", "6", "7", "8"]
    assert group[0].kind == "system"
    assert group[0].text == "create_group"


def test_deleted_account_gets_a_readable_author_and_keeps_its_id() -> None:
    message = by_id([m for m in parse(FULL) if m.chat_id == "333"])["7"]
    assert (message.author_id, message.author) == ("user999", "Deleted Account")


def test_bot_chat_marks_the_bot_but_not_the_owner() -> None:
    bot_chat = [m for m in parse(FULL) if m.chat_id == "888"]
    assert [(m.author_id, m.is_bot) for m in bot_chat] == [("user222", False), ("user888", True)]
    assert bot_chat[0].text == "/start"
    assert not any(m.is_bot for m in parse(FULL) if m.chat_id != "888")


def test_chat_metadata_after_the_messages_is_still_used(tmp_path: Path) -> None:
    data = {"messages": [{"id": 1, "type": "message", "date_unixtime": "10", "from": "A", "text": "x"}]}
    data["id"] = 99
    data["name"] = "Late"
    data["type"] = "personal_chat"
    assert [m.chat_id for m in parse(write_json(tmp_path, data))] == ["99"]


# --------------------------------------------------------------------------------------- tolerance


def test_missing_ids_dates_and_from_ids_are_tolerated() -> None:
    messages = parse(LEGACY)
    assert [m.id for m in messages] == ["#0", "2", "3", "4", "5"]
    assert all(m.timestamp.tzinfo is None for m in messages)  # only `date`: naive local time
    first, second, third, fourth, fifth = messages
    assert first.timestamp == second.timestamp == datetime(2018, 2, 3, 4, 5, 6)  # leading: next time
    assert fourth.timestamp == third.timestamp == datetime(2018, 2, 3, 4, 6)  # middle: previous time
    assert (second.author_id, second.author) == ("user777", "Carol")  # int from_id
    assert (third.author_id, third.author) == ("name:Dan", "Dan")  # no from_id
    assert fifth.text == "a list text"


def test_chat_mixing_unixtime_and_date_only_is_put_on_utc() -> None:
    messages = parse(MIXED)
    assert [m.id for m in messages] == ["1", "3", "2"]
    assert [m.timestamp for m in messages] == [
        utc(2021, 1, 1, 11),
        utc(2021, 1, 1, 11, 10),
        utc(2021, 1, 1, 11, 30),
    ]


def test_chat_without_any_time_uses_the_epoch_in_file_order(tmp_path: Path) -> None:
    data = {
        "name": "N",
        "type": "personal_chat",
        "id": 1,
        "messages": [{"from": "A", "text": t} for t in "ab"],
    }
    messages = parse(write_json(tmp_path, data))
    assert [(m.text, m.timestamp) for m in messages] == [("a", utc(1970, 1, 1)), ("b", utc(1970, 1, 1))]


def test_empty_chat_yields_nothing(tmp_path: Path) -> None:
    assert parse(write_json(tmp_path, {"name": "N", "type": "personal_chat", "id": 1, "messages": []})) == []


# --------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xef\xbb\xbf",
        b"[]",
        b"{}",
        b'{"about": "x"}',
        b'"just a string"',
        b'{"name": "N", "type": "personal_chat", "id": 1, "messages": [{"id": 1, "text": "secret words"',
        b'{"name": "N", "messages": [1, 2]}',
        b"\xff\xfe{\x00}\x00",
        b'{"name": "N", "id": 1, "messages": [{"text": "\xff\xfe"}]}',
    ],
)
def test_bad_files_raise_twinbot_error_without_message_text(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(content)
    with pytest.raises(TwinbotError) as info:
        parse(path)
    assert info.value.path == path
    assert "secret" not in str(info.value)


def test_folder_without_result_json_is_a_twinbot_error(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match=r"result\.json"):
        parse(tmp_path)


def test_unreadable_path_is_a_twinbot_error(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError):
        parse(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------- large files


def test_large_export_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    count = 3_000
    with path.open("w", encoding="utf-8") as fh:
        fh.write('{"about": "x", "personal_information": {"user_id": 1}, "chats": {"list": [')
        fh.write('{"name": "Big", "type": "personal_chat", "id": 7, "messages": [')
        fh.write(
            ",".join(
                json.dumps(
                    {
                        "id": i,
                        "type": "message",
                        "date_unixtime": str(1_600_000_000 + i),
                        "from": "A",
                        "from_id": "user1",
                        "text": "some words " * 100,
                    }
                )
                for i in range(count)
            )
        )
        fh.write("]}]}}")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        seen = 0
        for message in telegram.parse(path, ParseOptions()):
            seen += 1
            assert message.chat_id == "7"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < size / 8, (peak, size)  # json.load would need several times the file size


# --------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
MESSAGE_KEYS = st.sampled_from(
    [
        "id",
        "type",
        "date",
        "date_unixtime",
        "from",
        "from_id",
        "actor",
        "actor_id",
        "action",
        "text",
        "reply_to_message_id",
        "photo",
        "file",
        "media_type",
        "poll",
        "sticker_emoji",
    ]
)
CHAT_KEYS = st.sampled_from(["name", "type", "id", "messages"])


def _parse_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.json"
        path.write_bytes(data)
        try:
            telegram.sniff(path)
            for message in telegram.parse(path, ParseOptions()):
                assert isinstance(message.id, str)
                assert isinstance(message.text, str)
        except TwinbotError:
            pass


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_bytes(data)


@FUZZ
@given(st.sampled_from([SINGLE, FULL, LEGACY, MIXED]), st.randoms(use_true_random=False))
def test_fuzz_byte_mutations_of_fixtures(path: Path, rnd: random.Random) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(rnd.randint(1, 4)):
        position = rnd.randrange(len(data))
        action = rnd.choice(["flip", "cut", "insert"])
        if action == "flip":
            data[position] = rnd.randrange(256)
        elif action == "cut":
            del data[position:]
            if not data:
                break
        else:
            data[position:position] = bytes([rnd.randrange(256)])
    _parse_bytes(bytes(data))


@FUZZ
@given(
    st.sampled_from([SINGLE, LEGACY, MIXED]),
    st.lists(st.tuples(st.integers(0, 20), MESSAGE_KEYS, JSON_VALUES), min_size=1, max_size=4),
    st.tuples(CHAT_KEYS, JSON_VALUES) | st.none(),
)
def test_fuzz_field_mutations(
    path: Path, edits: list[tuple[int, str, Any]], chat_edit: tuple[str, Any] | None
) -> None:
    data = json.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    for index, key, value in edits:
        data["messages"][index % len(data["messages"])][key] = value
    if chat_edit is not None:
        data[chat_edit[0]] = chat_edit[1]
    _parse_bytes(json.dumps(data).encode())
