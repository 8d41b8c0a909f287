"""Signal exports: sigtop `export-messages -f json` files and signal-export (sigexport) chat folders, written
here with the field names those tools write; Signal Desktop's encrypted database is refused with a hint."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, detect_format, signal
from twinbot.errors import TwinbotError

SAM_ACI = "3f1a7c2e-1111-4a4a-9b9b-000000000001"
ALEX_ACI = "3f1a7c2e-2222-4a4a-9b9b-000000000002"
T0 = 1_710_007_200_000  # 2024-03-09T18:00:00Z in ms


def sigtop_messages() -> list[dict[str, Any]]:
    """Signal Desktop message objects as sigtop writes them (one conversation with Sam)."""
    conversation = "c0ffee00-0000-4000-8000-00000000000a"
    return [
        {"id": "m1", "conversationId": conversation, "type": "incoming", "body": "Hey, free tonight?",
         "sent_at": T0, "received_at": 1001, "received_at_ms": T0 + 900, "timestamp": T0,
         "source": "+15551234567", "sourceServiceId": SAM_ACI, "attachments": [],
         "reactions": [{"emoji": "❤️", "fromId": "c0ffee00-me", "targetTimestamp": T0, "timestamp": T0 + 5000}]},
        {"id": "m2", "conversationId": conversation, "type": "outgoing", "body": "Yes! 7pm?",
         "sent_at": T0 + 60_000, "timestamp": T0 + 60_000, "attachments": [],
         "quote": {"id": T0, "authorAci": SAM_ACI, "text": "Hey, free tonight?", "attachments": []}},
        {"id": "m3", "conversationId": conversation, "type": "incoming", "body": "",
         "sent_at": T0 + 120_000, "sourceServiceId": SAM_ACI,
         "attachments": [{"contentType": "image/jpeg", "fileName": "IMG_1.jpg", "size": 1000},
                         {"contentType": "image/jpeg", "fileName": "IMG_2.jpg", "size": 1000}]},
        {"id": "m4", "conversationId": conversation, "type": "incoming", "body": "a very long message…",
         "sent_at": T0 + 180_000, "sourceServiceId": SAM_ACI,
         "attachments": [{"contentType": "text/x-signal-plain", "size": 5000}]},
        {"id": "m5", "conversationId": conversation, "type": "incoming", "sent_at": T0 + 240_000,
         "sourceServiceId": SAM_ACI, "deletedForEveryone": True, "body": "oops"},
        {"id": "m6", "conversationId": conversation, "type": "call-history", "sent_at": T0 + 300_000,
         "callId": "123", "callHistoryDetails": {"direction": "Incoming", "status": "Missed"}},
        {"id": "m7", "conversationId": conversation, "type": "keychange", "sent_at": T0 + 360_000,
         "key_changed": SAM_ACI},
        {"id": "m8", "conversationId": conversation, "type": "outgoing", "body": "", "sent_at": T0 + 420_000,
         "sticker": {"packId": "p", "stickerId": 3, "emoji": "👍"}},
        # an older Signal wrote the quote id as a string; sent before m1 in the file but after in time
        {"id": "m9", "conversationId": conversation, "type": "outgoing", "body": "late but quoting",
         "sent_at": T0 + 30_000, "quote": {"id": str(T0), "author": "+15551234567", "text": "Hey"}},
    ]  # fmt: skip


def sigtop_group() -> list[dict[str, Any]]:
    conversation = "c0ffee00-0000-4000-8000-00000000000b"
    return [
        {"id": "g1", "conversationId": conversation, "type": "group-v2-change", "sent_at": T0 - 7_200_000,
         "groupV2Change": {"from": SAM_ACI, "details": [{"type": "member-add", "aci": ALEX_ACI}]}},
        {"id": "g2", "conversationId": conversation, "type": "incoming", "body": "who's in for saturday?",
         "sent_at": T0 - 3_600_000, "sourceServiceId": ALEX_ACI},
        {"id": "g3", "conversationId": conversation, "type": "incoming", "body": "me!",
         "sent_at": T0 - 3_500_000, "sourceServiceId": SAM_ACI},
        {"id": "g4", "conversationId": conversation, "type": "group-v2-change", "sent_at": T0 - 3_400_000,
         "groupV2Change": {"details": [{"type": "title", "newTitle": "Climbers"}]}},
        {"id": "g5", "conversationId": conversation, "type": "timer-notification", "sent_at": T0 - 3_300_000},
    ]  # fmt: skip


def sigexport_lines() -> list[dict[str, Any]]:
    """Lines of signal-export's data.json (models.Message.dict_str): naive local dates, "Me" for you."""
    return [
        {"date": "2024-03-09T19:00:00.123000", "sender": "Sam", "body": "Hey, free tonight?  ", "quote": "",
         "sticker": "", "reactions": [["Me", "❤️"], ["Alex", "👍"]], "attachments": [], "deleted": False,
         "call": False, "missed": False},
        {"date": "2024-03-09T19:01:00", "sender": "Me", "body": "Yes! 7pm?  ",
         "quote": "\n\n> Hey, free tonight?\n\n", "sticker": "", "reactions": [], "attachments": [],
         "deleted": False, "call": False, "missed": False},
        {"date": "2024-03-09T19:02:00", "sender": "Sam", "body": "  ", "quote": "", "sticker": "",
         "reactions": [], "attachments": [{"name": "2024-03-09T19-02-00.000_00_IMG.jpg",
                                           "path": "media/2024-03-09T19-02-00.000_00_IMG.jpg"}],
         "deleted": False, "call": False, "missed": False},
        {"date": "2024-03-09T19:03:00", "sender": "Sam", "body": "Missed voice call  ", "quote": "",
         "sticker": "", "reactions": [], "attachments": [], "deleted": False, "call": False, "missed": False},
        {"date": "2024-03-09T19:04:00", "sender": "Me", "body": "Outgoing video call (accepted, 2m 5s)  ",
         "quote": "", "sticker": "", "reactions": [], "attachments": []},
        {"date": "2024-03-09T19:05:00", "sender": "Sam", "body": "  ", "quote": "", "sticker": "👍",
         "reactions": [], "attachments": []},
        {"date": "2024-03-09T19:06:00", "sender": "Sam", "body": "", "quote": "", "sticker": "",
         "reactions": [], "attachments": [], "deleted": True},
        {"date": "2024-03-09T18:59:00", "sender": "Sam", "body": "written before, exported late  ", "quote": "",
         "sticker": "", "reactions": [], "attachments": []},
    ]  # fmt: skip


def write_sigtop(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Sam (+15551234567).json").write_text(
        "[\n" + ",\n".join(json.dumps(m, ensure_ascii=False) for m in sigtop_messages()) + "\n]\n",
        encoding="utf-8",
    )
    (folder / "Climbing crew.json").write_text(json.dumps(sigtop_group()), encoding="utf-8")
    return folder


def write_sigexport(folder: Path) -> Path:
    chat = folder / "Sam"
    chat.mkdir(parents=True, exist_ok=True)
    (chat / "data.json").write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in sigexport_lines()), encoding="utf-8"
    )
    (chat / "chat.md").write_text("[2024-03-09 19:00:00] Sam: Hey, free tonight?  \n", encoding="utf-8")
    return folder


def parse(path: Path) -> list[Message]:
    return list(signal.parse(path, ParseOptions()))


def by_id(messages: list[Message]) -> dict[str, Message]:
    return {m.id: m for m in messages}


# --------------------------------------------------------------------------------------- sniffing


def test_sniff_and_detect(tmp_path: Path) -> None:
    sigtop = write_sigtop(tmp_path / "sigtop")
    sigexport = write_sigexport(tmp_path / "sigexport")
    for path in (
        sigtop,
        sigtop / "Climbing crew.json",
        sigexport,
        sigexport / "Sam",
        sigexport / "Sam" / "data.json",
    ):
        assert signal.sniff(path), path
        assert detect_format(path) == "signal", path


def test_sniff_rejects_other_exports(tmp_path: Path) -> None:
    samples = {
        "result.json": b'{"name": "N", "type": "personal_chat", "id": 1, "messages": []}',
        "export.jsonl": b'{"timestamp": 1, "author": "A", "text": "hi"}\n',
        "chat.txt": b"12/03/2021, 10:00 - Alice: hi\n",
        "message_1.json": b'{"participants": [{"name": "A"}], "messages": []}',
        "empty.json": b"",
    }
    for name, content in samples.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert not signal.sniff(path), name
    assert not signal.sniff(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------- sigtop


def test_sigtop_corpus(tmp_path: Path) -> None:
    messages = parse(write_sigtop(tmp_path / "out"))
    assert len(messages) == 14
    assert Counter(m.kind for m in messages) == {"text": 6, "media": 2, "system": 5, "call": 1}
    assert Counter(m.subkind for m in messages) == {
        None: 6, "attachment": 2, "deleted": 1, "encryption_notice": 1, "member_join": 1, "rename": 1,
        "settings": 1, "call": 1,
    }  # fmt: skip
    assert {m.author_id for m in messages} == {"me", SAM_ACI, ALEX_ACI, "unknown"}
    assert {m.chat_id for m in messages} == {"Sam (+15551234567)", "Climbing crew"}
    times = [m.timestamp for m in messages]
    assert min(times) == datetime(2024, 3, 9, 16, 0, tzinfo=UTC)
    assert max(times) == datetime(2024, 3, 9, 18, 7, tzinfo=UTC)
    for chat in {m.chat_id for m in messages}:
        chat_times = [m.timestamp for m in messages if m.chat_id == chat]
        assert chat_times == sorted(chat_times)


def test_sigtop_fields(tmp_path: Path) -> None:
    messages = by_id(parse(write_sigtop(tmp_path / "out")))
    first = messages["m1"]
    assert (first.author_id, first.author, first.text, first.reactions) == (
        SAM_ACI,
        "Sam (+15551234567)",
        "Hey, free tonight?",
        1,
    )
    assert first.timestamp == datetime(2024, 3, 9, 18, 0, tzinfo=UTC)
    assert (messages["m2"].author_id, messages["m2"].reply_to) == ("me", "m1")
    assert messages["m9"].reply_to == "m1"
    assert (messages["m3"].kind, messages["m3"].attachments) == ("media", 2)
    assert (messages["m4"].kind, messages["m4"].attachments) == ("text", 0)
    assert (messages["m5"].subkind, messages["m5"].text) == ("deleted", "")
    assert (messages["m8"].kind, messages["m8"].subkind) == ("media", "attachment")
    # a group: several senders, shown by their ids
    assert messages["g2"].author == ALEX_ACI and messages["g3"].author == SAM_ACI


# --------------------------------------------------------------------------------------- sigexport


def test_sigexport_corpus(tmp_path: Path) -> None:
    messages = parse(write_sigexport(tmp_path / "out"))
    assert len(messages) == 8
    assert Counter(m.kind for m in messages) == {"text": 3, "media": 2, "call": 2, "system": 1}
    assert Counter(m.subkind for m in messages) == {None: 3, "attachment": 2, "call": 2, "deleted": 1}
    assert {(m.author_id, m.author) for m in messages} == {("me", "Me"), ("Sam", "Sam")}
    assert {m.chat_id for m in messages} == {"Sam"}
    assert messages[0].timestamp == datetime(2024, 3, 9, 18, 59) and messages[0].timestamp.tzinfo is None
    assert messages[-1].timestamp == datetime(2024, 3, 9, 19, 6)


def test_sigexport_fields(tmp_path: Path) -> None:
    messages = by_id(parse(write_sigexport(tmp_path / "out") / "Sam" / "data.json"))
    assert (messages["1"].text, messages["1"].reactions) == ("Hey, free tonight?", 2)
    assert (messages["2"].text, messages["2"].reply_to) == ("Yes! 7pm?", "1")
    assert (messages["3"].kind, messages["3"].attachments, messages["3"].text) == ("media", 1, "")
    assert (messages["4"].kind, messages["4"].text) == ("call", "")
    assert (messages["5"].kind, messages["5"].author_id) == ("call", "me")


# --------------------------------------------------------------------------------------- bad input


def test_encrypted_signal_database_names_an_export_tool(tmp_path: Path) -> None:
    desktop = tmp_path / "Signal"
    (desktop / "sql").mkdir(parents=True)
    (desktop / "config.json").write_text('{"encryptedKey": "00"}', encoding="utf-8")
    database = desktop / "sql" / "db.sqlite"
    database.write_bytes(os.urandom(8192))  # SQLCipher: no plain SQLite header
    for path in (desktop, database):
        assert detect_format(path) == "signal"
        with pytest.raises(TwinbotError, match="sigtop") as info:
            parse(path)
        assert "\n" not in str(info.value)


def test_sqlcipher_file_given_with_format_gets_the_hint(tmp_path: Path) -> None:
    plain = tmp_path / "backup.sqlite"
    with sqlite3.connect(plain) as connection:
        connection.execute("CREATE TABLE messages (id TEXT)")
    with pytest.raises(TwinbotError, match="signal-export"):
        parse(plain)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("x.json", b'[{"conversationId": "c", "sent_at": 1, "type": "incoming"}, 7]'),
        ("y.json", b'[{"conversationId": "c", "sent_at": 1, "type": "incoming", "body": "secret'),
        ("data.json", b'{"date": "2024-01-01T00:00:00", "sender": "A", "body": "secret"}\n{broken\n'),
        ("data.json", b'{"date": "2024-01-01T00:00:00", "sender": "A", "body": "\xff\xfe"}\n'),
        ("data.json", b'{"date": "2024-01-01T00:00:00", "sender": "A", "body": "x"}\n[1, 2]\n'),
        ("other.json", b'{"hello": "world"}'),
    ],
)
def test_bad_files_are_one_line_errors_without_text(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TwinbotError) as info:
        parse(path)
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match="no Signal export"):
        parse(tmp_path)


# --------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
SIGTOP_KEYS = st.sampled_from(
    ["id", "type", "body", "sent_at", "timestamp", "received_at_ms", "sourceServiceId", "source", "attachments",
     "reactions", "quote", "sticker", "deletedForEveryone", "groupV2Change"]
)  # fmt: skip
SIGEXPORT_KEYS = st.sampled_from(
    ["date", "sender", "body", "quote", "sticker", "reactions", "attachments", "deleted", "call"]
)


def _parse_bytes(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            signal.sniff(path)
            for message in signal.parse(path, ParseOptions()):
                assert isinstance(message.text, str) and isinstance(message.id, str)
        except TwinbotError as exc:
            assert "\n" not in str(exc)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["data.json", "chat.json", "db.sqlite"]))
def test_fuzz_random_bytes(data: bytes, name: str) -> None:
    _parse_bytes(data, name)


@FUZZ
@given(st.booleans(), st.randoms(use_true_random=False))
def test_fuzz_byte_mutations(sigtop: bool, rnd: random.Random) -> None:
    if sigtop:
        data = bytearray(json.dumps(sigtop_messages()).encode())
    else:
        data = bytearray("".join(json.dumps(line) + "\n" for line in sigexport_lines()).encode())
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
    _parse_bytes(bytes(data), "chat.json" if sigtop else "data.json")


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 20), SIGTOP_KEYS, JSON_VALUES), min_size=1, max_size=4))
def test_fuzz_sigtop_fields(edits: list[tuple[int, str, Any]]) -> None:
    data = sigtop_messages()
    for index, key, value in edits:
        data[index % len(data)][key] = value
    _parse_bytes(json.dumps(data).encode(), "chat.json")


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 20), SIGEXPORT_KEYS, JSON_VALUES), min_size=1, max_size=4))
def test_fuzz_sigexport_fields(edits: list[tuple[int, str, Any]]) -> None:
    data = sigexport_lines()
    for index, key, value in edits:
        data[index % len(data)][key] = value
    _parse_bytes("".join(json.dumps(line) + "\n" for line in data).encode(), "data.json")
