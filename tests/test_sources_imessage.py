"""iMessage chat.db parser: small chat.db files written here with sqlite3 (the macOS schema's tables and
columns the parser reads), attributedBody blobs, tapbacks, bad and locked databases, fuzzing."""

from __future__ import annotations

import contextlib
import plistlib
import random
import sqlite3
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.cli import main
from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, detect_format, imessage, parse_path
from twinbot.errors import TwinbotError

APPLE = datetime(2001, 1, 1, tzinfo=UTC)

SCHEMA = """
CREATE TABLE handle (ROWID INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, id TEXT NOT NULL, country TEXT,
    service TEXT NOT NULL, uncanonicalized_id TEXT, person_centric_id TEXT);
CREATE TABLE chat (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, style INTEGER,
    state INTEGER, account_id TEXT, properties BLOB, chat_identifier TEXT, service_name TEXT,
    room_name TEXT, display_name TEXT, group_id TEXT);
CREATE TABLE message (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, text TEXT,
    replace INTEGER DEFAULT 0, service_center TEXT, handle_id INTEGER DEFAULT 0, subject TEXT,
    attributedBody BLOB, service TEXT, date INTEGER, date_read INTEGER, is_from_me INTEGER DEFAULT 0,
    cache_has_attachments INTEGER DEFAULT 0, item_type INTEGER DEFAULT 0, group_title TEXT,
    group_action_type INTEGER DEFAULT 0, associated_message_guid TEXT,
    associated_message_type INTEGER DEFAULT 0, thread_originator_guid TEXT, date_retracted INTEGER DEFAULT 0,
    date_edited INTEGER DEFAULT 0);
CREATE TABLE chat_message_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
    message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE, message_date INTEGER DEFAULT 0,
    PRIMARY KEY (chat_id, message_id));
CREATE TABLE chat_handle_join (chat_id INTEGER, handle_id INTEGER, UNIQUE(chat_id, handle_id));
CREATE TABLE attachment (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT, filename TEXT, mime_type TEXT);
CREATE TABLE message_attachment_join (message_id INTEGER, attachment_id INTEGER);
"""

SAM = "+15551234567"
ALEX = "alex@example.com"


def typedstream(text: str) -> bytes:
    """An attributedBody as Messages writes it (NSArchiver typedstream of an NSAttributedString)."""
    data = text.encode("utf-8")
    if len(data) < 0x80:
        length = bytes([len(data)])
    elif len(data) < 0x8000:
        length = b"\x81" + len(data).to_bytes(2, "little")
    else:
        length = b"\x82" + len(data).to_bytes(4, "little")
    return (
        b"\x04\x0bstreamtyped\x81\xe8\x03\x84\x01@\x84\x84\x84\x12NSAttributedString\x00\x84\x84\x08NSObject"
        b"\x00\x85\x92\x84\x84\x84\x08NSString\x01\x94\x84\x01+" + length + data + b"\x86\x84\x02iI\x01"
        b"\x05\x92\x84\x84\x84\x0cNSDictionary\x00\x94\x84\x01i\x01\x92\x84\x96\x96\x1d__kIMMessagePartAttributeName"
        b"\x86\x92\x84\x84\x84\x08NSNumber\x00\x84\x84\x07NSValue\x00\x94\x84\x01*\x84\x99\x99\x00\x86\x86\x86"
    )


def keyed_archive(text: str) -> bytes:
    """An NSKeyedArchiver binary plist of an NSAttributedString (root -> NSString -> NS.string)."""
    return plistlib.dumps(
        {
            "$archiver": "NSKeyedArchiver",
            "$version": 100000,
            "$top": {"root": plistlib.UID(1)},
            "$objects": [
                "$null",
                {"NSString": plistlib.UID(2), "$class": plistlib.UID(3)},
                {"NS.string": text, "$class": plistlib.UID(4)},
                {"$classname": "NSAttributedString", "$classes": ["NSAttributedString", "NSObject"]},
                {"$classname": "NSMutableString", "$classes": ["NSMutableString", "NSString", "NSObject"]},
            ],
        },
        fmt=plistlib.FMT_BINARY,
    )


def ns(when: datetime) -> int:
    return int((when - APPLE).total_seconds()) * 1_000_000_000


def secs(when: datetime) -> int:
    return int((when - APPLE).total_seconds())


LONG_TEXT = "a long message " * 20  # over 127 bytes: a two-byte length in the typedstream


def make_chat_db(path: Path) -> Path:
    """A Mac's chat.db in miniature: a DM with Sam and a group ("Climbing crew") with Sam and Alex."""
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA)
    connection.executemany(
        "INSERT INTO handle (ROWID, id, service) VALUES (?, ?, 'iMessage')", [(1, SAM), (2, ALEX)]
    )
    connection.executemany(
        "INSERT INTO chat (ROWID, guid, style, chat_identifier, display_name) VALUES (?, ?, ?, ?, ?)",
        [(1, f"iMessage;-;{SAM}", 45, SAM, ""), (2, "iMessage;+;chat900", 43, "chat900", "Climbing crew")],
    )
    connection.executemany("INSERT INTO chat_handle_join VALUES (?, ?)", [(1, 1), (2, 1), (2, 2)])
    t = datetime(2024, 3, 9, 18, 0, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        # the DM: nanosecond dates (macOS 10.13+)
        dict(rowid=1, guid="G1", text="Hey, are you free tonight?", handle_id=1, date=ns(t), chat=1),
        dict(rowid=2, guid="G2", text=None, body=typedstream("Yes! 7pm?"), is_from_me=1, date=ns(t) + 60 * 10**9, chat=1),
        dict(rowid=3, guid="G3", text="Loved “Yes! 7pm?”", handle_id=1, date=ns(t) + 120 * 10**9, chat=1,
             associated_message_type=2000, associated_message_guid="p:0/G2"),
        dict(rowid=4, guid="G4", text="\ufffc\ufffc", handle_id=1, date=ns(t) + 180 * 10**9, chat=1,
             cache_has_attachments=1),
        dict(rowid=5, guid="G5", text="see you there", is_from_me=1, date=ns(t) + 240 * 10**9, chat=1,
             thread_originator_guid="G1"),
        dict(rowid=6, guid="G6", text=None, body=typedstream(LONG_TEXT), handle_id=1, date=0, chat=1),
        dict(rowid=7, guid="G7", text=None, is_from_me=1, date=ns(t) + 300 * 10**9, chat=1, date_retracted=1),
        # the group: second dates (an old database), a keyed-archive body, tapbacks added and removed
        dict(rowid=8, guid="G8", text="who's in for saturday?", handle_id=2, date=secs(t) - 3600, chat=2),
        dict(rowid=9, guid="G9", text="Liked “who's in”", is_from_me=1, date=secs(t) - 3500, chat=2,
             associated_message_type=2001, associated_message_guid="p:0/G8"),
        dict(rowid=10, guid="G10", text="Removed a like", is_from_me=1, date=secs(t) - 3400, chat=2,
             associated_message_type=3001, associated_message_guid="p:0/G8"),
        dict(rowid=11, guid="G11", text="Laughed at", handle_id=1, date=secs(t) - 3300, chat=2,
             associated_message_type=2003, associated_message_guid="bp:G8"),
        dict(rowid=12, guid="G12", text=None, body=keyed_archive("me! 🧗"), handle_id=1, date=secs(t) - 3200, chat=2),
        dict(rowid=13, guid="G13", text=None, handle_id=2, date=secs(t) - 3100, chat=2, item_type=2,
             group_title="Climbers"),
        dict(rowid=14, guid="G14", text=None, handle_id=2, date=secs(t) - 3000, chat=2, item_type=1,
             group_action_type=0),
        dict(rowid=15, guid="G15", text=None, handle_id=1, date=secs(t) - 2900, chat=2, item_type=6),
    ]  # fmt: skip
    for row in rows:
        connection.execute(
            "INSERT INTO message (ROWID, guid, text, attributedBody, handle_id, is_from_me, date, "
            "associated_message_type, associated_message_guid, cache_has_attachments, thread_originator_guid, "
            "item_type, group_action_type, group_title, date_retracted, service) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'iMessage')",
            (
                row["rowid"], row["guid"], row["text"], row.get("body"), row.get("handle_id", 0),
                row.get("is_from_me", 0), row["date"], row.get("associated_message_type", 0),
                row.get("associated_message_guid"), row.get("cache_has_attachments", 0),
                row.get("thread_originator_guid"), row.get("item_type", 0), row.get("group_action_type", 0),
                row.get("group_title"), row.get("date_retracted", 0),
            ),
        )  # fmt: skip
        connection.execute(
            "INSERT INTO chat_message_join VALUES (?, ?, ?)", (row["chat"], row["rowid"], row["date"])
        )
    connection.executemany(
        "INSERT INTO attachment (ROWID, guid, filename) VALUES (?, ?, ?)",
        [(1, "A1", "~/a.heic"), (2, "A2", "~/b.heic")],
    )
    connection.executemany("INSERT INTO message_attachment_join VALUES (?, ?)", [(4, 1), (4, 2)])
    connection.commit()
    connection.close()
    return path


@pytest.fixture(scope="module")
def chat_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chat_db(tmp_path_factory.mktemp("imessage") / "chat.db")


def parse(path: Path) -> list[Message]:
    return list(imessage.parse(path, ParseOptions()))


def by_id(messages: list[Message]) -> dict[str, Message]:
    return {m.id: m for m in messages}


# --------------------------------------------------------------------------------------- sniffing


def test_sniff_and_detect_accept_a_chat_db(chat_db: Path) -> None:
    assert imessage.sniff(chat_db)
    assert detect_format(chat_db) == "imessage"


def test_sniff_rejects_other_sqlite_text_binary_and_missing(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER, body TEXT)")
    text = tmp_path / "chat.txt"
    text.write_text("12/03/2021, 10:00 - Alice: hi\n", encoding="utf-8")
    garbled = tmp_path / "garbled.db"
    garbled.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(4096)))
    for path in (other, text, garbled, tmp_path / "missing.db", tmp_path):
        assert not imessage.sniff(path), path


# --------------------------------------------------------------------------------------- corpus


def test_corpus_counts_authors_chats_and_time_range(chat_db: Path) -> None:
    messages = parse(chat_db)
    assert len(messages) == 15
    assert Counter(m.kind for m in messages) == {"text": 6, "system": 7, "media": 1, "call": 1}
    assert Counter(m.subkind for m in messages) == {
        None: 6, "reaction": 4, "attachment": 1, "deleted": 1, "rename": 1, "member_join": 1, "call": 1,
    }  # fmt: skip
    assert {m.author_id for m in messages} == {SAM, ALEX, "me"}
    assert {m.chat_id for m in messages} == {SAM, "Climbing crew"}
    times = [m.timestamp for m in messages]
    assert all(t.tzinfo is not None for t in times)
    assert min(times) == datetime(2024, 3, 9, 17, 0, tzinfo=UTC)
    assert max(times) == datetime(2024, 3, 9, 18, 5, tzinfo=UTC)
    for chat in ("Climbing crew", SAM):
        chat_times = [m.timestamp for m in messages if m.chat_id == chat]
        assert chat_times == sorted(chat_times)


def test_text_attributed_body_and_owner(chat_db: Path) -> None:
    messages = by_id(parse(chat_db))
    assert messages["G1"].text == "Hey, are you free tonight?" and messages["G1"].author == SAM
    assert (messages["G2"].text, messages["G2"].author_id, messages["G2"].author) == ("Yes! 7pm?", "me", "Me")
    assert messages["G6"].text == LONG_TEXT.strip()
    assert messages["G12"].text == "me! 🧗"


def test_apple_dates_in_seconds_and_nanoseconds(chat_db: Path) -> None:
    messages = by_id(parse(chat_db))
    assert messages["G1"].timestamp == datetime(2024, 3, 9, 18, 0, tzinfo=UTC)
    assert messages["G8"].timestamp == datetime(2024, 3, 9, 17, 0, tzinfo=UTC)
    assert messages["G6"].timestamp == messages["G5"].timestamp  # date 0: borrows the previous time
    assert imessage.apple_time(0) is None
    assert imessage.apple_time(10**30) is None
    assert imessage.apple_time(-(10**30)) is None


def test_tapbacks_are_reactions_counted_into_their_target(chat_db: Path) -> None:
    messages = by_id(parse(chat_db))
    for guid, target in (("G3", "G2"), ("G9", "G8"), ("G10", "G8"), ("G11", "G8")):
        tapback = messages[guid]
        assert (tapback.kind, tapback.subkind, tapback.text, tapback.reply_to) == (
            "system",
            "reaction",
            "",
            target,
        )
    assert messages["G2"].reactions == 1
    assert messages["G8"].reactions == 1  # a like added and removed, a laugh kept
    assert messages["G1"].reactions == 0


def test_attachments_replies_deleted_and_group_events(chat_db: Path) -> None:
    messages = by_id(parse(chat_db))
    photo = messages["G4"]
    assert (photo.kind, photo.subkind, photo.text, photo.attachments) == ("media", "attachment", "", 2)
    assert messages["G5"].reply_to == "G1"
    assert (messages["G7"].kind, messages["G7"].subkind) == ("system", "deleted")
    assert (messages["G13"].subkind, messages["G13"].text) == ("rename", "")
    assert messages["G14"].subkind == "member_join"
    assert (messages["G15"].kind, messages["G15"].subkind) == ("call", "call")


def test_a_folder_holding_chat_db_is_read(chat_db: Path) -> None:
    assert len(parse(chat_db.parent)) == 15


def test_an_old_schema_without_newer_columns_is_read(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE handle (ROWID INTEGER PRIMARY KEY, id TEXT);"
            "CREATE TABLE chat (ROWID INTEGER PRIMARY KEY, chat_identifier TEXT, display_name TEXT);"
            "CREATE TABLE message (ROWID INTEGER PRIMARY KEY, guid TEXT, text TEXT, handle_id INTEGER,"
            " is_from_me INTEGER, date INTEGER);"
            "CREATE TABLE chat_message_join (chat_id INTEGER, message_id INTEGER);"
            f"INSERT INTO handle VALUES (1, '{SAM}');"
            f"INSERT INTO chat VALUES (1, '{SAM}', NULL);"
            "INSERT INTO message VALUES (1, 'X1', 'hello 2012', 1, 0, 370000000);"
            "INSERT INTO message VALUES (2, 'X2', 'no chat', 1, 1, 370000100);"
            "INSERT INTO chat_message_join VALUES (1, 1);"
        )
    messages = parse(path)
    assert [(m.id, m.chat_id, m.text) for m in messages] == [
        ("X1", SAM, "hello 2012"),
        ("X2", SAM, "no chat"),
    ]
    assert messages[0].timestamp.year == 2012


# --------------------------------------------------------------------------------------- attributedBody


def test_attributed_body_decoder_is_defensive() -> None:
    decode = imessage.decode_attributed_body
    assert decode(typedstream("hi")) == "hi"
    assert decode(typedstream("x" * 70_000)) == "x" * 70_000  # four-byte length
    cut = typedstream("hello world")
    assert decode(cut[: cut.index(b"hello") + 3]) is None  # cut inside the text
    assert decode(b"") is None
    assert decode(b"\x04\x0bstreamtyped no string here") is None
    assert decode(b"bplist00garbage") is None
    assert decode(b"NSString\x01\x94\x84\x01+\x05\xff\xfe\xfd\xfc\xfb") is None  # not UTF-8
    assert decode(b"x" * (imessage.MAX_BODY_BYTES + 1)) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_attributed_body_never_raises(data: bytes) -> None:
    for blob in (data, typedstream("héllo")[: len(data) % 160] + data, b"NSString\x01\x94\x84\x01+" + data):
        result = imessage.decode_attributed_body(blob)
        assert result is None or isinstance(result, str)


# --------------------------------------------------------------------------------------- bad input


def test_sqlite_that_is_not_a_chat_db_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER)")
    with pytest.raises(TwinbotError, match=r"not a Messages chat\.db") as info:
        parse(path)
    assert "\n" not in str(info.value) and info.value.path == path


def test_decrypted_signal_database_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript("CREATE TABLE messages (id TEXT); CREATE TABLE conversations (id TEXT);")
    with pytest.raises(TwinbotError, match="Signal Desktop database"):
        parse(path)


@pytest.mark.parametrize("damage", ["garbled", "truncated", "header-only", "pages-overwritten"])
def test_damaged_databases_are_one_line_errors(chat_db: Path, tmp_path: Path, damage: str) -> None:
    data = bytearray(chat_db.read_bytes())
    if damage == "garbled":
        data = bytearray(random.Random(7).randrange(256) for _ in range(len(data)))
    elif damage == "truncated":
        data = data[: len(data) // 3]
    elif damage == "header-only":
        data = data[:100]
    else:
        rnd = random.Random(3)
        for page in range(1, len(data) // 4096):
            start = page * 4096 + 8
            data[start : start + 200] = bytes(rnd.randrange(256) for _ in range(200))
    path = tmp_path / "chat.db"
    path.write_bytes(bytes(data))
    with pytest.raises(TwinbotError) as info:
        parse(path)
    assert "\n" not in str(info.value) and info.value.path == path


def test_reading_never_writes_or_leaves_files(chat_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(chat_db.read_bytes())
    before = path.read_bytes()
    parse(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.db"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_locked_database_is_one_line_error(chat_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(chat_db.read_bytes())
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA locking_mode = EXCLUSIVE")  # as a writer that keeps its lock
        writer.execute("UPDATE message SET text = 'changed' WHERE ROWID = 1")  # a non-empty -wal file
        writer.execute("BEGIN EXCLUSIVE")
        with pytest.raises(TwinbotError, match="is locked") as info:
            parse(path)
        assert "\n" not in str(info.value)
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_cli_error_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(random.Random(5).randrange(256) for _ in range(8000)))
    monkeypatch.setattr(sys, "argv", ["twinbot", "parse", "--format", "imessage", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.db"]


# --------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _parse_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chat.db"
        path.write_bytes(data)
        try:
            imessage.sniff(path)
            for message in parse_path(path, "imessage"):
                assert isinstance(message.text, str) and isinstance(message.id, str)
        except TwinbotError as exc:
            assert "\n" not in str(exc)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_fuzz_byte_mutations_of_a_chat_db(chat_db: Path, rnd: random.Random) -> None:
    data = bytearray(chat_db.read_bytes())
    for _ in range(rnd.randint(1, 30)):
        position = rnd.randrange(len(data))
        data[position] = rnd.randrange(256)
    if rnd.random() < 0.2:
        del data[rnd.randrange(100, len(data)) :]
    _parse_bytes(bytes(data))


CELL_VALUES = (
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.binary(max_size=40)
)
COLUMNS = st.sampled_from(
    ["guid", "text", "attributedBody", "handle_id", "is_from_me", "date", "associated_message_type",
     "associated_message_guid", "cache_has_attachments", "thread_originator_guid", "item_type",
     "group_action_type", "date_retracted"]
)  # fmt: skip


@FUZZ
@given(st.lists(st.tuples(st.integers(1, 15), COLUMNS, CELL_VALUES), min_size=1, max_size=6))
def test_fuzz_column_values(chat_db: Path, edits: list[tuple[int, str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chat.db"
        path.write_bytes(chat_db.read_bytes())
        with sqlite3.connect(path) as connection:
            for rowid, column, value in edits:
                if column == "guid" and value is None:
                    continue
                with contextlib.suppress(sqlite3.IntegrityError):  # a guid made equal to another one
                    connection.execute(f"UPDATE message SET {column} = ? WHERE ROWID = ?", (value, rowid))
        for message in parse(path):
            assert isinstance(message.text, str) and message.reactions >= 0
