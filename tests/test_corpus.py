"""A corpus check: one realistic export per platform and locale (tests/fixtures/corpus/), each parsed the way a
user would (`parse_path`, format detected), against counts written down by reading the file itself.

Every case states what the file holds: the messages by (kind, subkind), the authors, the first and last
timestamp, and the reactions the export records. The iMessage chat.db is binary, so it is written here at
run time (`make_imessage_db`) instead of being kept in the repository. All names and data are fictional.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from test_sources_imessage import APPLE, SCHEMA, typedstream  # the chat.db schema and body encoding, shared
from twinbot.cli import app
from twinbot.data.records import Message
from twinbot.data.sources import detect_format, parse_path

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
IMESSAGE = "imessage/chat.db"  # written by make_imessage_db, not kept in the repository

# The (kind, subkind) pairs by their short names in the tables below.
TEXT = ("text", None)
ATTACHMENT = ("media", "attachment")
PLACEHOLDER = ("media", "placeholder")
LOCATION = ("media", "location")
CONTACT = ("media", "contact")
MEDIA_POLL = ("media", "poll")
CALL = ("call", "call")
JOIN = ("system", "member_join")
LEAVE = ("system", "member_leave")
RENAME = ("system", "rename")
PIN = ("system", "pin")
DELETED = ("system", "deleted")
REACTION = ("system", "reaction")
ENCRYPTION = ("system", "encryption_notice")
SETTINGS = ("system", "settings")
SYSTEM_POLL = ("system", "poll")
SYSTEM_PLACEHOLDER = ("system", "placeholder")
OTHER = ("system", "other")


def case(
    path: str,
    fmt: str,
    counts: dict[tuple[str, str | None], int],
    authors: set[str],
    first: str,
    last: str,
    reactions: int = 0,
    xfail: str | None = None,
) -> Any:
    expected = {
        "format": fmt,
        "counts": counts,
        "authors": authors,
        "first": first,
        "last": last,
        "reactions": reactions,
    }
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(path, expected, id=path, marks=marks)


# WhatsApp system lines (no "Name: ") and iOS notices have the author "". System lines are matched where
# phrases.py has rows for their language (en, de, es, fr, pt, it, nl, ru, tr, id); the others (pl, a gap it
# lists) and wordings no source shows (de "hat den Gruppennamen ... geändert", nl "heeft groep ... aangemaakt",
# fr "a changé le sujet de ... en ...", fr "est parti" without "(e)") are "other"; placeholders, attachments,
# deleted messages, locations, polls, calls and the encryption notice are matched where the table has rows.
WHATSAPP = [
    case(
        "whatsapp/en-android.txt", "whatsapp",
        {TEXT: 21, ENCRYPTION: 2, SETTINGS: 2, JOIN: 4, LEAVE: 2, RENAME: 4, DELETED: 2, PIN: 1,
         PLACEHOLDER: 2, SYSTEM_PLACEHOLDER: 1, ATTACHMENT: 2, LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Priya Shah", "Tom Hughes", "+44 7700 900123", "Dan Okafor"},
        "2024-06-14T18:02:00", "2024-06-17T09:15:00",
    ),
    case(
        "whatsapp/en-ios.txt", "whatsapp",
        {TEXT: 15, ENCRYPTION: 2, SETTINGS: 1, JOIN: 4, LEAVE: 1, RENAME: 1, DELETED: 2, PLACEHOLDER: 3,
         ATTACHMENT: 1, CONTACT: 1, LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Jenna Price", "Marcus Lee", "Sofia Ramirez", "Olu Adeyemi"},
        "2024-03-14T19:58:02", "2024-03-17T21:58:00",
    ),
    case(
        "whatsapp/de-android.txt", "whatsapp",
        {TEXT: 11, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, RENAME: 1, LEAVE: 1, DELETED: 2, PLACEHOLDER: 2,
         ATTACHMENT: 1, LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Jonas Weber", "Lea Schmidt", "Mehmet Yılmaz"},
        "2024-05-03T19:12:00", "2024-05-14T08:15:00",
    ),
    case(
        "whatsapp/de-ios.txt", "whatsapp",
        {TEXT: 9, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, OTHER: 1, LEAVE: 1, DELETED: 2, PLACEHOLDER: 3,
         ATTACHMENT: 1, LOCATION: 1, CONTACT: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Mama", "Papa", "Anna", "Oma Gerda"},
        "2024-07-14T09:00:11", "2024-07-16T08:02:00",
    ),
    case(
        "whatsapp/es-android.txt", "whatsapp",
        {TEXT: 10, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, LEAVE: 1, RENAME: 1, DELETED: 2, PLACEHOLDER: 2,
         ATTACHMENT: 1, LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Lucía Fernández", "Diego Martín", "Carmen Ruiz"},
        "2024-04-02T18:15:00", "2024-04-15T09:05:00",
    ),
    case(
        "whatsapp/pt-android.txt", "whatsapp",
        {TEXT: 10, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, LEAVE: 1, DELETED: 2, PLACEHOLDER: 2, ATTACHMENT: 1,
         LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Rafael Costa", "Bruno Lima", "Thiago Alves"},
        "2024-08-20T21:03:00", "2024-08-23T09:06:00",
    ),
    case(
        "whatsapp/fr-android.txt", "whatsapp",
        {TEXT: 9, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, OTHER: 2, DELETED: 2, PLACEHOLDER: 2, ATTACHMENT: 1,
         LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Camille Dubois", "Hugo Martin", "Inès Benali"},
        "2024-09-09T20:15:00", "2024-09-15T11:30:00",
    ),
    case(
        "whatsapp/it-android.txt", "whatsapp",
        {TEXT: 9, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, LEAVE: 1, DELETED: 2, PLACEHOLDER: 2, ATTACHMENT: 1,
         LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Giulia Romano", "Marco Bianchi", "Chiara Greco"},
        "2024-10-12T17:40:00", "2024-10-20T10:06:00",
    ),
    case(
        "whatsapp/nl-android.txt", "whatsapp",
        {TEXT: 9, ENCRYPTION: 1, OTHER: 1, JOIN: 2, LEAVE: 1, DELETED: 2, PLACEHOLDER: 1, ATTACHMENT: 1,
         LOCATION: 1, MEDIA_POLL: 1, CALL: 1},
        {"", "Sanne de Vries", "Daan Jansen", "Fleur Bakker"},
        "2024-11-05T19:30:00", "2024-11-17T09:30:00",
    ),
    case(
        "whatsapp/ru-android.txt", "whatsapp",
        {TEXT: 9, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, RENAME: 1, LEAVE: 1, DELETED: 2, PLACEHOLDER: 2,
         ATTACHMENT: 1, LOCATION: 1, CALL: 2},
        {"", "Анна Смирнова", "Иван Петров", "Ольга Козлова"},
        "2024-12-01T18:00:00", "2024-12-15T10:06:00",
    ),
    case(
        "whatsapp/tr-android.txt", "whatsapp",
        {TEXT: 11, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, LEAVE: 1, DELETED: 2, PLACEHOLDER: 2, ATTACHMENT: 1,
         LOCATION: 1, CALL: 1},
        {"", "Elif Kaya", "Burak Demir", "Zeynep Arslan"},
        "2025-01-18T20:00:00", "2025-01-25T18:30:00",
    ),
    case(
        "whatsapp/pl-android.txt", "whatsapp",
        {TEXT: 10, ENCRYPTION: 1, OTHER: 4, DELETED: 2, PLACEHOLDER: 2, ATTACHMENT: 1, LOCATION: 1, CALL: 1},
        {"", "Kasia Nowak", "Piotr Wiśniewski", "Ola Zielińska"},
        "2025-02-07T19:00:00", "2025-02-16T20:10:00",
    ),
    case(
        "whatsapp/id-android.txt", "whatsapp",
        {TEXT: 10, ENCRYPTION: 1, SETTINGS: 1, JOIN: 2, LEAVE: 1, DELETED: 2, PLACEHOLDER: 2, ATTACHMENT: 1,
         LOCATION: 1, CALL: 1},
        {"", "Dewi Lestari", "Budi Santoso", "Rina Wijaya"},
        "2025-03-10T19:00:00", "2025-03-16T20:12:00",
    ),
]  # fmt: skip

OTHERS = [
    # date_unixtime is UTC (the file's local `date` is UTC+1); service messages are by their actor
    case(
        "telegram/result.json", "telegram",
        {TEXT: 11, ATTACHMENT: 4, MEDIA_POLL: 1, LOCATION: 1, CONTACT: 1, SETTINGS: 1, JOIN: 2, RENAME: 2,
         PIN: 1, CALL: 1, LEAVE: 1},
        {"Lena Vogel", "Ravi Patel", "Sophie Laurent", "Tomás Ortega", "Deleted Account"},
        "2024-02-10T17:00:00+00:00", "2024-02-15T17:00:00+00:00", reactions=8,
    ),
    case(
        "discord/Direct Messages - Group - dnd tuesdays [1230000000000000000].json", "discord-json",
        {TEXT: 10, ATTACHMENT: 3, JOIN: 2, LEAVE: 1, RENAME: 2, PIN: 1, CALL: 2},
        {"Mira 🐉", "Kofi", "jules", "Theo"},
        "2024-04-06T19:02:11.418000+02:00", "2024-04-09T21:47:03+02:00", reactions=9,
    ),
    case(
        "discord/Calc Study Hall - general [1100000000000000001].csv", "discord-csv",
        {TEXT: 12, ATTACHMENT: 2, JOIN: 1, PIN: 1, CALL: 2, RENAME: 1, OTHER: 1},
        {"amara", "beck", "chen.li"},
        "2024-10-01T09:00:12.345000+02:00", "2024-10-02T22:15:40+02:00", reactions=11,
    ),
    case(
        "discord_package", "discord-package",
        {TEXT: 16, ATTACHMENT: 4},
        {"nova_k"},
        "2023-11-05T21:14:03.512000+00:00", "2024-01-15T00:10:00+00:00",
    ),
    case(
        "slack", "slack",
        {TEXT: 13, ATTACHMENT: 1, JOIN: 4, LEAVE: 1, RENAME: 2, PIN: 1, DELETED: 1, CALL: 1, SETTINGS: 1},
        {"Ana", "Ben Okoro", "Chris P.", "deploybot", "USLACKBOT"},
        "2024-05-06T09:00:00.000101+00:00", "2024-05-07T17:30:00.000120+00:00", reactions=6,
    ),
    case(
        "messenger", "messenger",
        {TEXT: 9, ATTACHMENT: 4, LOCATION: 1, SETTINGS: 2, JOIN: 3, LEAVE: 1, RENAME: 4, REACTION: 1,
         CALL: 3, DELETED: 1, SYSTEM_POLL: 2, PIN: 1},
        {"Maya Chen", "Liam O'Brien", "Zoe Martin", "Noah Kim"},
        "2024-06-01T18:00:00+00:00", "2024-06-05T09:00:00+00:00", reactions=8,
    ),
    case(
        "messenger_e2ee/robinpatel_10.json", "messenger",
        {TEXT: 12, ATTACHMENT: 2, LOCATION: 1, DELETED: 1, REACTION: 2, CALL: 2},
        {"Alex Moreau", "Robin Patel"},
        "2024-10-04T16:00:00+00:00", "2024-10-04T18:41:00+00:00", reactions=3,
    ),
    case(
        "instagram_en", "instagram",
        {TEXT: 12, ATTACHMENT: 4, REACTION: 3, DELETED: 1, CALL: 2},
        {"Jess Rivera", "Sam Kowalski"},
        "2024-08-10T19:00:00+00:00", "2024-08-12T23:01:00+00:00", reactions=3,
    ),
    case(
        "instagram_pt", "instagram",
        {TEXT: 11, ATTACHMENT: 4, REACTION: 3, DELETED: 1, CALL: 1},
        {"Carolina Souza", "João Pereira"},
        "2024-09-20T13:00:00+00:00", "2024-09-21T21:17:30+00:00", reactions=3,
    ),
    # a French Messenger group and a Spanish Instagram chat: notices in their language, and a person's
    # message that only mentions one ("Hugo a quitté le groupe de foot", "¿Enviaste un archivo adjunto? ...")
    case(
        "messenger_fr", "messenger",
        {TEXT: 7, ATTACHMENT: 2, JOIN: 2, RENAME: 1, LEAVE: 1},
        {"Camille Dubois", "Hugo Martin", "Inès Benali"},
        "2024-09-09T18:00:00+00:00", "2024-09-15T11:30:00+00:00", reactions=3,
    ),
    case(
        "instagram_es", "instagram",
        {TEXT: 6, ATTACHMENT: 2, CALL: 1},
        {"Lucía Fernández", "Diego Martín"},
        "2024-04-13T19:00:00+00:00", "2024-04-13T21:05:00+00:00", reactions=1,
    ),
    case(
        "generic/family.jsonl", "jsonl",
        {TEXT: 10, ATTACHMENT: 2, LOCATION: 1, JOIN: 1, LEAVE: 1, RENAME: 1, DELETED: 1, CALL: 1,
         SYSTEM_PLACEHOLDER: 1, OTHER: 1},
        {"Mum", "Sam", "Dad", "Grandpa", "Reminder Bot"},
        "2024-05-01T09:00:00+02:00", "2024-05-02T22:30:00+02:00", reactions=6,
    ),
    case(
        "generic/team.csv", "csv",
        {TEXT: 12, ATTACHMENT: 1, MEDIA_POLL: 1, JOIN: 1, PIN: 1, DELETED: 1, CALL: 1, SYSTEM_PLACEHOLDER: 1,
         OTHER: 1},
        {"Priya", "Marco", "Lena", "CI Bot"},
        "2024-06-03T09:00:00", "2024-06-03T17:02:00", reactions=7,
    ),
    # sigtop files hold sender ids and phone numbers, no names; notices carry no sender ("unknown")
    case(
        "signal/sigtop/Hiking.json", "signal",
        {TEXT: 10, ATTACHMENT: 2, SETTINGS: 2, JOIN: 3, LEAVE: 1, RENAME: 1, ENCRYPTION: 1, DELETED: 1, CALL: 1},
        {"Me", "+31612345678", "+31687654321", "+31611122233", "unknown"},
        "2024-07-20T08:00:00.137000+00:00", "2024-07-24T18:05:00.137000+00:00", reactions=5,
    ),
    case(
        "signal/signal-export", "signal",
        {TEXT: 13, ATTACHMENT: 3, CALL: 3, DELETED: 1},
        {"Bram", "Me"},
        "2024-07-02T18:01:00", "2024-07-07T22:06:00", reactions=4,
    ),
    # tapbacks are system/reaction records; their targets count them (the removed one taken back)
    case(
        IMESSAGE, "imessage",
        {TEXT: 9, ATTACHMENT: 2, REACTION: 4, JOIN: 1, LEAVE: 1, RENAME: 2, CALL: 1, DELETED: 1},
        {"Me", "+15551230001", "dana@example.com"},
        "2024-09-01T08:00:00+00:00", "2024-09-01T14:10:00+00:00", reactions=2,
    ),
]  # fmt: skip

CASES = WHATSAPP + OTHERS


# ---------------------------------------------------------------------------------------------- iMessage

AVA, DANA = 1, 2  # handle rowids; 0 with is_from_me = 1 is the owner


def make_imessage_db(path: Path) -> Path:
    """A group chat "Brunch crew" in a Mac's chat.db: 21 rows, times 2024-09-01 08:00 to 14:10 UTC."""

    def at(hour: int, minute: int) -> int:  # nanoseconds since 2001-01-01 UTC (macOS 10.13+)
        return int((datetime(2024, 9, 1, hour, minute, tzinfo=UTC) - APPLE).total_seconds()) * 10**9

    rows: list[dict[str, Any]] = [
        dict(guid="B01", handle=AVA, date=at(8, 0), item_type=1, group_action_type=0),  # Ava added dana
        dict(guid="B02", handle=AVA, date=at(8, 1), text="brunch this sunday? 🥞"),
        dict(guid="B03", me=1, date=at(8, 3), text="yes! where?"),
        dict(guid="B04", handle=DANA, date=at(8, 4), text="that new place on Elm st"),
        dict(guid="B05", handle=AVA, date=at(8, 5), text="Loved “that new place on Elm st”",
             assoc_type=2000, assoc_guid="p:0/B04"),
        dict(guid="B06", me=1, date=at(8, 6), text="Liked “that new place on Elm st”",
             assoc_type=2001, assoc_guid="p:0/B04"),
        dict(guid="B07", handle=DANA, date=at(8, 10), text="\ufffc", attachments=1),
        dict(guid="B08", handle=AVA, date=at(8, 12), text="looks amazing", thread="B07"),
        dict(guid="B09", me=1, date=at(8, 20), item_type=2, group_title="Brunch crew 🥞"),
        dict(guid="B10", me=1, date=at(8, 21), text="Removed a like from “that new place on Elm st”",
             assoc_type=3001, assoc_guid="p:0/B04"),
        dict(guid="B11", handle=DANA, date=at(9, 0), item_type=6),
        dict(guid="B12", me=1, date=at(9, 30), retracted=at(9, 31)),
        dict(guid="B13", me=1, date=at(9, 32), text="oops"),
        dict(guid="B14", handle=AVA, date=at(10, 0), body=typedstream("see you at 11 ☀️")),
        dict(guid="B15", handle=DANA, date=at(10, 2), text="Laughed at “oops”", assoc_type=2003, assoc_guid="p:0/B13"),
        dict(guid="B16", handle=AVA, date=at(10, 30), item_type=3, group_action_type=1),  # new group photo
        dict(guid="B17", handle=DANA, date=at(10, 55), text="running 5 min late 🏃‍♀️"),
        dict(guid="B18", me=1, date=at(13, 0), text="\ufffc\ufffc", attachments=2),
        dict(guid="B19", handle=AVA, date=at(13, 5), text="best brunch ever"),
        dict(guid="B20", handle=DANA, date=at(14, 0), item_type=1, group_action_type=1),  # dana left
        dict(guid="B21", handle=AVA, date=at(14, 10), text="aw dana left the chat 😢"),
    ]  # fmt: skip
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA)
    connection.executemany(
        "INSERT INTO handle (ROWID, id, service) VALUES (?, ?, 'iMessage')",
        [(AVA, "+15551230001"), (DANA, "dana@example.com")],
    )
    connection.execute(
        "INSERT INTO chat (ROWID, guid, style, chat_identifier, display_name) "
        "VALUES (1, 'iMessage;+;chat4242', 43, 'chat4242', 'Brunch crew')"
    )
    connection.executemany("INSERT INTO chat_handle_join VALUES (1, ?)", [(AVA,), (DANA,)])
    attachment_id = 0
    for rowid, row in enumerate(rows, 1):
        connection.execute(
            "INSERT INTO message (ROWID, guid, text, attributedBody, handle_id, is_from_me, date, "
            "associated_message_type, associated_message_guid, cache_has_attachments, thread_originator_guid, "
            "item_type, group_action_type, group_title, date_retracted, service) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'iMessage')",
            (
                rowid, row["guid"], row.get("text"), row.get("body"), row.get("handle", 0), row.get("me", 0),
                row["date"], row.get("assoc_type", 0), row.get("assoc_guid"), 1 if row.get("attachments") else 0,
                row.get("thread"), row.get("item_type", 0), row.get("group_action_type", 0), row.get("group_title"),
                row.get("retracted", 0),
            ),
        )  # fmt: skip
        connection.execute("INSERT INTO chat_message_join VALUES (1, ?, ?)", (rowid, row["date"]))
        for _ in range(row.get("attachments", 0)):
            attachment_id += 1
            connection.execute(
                "INSERT INTO attachment (ROWID, guid, filename, mime_type) VALUES (?, ?, ?, 'image/heic')",
                (
                    attachment_id,
                    f"AT{attachment_id}",
                    f"~/Library/Messages/Attachments/IMG_{attachment_id}.HEIC",
                ),
            )
            connection.execute("INSERT INTO message_attachment_join VALUES (?, ?)", (rowid, attachment_id))
    connection.commit()
    connection.close()
    return path


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory: pytest.TempPathFactory) -> Any:
    imessage_db = make_imessage_db(tmp_path_factory.mktemp("imessage") / "chat.db")

    def resolve(name: str) -> Path:
        return imessage_db if name == IMESSAGE else CORPUS / name

    return resolve


# ---------------------------------------------------------------------------------------------- tests


def summary(messages: list[Message]) -> dict[str, Any]:
    times = [message.timestamp for message in messages]
    return {
        "counts": dict(Counter((message.kind, message.subkind) for message in messages)),
        "authors": {message.author for message in messages},
        "first": min(times).isoformat(),
        "last": max(times).isoformat(),
        "reactions": sum(message.reactions for message in messages),
    }


def test_corpus_lists_every_file() -> None:
    """Every export kept in the corpus folder has its case (a new file needs its expected values)."""
    covered = {CORPUS / path for path, *_ in (param.values for param in CASES)}
    for file in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        assert any(file == path or path in file.parents for path in covered), file


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_corpus_file(path: str, expected: dict[str, Any], corpus_path: Any) -> None:
    file = corpus_path(path)
    assert detect_format(file) == expected["format"]
    got = summary(list(parse_path(file)))
    assert got["counts"] == expected["counts"]
    assert got["authors"] == expected["authors"]
    assert (got["first"], got["last"]) == (expected["first"], expected["last"])
    assert got["reactions"] == expected["reactions"]


@pytest.mark.parametrize("path", [param.values[0] for param in CASES], ids=[param.id for param in CASES])
def test_parse_command_summarizes_every_corpus_file(path: str, corpus_path: Any) -> None:
    """`twinbot parse FILE` runs on every corpus file and prints the non-text messages by subkind."""
    file = corpus_path(path)
    result = CliRunner().invoke(app, ["parse", str(file)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next((row for row in result.output.splitlines() if "by subkind" in row), None)
    assert line is not None, result.output
    by_subkind = Counter(message.subkind for message in parse_path(file) if message.subkind is not None)
    for subkind, count in by_subkind.items():
        assert f"{subkind} {count}" in line, (subkind, line)
