"""Message.subkind and Message.reactions from the Discord, Telegram and generic parsers (WhatsApp and Meta:
test_phrases.py and test_sources_meta.py; Slack: test_sources_slack.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twinbot.data.sources import ParseOptions, discord_csv, discord_json, generic_jsonl, telegram


def test_discord_json_types_and_reactions(tmp_path: Path) -> None:
    def message(number: int, kind: str, content: str = "", **extra: object) -> dict[str, object]:
        return {"id": str(number), "type": kind, "timestamp": f"2024-01-01T00:00:0{number}+00:00",
                "content": content, "author": {"id": "1", "name": "ann"}, **extra}  # fmt: skip

    data = {
        "guild": {"id": "0", "name": "Direct Messages"},
        "channel": {"id": "9", "name": "ann"},
        "messages": [
            message(1, "Default", "hi", reactions=[{"emoji": {"name": "👍"}, "count": 2}, {"count": 1}]),
            message(2, "Default", attachments=[{"id": "a"}]),
            message(3, "RecipientAdd", "Added bob to the group."),
            message(4, "ChannelPinnedMessage", "Pinned a message."),
            message(5, "Call", "Started a call that lasted 3 minutes."),
            message(6, "ThreadCreated", "Started a thread."),
        ],
    }
    path = tmp_path / "ann [9].json"
    path.write_text(json.dumps(data), encoding="utf-8")
    got = [(m.kind, m.subkind, m.reactions) for m in discord_json.parse(path, ParseOptions())]
    assert got == [
        ("text", None, 3),
        ("media", "attachment", 0),
        ("system", "member_join", 0),
        ("system", "pin", 0),
        ("call", "call", 0),
        ("system", "other", 0),
    ]


def test_discord_csv_fallback_texts_and_reactions(tmp_path: Path) -> None:
    path = tmp_path / "ann [9].csv"
    path.write_text(
        "AuthorID,Author,Date,Content,Attachments,Reactions\n"
        '"1","ann","2024-01-01T00:00:01+00:00","hi","","👍 (3),🎉 (1)"\n'
        '"1","ann","2024-01-01T00:00:02+00:00","Left the group.","",""\n'
        '"1","ann","2024-01-01T00:00:03+00:00","Started a call that lasted 2 minutes.","",""\n'
        '"1","ann","2024-01-01T00:00:04+00:00","","https://cdn/x.png",""\n',
        encoding="utf-8",
    )
    got = [(m.kind, m.subkind, m.reactions) for m in discord_csv.parse(path, ParseOptions())]
    assert got == [
        ("text", None, 4),
        ("system", "member_leave", 0),
        ("call", "call", 0),
        ("media", "attachment", 0),
    ]


def test_telegram_actions_media_and_reactions(tmp_path: Path) -> None:
    def message(number: int, **fields: object) -> dict[str, object]:
        return {"id": number, "type": "message", "date_unixtime": str(1_700_000_000 + number),
                "from": "Ann", "from_id": "user1", "text": "", **fields}  # fmt: skip

    data = {
        "name": "Ann",
        "type": "personal_chat",
        "id": 5,
        "messages": [
            message(1, text="hi", reactions=[{"type": "emoji", "count": 2, "emoji": "👍"}]),
            message(2, photo="photos/a.jpg"),
            message(3, location_information={"latitude": 1, "longitude": 2}),
            message(4, poll={"question": "?"}),
            message(5, contact_information={"first_name": "Bob"}),
            message(6),
            {"id": 7, "type": "service", "date_unixtime": "1700000007", "actor": "Ann", "actor_id": "user1",
             "action": "invite_members", "text": ""},
            {"id": 8, "type": "service", "date_unixtime": "1700000008", "actor": "Ann", "actor_id": "user1",
             "action": "phone_call", "text": ""},
            {"id": 9, "type": "service", "date_unixtime": "1700000009", "actor": "Ann", "actor_id": "user1",
             "action": "something_new", "text": ""},
        ],
    }  # fmt: skip
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    got = [(m.kind, m.subkind, m.reactions) for m in telegram.parse(path, ParseOptions())]
    assert got == [
        ("text", None, 2),
        ("media", "attachment", 0),
        ("media", "location", 0),
        ("media", "poll", 0),
        ("media", "contact", 0),
        ("system", "placeholder", 0),
        ("system", "member_join", 0),
        ("call", "call", 0),
        ("system", "other", 0),
    ]


def test_generic_subkind_field_defaults_and_empty_bodies(tmp_path: Path) -> None:
    rows = [
        {"timestamp": 1, "author": "a", "text": "hi", "reactions": 2},
        {"timestamp": 2, "author": "a", "text": "", "attachments": 1},
        {"timestamp": 3, "author": "a", "text": ""},
        {"timestamp": 4, "author": "a", "text": "", "kind": "system", "subkind": "pin"},
        {"timestamp": 5, "author": "a", "text": "", "kind": "call"},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    got = [(m.kind, m.subkind, m.reactions) for m in generic_jsonl.parse(path, ParseOptions())]
    assert got == [
        ("text", None, 2),
        ("media", "attachment", 0),
        ("system", "placeholder", 0),
        ("system", "pin", 0),
        ("call", "call", 0),
    ]


def test_prepare_report_counts_dropped_messages_by_subkind() -> None:
    from datetime import datetime, timedelta

    from twinbot.data.prepare import PrepareOptions, prepare_messages
    from twinbot.data.records import Message

    t0 = datetime(2024, 1, 1, 12, 0)

    def message(n: int, author: str, text: str, kind: str = "text", subkind: str | None = None) -> Message:
        when = t0 + timedelta(minutes=n)
        return Message("whatsapp", "c", str(n), when, author, author, text, kind, subkind=subkind)  # type: ignore[arg-type]

    messages = [
        message(0, "Alex", "hi Sam"),
        message(1, "Sam", "hi Alex"),
        message(2, "Sam", "", "media", "placeholder"),
        message(3, "Sam", "This message was deleted", "system", "deleted"),
        message(4, "Alex", "", "media", "placeholder"),
        message(5, "", "Alex added Bo", "system", "member_join"),
        message(6, "Alex", "", "call", "call"),
    ]
    stats = prepare_messages(messages, PrepareOptions(me=["Sam"])).stats
    assert stats.dropped_by_subkind == {"call": 1, "deleted": 1, "member_join": 1, "placeholder": 2}
    assert stats.kept == 2  # the deleted notice never becomes Sam's text


def test_parse_summary_shows_subkinds(monkeypatch, capsys, tmp_path: Path) -> None:
    import sys

    import pytest

    from twinbot.cli import main

    path = tmp_path / "WhatsApp Chat with Alex.txt"
    path.write_text(
        "12/03/2020, 14:04 - Alex: hello\n12/03/2020, 14:05 - Sam: <Media omitted>\n"
        "12/03/2020, 14:06 - Sam: <Media omitted>\n12/03/2020, 14:07 - Alex added Bo\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys, "argv", ["twinbot", "parse", str(path)])
    with pytest.raises(SystemExit) as info:
        main()
    out = capsys.readouterr().out
    assert info.value.code in (0, None)
    assert "placeholder 2, member_join 1" in out
    assert "Alex" in out and "Sam" in out
    # the group line has no author: a row of its own, not an empty name beside the ones to pick --me from
    assert re.search(r"^\s*\(no author: notices\)\s+1\s*$", out, re.MULTILINE)
