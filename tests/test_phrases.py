"""The phrase table (sources/phrases.py): every row, put in a realistic line of its platform's export, gets
the row's kind and subkind from that platform's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinbot.data.records import SUBKINDS, Message
from twinbot.data.sources import ParseOptions, messenger, whatsapp
from twinbot.data.sources.phrases import (
    META_NOTICES,
    WHATSAPP_BODIES,
    WHATSAPP_NOTICES,
    Phrase,
    match_pieces,
    template_pieces,
)

REQUIRED_LANGUAGES = {"en", "es", "pt", "de", "fr", "it", "nl", "ru", "tr", "pl", "id"}


def _fill(template: str, actor: str = "Ann") -> str:
    return template.replace("{actor}", actor).replace("{name}", " Carl")


def _body(row: Phrase) -> str:
    """A message body as the app writes it, built from the row."""
    if row.rule == "exact":
        return row.text
    if row.rule == "suffix":
        return ("report.pdf • 3 pages " if "omi" in row.text or "ocult" in row.text or "wegge" in row.text
                else "IMG-20200312-WA0001.jpg ") + row.text  # fmt: skip
    if row.subkind == "attachment":
        return f"{row.text} 00000012-PHOTO-2020-03-12-14-05-23.jpg>"
    if row.subkind == "location":
        return row.text + "s://maps.google.com/?q=52.1,4.3"
    if row.subkind == "poll":
        return row.text + "\nWhere do we eat?\nOPTION: pizza (2 votes)"
    return row.text + ", tap to learn more"


def _whatsapp(tmp_path: Path, line: str) -> Message:
    path = tmp_path / "WhatsApp Chat with Alex.txt"
    path.write_text(f"12/03/2020, 14:04 - Alex: hello\n12/03/2020, 14:05 - {line}\n", encoding="utf-8")
    first, second = whatsapp.parse(path, ParseOptions())
    assert (first.kind, first.subkind, first.text) == ("text", None, "hello")
    return second


@pytest.mark.parametrize("row", WHATSAPP_BODIES, ids=lambda row: f"{row.language}:{row.text}")
def test_whatsapp_body_rows(tmp_path: Path, row: Phrase) -> None:
    message = _whatsapp(tmp_path, f"Sam: {_body(row)}")
    assert (message.kind, message.subkind) == (row.kind, row.subkind)
    if row.kind != "system":
        assert message.text == ""  # a placeholder is never training text


@pytest.mark.parametrize("row", WHATSAPP_NOTICES, ids=lambda row: f"{row.language}:{row.text}")
def test_whatsapp_notice_rows(tmp_path: Path, row: Phrase) -> None:
    message = _whatsapp(tmp_path, _fill(row.text, "Alex"))
    assert (message.kind, message.subkind, message.author) == ("system", row.subkind, "")


def test_whatsapp_ios_notice_and_unknown_notice(tmp_path: Path) -> None:
    path = tmp_path / "_chat.txt"
    path.write_text(
        "[12/03/2020, 14:05:00] Trip: \u200eAlex added Sam\n[12/03/2020, 14:06:00] Alex did something new\n",
        encoding="utf-8",
    )
    ios, unknown = whatsapp.parse(path, ParseOptions())
    assert (ios.kind, ios.subkind, ios.author) == ("system", "member_join", "")
    assert (unknown.kind, unknown.subkind) == ("system", "other")


def test_person_text_that_mentions_a_phrase_stays_text(tmp_path: Path) -> None:
    for body in (
        "I saw <Media omitted> lol",
        "I missed voice call practice",
        "poll: who comes",
        "null and void",
    ):
        message = _whatsapp(tmp_path, f"Sam: {body}")
        assert (message.kind, message.subkind) == ("text", None), body


@pytest.mark.parametrize("row", META_NOTICES, ids=lambda row: f"{row.language}:{row.text}")
def test_meta_rows(tmp_path: Path, row: Phrase) -> None:
    data = {
        "participants": [{"name": "Ann Lee"}, {"name": "Bob"}],
        "messages": [
            {"sender_name": "Ann Lee", "timestamp_ms": 1_600_000_000_000, "content": _fill(row.text)}
        ],
    }
    thread = tmp_path / "inbox" / "ann_1"
    thread.mkdir(parents=True)
    (thread / "message_1.json").write_text(json.dumps(data), encoding="utf-8")
    [message] = messenger.parse(thread, ParseOptions())
    assert (message.kind, message.subkind) == (row.kind, row.subkind)


def test_table_covers_the_languages_and_uses_known_subkinds() -> None:
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "placeholder"} >= REQUIRED_LANGUAGES
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "attachment"} >= REQUIRED_LANGUAGES
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "deleted"} >= REQUIRED_LANGUAGES
    assert {row.subkind for row in (*WHATSAPP_BODIES, *WHATSAPP_NOTICES, *META_NOTICES)} <= set(SUBKINDS)
    assert all(row.source for row in (*WHATSAPP_BODIES, *WHATSAPP_NOTICES, *META_NOTICES))


@pytest.mark.parametrize(
    ("template", "text", "values"),
    [
        ("{name} left", "ann left", ["ann"]),
        ("{name} left", " left", None),
        ("{name} added {name}", "ann added bob", ["ann", "bob"]),
        ("{name} added {name}", "ann added", None),
        ("You were added", "you were added", []),
    ],
)
def test_match_pieces(template: str, text: str, values: list[str] | None) -> None:
    assert match_pieces(template_pieces(template), text) == values


def test_match_pieces_is_linear() -> None:
    pieces = template_pieces("{name} reacted {name} to your message")
    text = "a reacted " * 50_000
    assert match_pieces(pieces, text) is None
