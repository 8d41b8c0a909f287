"""Discord parsers: DiscordChatExporter JSON and CSV, and Discord's own data package."""

from __future__ import annotations

import json
import random
import shutil
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, discord_csv, discord_json, discord_package, format_module
from twinbot.errors import TwinbotError

FIXTURES = Path(__file__).parent / "fixtures" / "discord"
DCE_JSON = FIXTURES / "dm.json"
DCE_CSV = FIXTURES / "Direct Messages - bob [900000000000000002].csv"
PACKAGE = FIXTURES / "package"
SECRET = "the secret plan is tuesday"  # message text that must never show up in an error
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_json(path: Path) -> list[Message]:
    return list(discord_json.parse(path, ParseOptions()))


def parse_csv(path: Path) -> list[Message]:
    return list(discord_csv.parse(path, ParseOptions()))


def parse_package(path: Path) -> list[Message]:
    return list(discord_package.parse(path, ParseOptions()))


def author(author_id: str = "1", name: str = "ann", nickname: str | None = None, bot: bool = False) -> dict:
    return {"id": author_id, "name": name, "discriminator": "0000", "nickname": nickname, "isBot": bot}


def dce_message(message_id: Any, timestamp: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    message = {
        "id": message_id,
        "type": "Default",
        "timestamp": timestamp,
        "content": content,
        "author": author(),
        "attachments": [],
        "embeds": [],
        "stickers": [],
        "reactions": [],
    }
    message.update(extra)
    return message


def write_dce(path: Path, messages: list[dict[str, Any]], channel_id: str | None = "77") -> Path:
    doc: dict[str, Any] = {"guild": {"id": "0", "name": "Direct Messages", "iconUrl": ""}}
    if channel_id is not None:
        doc["channel"] = {"id": channel_id, "type": "DirectTextChat", "name": "ann"}
    doc["messages"] = messages
    doc["messageCount"] = len(messages)
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def assert_only_twinbot_errors(parse_fn: Any, path: Path) -> None:
    try:
        for message in parse_fn(path):
            assert isinstance(message, Message)
            assert isinstance(message.id, str) and isinstance(message.author_id, str)
    except TwinbotError as exc:
        assert exc.path is not None
        assert SECRET not in str(exc)


# --- discord-json ---------------------------------------------------------------------------------


def test_registered_names() -> None:
    assert format_module("discord-json") is discord_json
    assert format_module("discord-csv") is discord_csv
    assert format_module("discord-package") is discord_package


def test_json_fixture_has_bom_and_crlf_and_parses_every_field() -> None:
    raw = DCE_JSON.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    messages = parse_json(DCE_JSON)
    by_id = {m.id: m for m in messages}
    assert len(by_id) == 9
    assert {m.platform for m in messages} == {"discord-json"}
    assert {m.chat_id for m in messages} == {"900000000000000001"}

    first = by_id["1000000000000000001"]
    assert first.author == "Ally"  # nickname wins over name
    assert first.author_id == "111111111111111111"
    assert first.kind == "text" and first.text == "hey, anyone up for hiking on saturday?"
    assert first.timestamp == datetime(2024, 2, 3, 18, 0, tzinfo=timezone(timedelta(hours=1)))

    reply = by_id["1000000000000000002"]
    assert reply.reply_to == "1000000000000000001"
    assert reply.author == "bob"  # no nickname: the name
    assert reply.timestamp.microsecond == 500000

    attachment_only = by_id["1000000000000000003"]
    assert (attachment_only.kind, attachment_only.text, attachment_only.attachments) == ("media", "", 1)
    assert attachment_only.timestamp.microsecond == 123456  # 7 fractional digits trimmed to 6
    sticker_only = by_id["1000000000000000004"]
    assert (sticker_only.kind, sticker_only.attachments) == ("media", 0)

    call = by_id["1000000000000000005"]
    assert (call.kind, call.text) == ("call", "")
    assert call.timestamp.utcoffset() == timedelta(0)
    renamed = by_id["1000000000000000006"]
    assert (renamed.kind, renamed.text) == ("system", "")
    pinned = by_id["1000000000000000009"]
    assert (pinned.kind, pinned.text, pinned.reply_to) == ("system", "", None)

    multi = by_id["1000000000000000007"]
    assert multi.text == "the lake trail 🥾 looks great\nsecond line"  # CRLF of the file is not in the text
    assert multi.attachments == 2
    assert by_id["1000000000000000008"].is_bot and not first.is_bot


def test_json_fallback_texts_never_become_text() -> None:
    for message in parse_json(DCE_JSON):
        if message.kind in ("system", "call"):
            assert message.text == ""
    texts = " ".join(m.text for m in parse_json(DCE_JSON))
    assert "Started a call" not in texts and "Changed the channel name" not in texts


def test_json_records_in_time_order_across_offsets_and_stable_for_ties() -> None:
    messages = parse_json(DCE_JSON)
    moments = [m.timestamp for m in messages]
    assert moments == sorted(moments)
    ids = [m.id for m in messages]
    # the call at 17:03Z (18:03+01) comes after 18:02+01; the bot's 18:30-05:00 is last
    assert ids.index("1000000000000000005") > ids.index("1000000000000000004")
    assert ids[-1] == "1000000000000000008"
    # equal timestamps keep file order
    assert ids.index("1000000000000000003") + 1 == ids.index("1000000000000000004")


def test_json_numeric_snowflakes_stay_exact_strings(tmp_path: Path) -> None:
    path = write_dce(
        tmp_path / "n.json",
        [
            dce_message(1234567890123456789, "2024-01-01T00:00:00+00:00", author={"id": 9876543210987654321}),
            dce_message("2", "2024-01-01T00:00:01+00:00", reference={"messageId": 1234567890123456789}),
        ],
    )
    path.write_text(path.read_text().replace('"2"', "7.73264E+18"), encoding="utf-8")
    first, second = parse_json(path)
    assert second.id == "7.73264E+18"  # a mangled number is kept as written, never through a float
    assert first.id == "1234567890123456789"
    assert first.author_id == "9876543210987654321" and first.author == "9876543210987654321"
    assert second.reply_to == "1234567890123456789"


def test_json_timestamps_with_zero_to_seven_fraction_digits(tmp_path: Path) -> None:
    stamps = [f"2024-01-01T10:00:00{'.' + '1' * n if n else ''}+02:00" for n in range(8)] + [
        "2024-01-01T08:00:01Z"
    ]
    path = write_dce(tmp_path / "t.json", [dce_message(str(i), s) for i, s in enumerate(stamps)])
    messages = parse_json(path)
    assert [m.timestamp.tzinfo is not None for m in messages] == [True] * 9
    assert messages[0].timestamp == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert messages[7].timestamp.microsecond == 111111
    assert messages[-1].id == "8"


def test_json_out_of_order_input_is_sorted(tmp_path: Path) -> None:
    path = write_dce(
        tmp_path / "o.json",
        [
            dce_message("b", "2024-01-01T00:00:02+00:00"),
            dce_message("a", "2024-01-01T00:00:01+00:00"),
            dce_message("c", "2024-01-01T00:00:02+00:00"),
        ],
    )
    assert [m.id for m in parse_json(path)] == ["a", "b", "c"]


def test_json_forward_is_not_a_reply_and_blank_content_is_media(tmp_path: Path) -> None:
    path = write_dce(
        tmp_path / "f.json",
        [
            dce_message(
                "1", "2024-01-01T00:00:00+00:00", "", reference={"type": "Forward", "messageId": "9"}
            ),
            dce_message("2", "2024-01-01T00:00:01+00:00", "  \n", embeds=[{"title": "x"}]),
            dce_message("3", "2024-01-01T00:00:02+00:00", "x", type="GuildMemberJoin"),
            dce_message("4", "2024-01-01T00:00:03+00:00", "ok", type=None),
        ],
    )
    kinds = [(m.kind, m.reply_to) for m in parse_json(path)]
    assert kinds == [("media", None), ("media", None), ("system", None), ("text", None)]


def test_json_chat_id_from_file_name_without_channel(tmp_path: Path) -> None:
    path = write_dce(
        tmp_path / "Guild - general [123456789] [part 2].json",
        [dce_message("1", "2024-01-01T00:00:00+00:00")],
        channel_id=None,
    )
    assert parse_json(path)[0].chat_id == "123456789"


def test_json_folder_merges_partitions_and_keeps_channels_apart(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    write_dce(
        folder / "g - a [77].json",
        [dce_message("1", "2024-01-01T00:00:00+00:00"), dce_message("2", "2024-01-01T00:00:05+00:00")],
    )
    write_dce(  # the second part overlaps the first by one message
        folder / "g - a [77] [part 2].json",
        [dce_message("2", "2024-01-01T00:00:05+00:00"), dce_message("3", "2024-01-01T00:00:03+00:00")],
    )
    write_dce(folder / "g - b [88].json", [dce_message("9", "2023-01-01T00:00:00+00:00")], channel_id="88")
    (folder / "notes.json").write_text('{"not": "an export"}', encoding="utf-8")
    assert discord_json.sniff(folder)
    messages = parse_json(folder)
    assert [(m.chat_id, m.id) for m in messages] == [("77", "1"), ("77", "3"), ("77", "2"), ("88", "9")]


def test_json_sniff_is_content_based(tmp_path: Path) -> None:
    assert discord_json.sniff(DCE_JSON)
    renamed = tmp_path / "export.txt"
    shutil.copy(DCE_JSON, renamed)
    assert discord_json.sniff(renamed)
    not_dce = tmp_path / "other.json"
    not_dce.write_text('{"name": "x", "messages": []}', encoding="utf-8")
    assert not discord_json.sniff(not_dce)
    assert not discord_json.sniff(DCE_CSV)
    assert not discord_json.sniff(PACKAGE)
    binary = tmp_path / "bin.json"
    binary.write_bytes(bytes(range(256)))
    assert not discord_json.sniff(binary)
    assert not discord_json.sniff(tmp_path / "missing.json")


def _error(parse_fn: Any, path: Path) -> TwinbotError:
    with pytest.raises(TwinbotError) as info:
        list(parse_fn(path))
    assert info.value.path is not None
    assert SECRET not in str(info.value)
    return info.value


def test_json_bad_input_errors_name_the_file(tmp_path: Path) -> None:
    good = write_dce(
        tmp_path / "good.json", [dce_message(str(i), "2024-01-01T00:00:00Z", SECRET) for i in range(50)]
    )
    raw = good.read_bytes()
    cases = {
        "empty.json": b"",
        "truncated.json": raw[: len(raw) // 2],
        "array.json": b"[1, 2, 3]",
        "garbage.json": b"\x00\x01\x02 not json",
        "latin1.json": raw.replace(b"secret", "s\xe9cret".encode("latin-1")),
        "nomessages.json": b'{"guild": {"id": "0"}, "channel": {"id": "1"}}',
        "messagesobject.json": b'{"guild": {"id": "0"}, "channel": {"id": "1"}, "messages": {}}',
    }
    expected = {
        "empty.json": "empty",
        "truncated.json": "ends early",
        "array.json": "not a DiscordChatExporter",
        "garbage.json": "not valid JSON",
        "latin1.json": "UTF-8",
        "nomessages.json": "no `messages`",
        "messagesobject.json": "not a list",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        error = _error(parse_json, path)
        assert error.path == path
        assert expected[name] in error.message, name


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"author": None}, "wrong type"),
        ({"content": 5}, "wrong type"),
        ({"timestamp": "yesterday"}, "invalid timestamp"),
        ({"id": [1]}, "wrong type"),
        ({"id": None}, "wrong type"),
    ],
)
def test_json_malformed_message_fields(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    messages = [
        dce_message("1", "2024-01-01T00:00:00Z", SECRET),
        dce_message("2", "2024-01-01T00:00:01Z", SECRET),
    ]
    messages[1].update(change)
    error = _error(parse_json, write_dce(tmp_path / "m.json", messages))
    assert "message #2" in error.message and expected in error.message


def test_json_missing_author_field_is_named(tmp_path: Path) -> None:
    message = dce_message("1", "2024-01-01T00:00:00Z", SECRET)
    del message["author"]
    error = _error(parse_json, write_dce(tmp_path / "m.json", [message]))
    assert "'author'" in error.message


def test_json_folder_without_exports_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    assert "no DiscordChatExporter JSON files" in _error(parse_json, tmp_path).message
    assert "cannot read" in _error(parse_json, tmp_path / "nope.json").message


def test_json_streams_a_larger_file(tmp_path: Path) -> None:
    messages = [
        dce_message(str(10**18 + i), f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(3000)
    ]
    parsed = parse_json(write_dce(tmp_path / "big.json", messages))
    assert len(parsed) == 3000 and parsed[-1].id == str(10**18 + 2999)
    assert len({id(m.author) for m in parsed}) == 1  # author strings are shared, not copied per message


@FUZZ
@given(st.binary(max_size=300))
def test_json_fuzz_random_bytes(data: bytes) -> None:
    with TmpFile(data, ".json") as path:
        assert_only_twinbot_errors(parse_json, path)


@FUZZ
@given(st.data())
def test_json_fuzz_mutated_fixture(data: st.DataObject) -> None:
    mutated = mutate(DCE_JSON.read_bytes(), data)
    with TmpFile(mutated, ".json") as path:
        assert_only_twinbot_errors(parse_json, path)


def test_json_fuzz_structural_mutations(tmp_path: Path) -> None:
    """Replace random values of a valid export with values of other JSON types."""
    rng = random.Random(7)
    base = json.loads(DCE_JSON.read_bytes().decode("utf-8-sig"))
    replacements: list[Any] = [None, 0, -1, 1.5, "", "x", [], {}, [1], {"id": 1}, True, 10**30]

    def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        if isinstance(node, dict):
            for key, value in node.items():
                found += paths(value, (*prefix, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                found += paths(value, (*prefix, index))
        return found

    all_paths = paths(base)[1:]
    for round_number in range(150):
        doc = json.loads(json.dumps(base))
        where = rng.choice(all_paths)
        node = doc
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = rng.choice(replacements)
        path = tmp_path / f"s{round_number}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        assert_only_twinbot_errors(parse_json, path)


# --- discord-csv ----------------------------------------------------------------------------------


def test_csv_fixture() -> None:
    raw = DCE_CSV.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    messages = parse_csv(DCE_CSV)
    assert {m.chat_id for m in messages} == {"900000000000000002"}  # from the [id] in the file name
    assert {m.platform for m in messages} == {"discord-csv"}
    assert all(m.reply_to is None for m in messages)
    by_id = {m.id: m for m in messages}
    assert sorted(by_id) == ["1", "2", "3", "4", "5", "6"]
    first = by_id["1"]
    assert first.author == "alice" and first.author_id == "111111111111111111"  # "#1234" dropped
    assert first.text == 'hey, anyone up for hiking?\nline two, with "quotes"'
    assert first.timestamp == datetime(2024, 2, 3, 18, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert (by_id["3"].kind, by_id["3"].attachments, by_id["3"].text) == ("media", 2, "")
    assert (by_id["4"].kind, by_id["4"].text) == ("call", "")
    assert (by_id["5"].kind, by_id["5"].text) == ("system", "")
    assert (by_id["6"].kind, by_id["6"].author) == ("text", "carol")  # not exactly a fallback text
    moments = [m.timestamp for m in messages]
    assert moments == sorted(moments)
    assert [m.id for m in messages][-2:] == ["5", "6"]  # equal times keep file order


def test_csv_sniff(tmp_path: Path) -> None:
    assert discord_csv.sniff(DCE_CSV)
    assert not discord_csv.sniff(DCE_JSON)
    assert not discord_csv.sniff(FIXTURES.parent / "generic" / "chat.csv")
    unquoted = tmp_path / "x.txt"
    unquoted.write_text("AuthorID,Author,Date,Content,Attachments,Reactions\n", encoding="utf-8")
    assert discord_csv.sniff(unquoted)
    assert discord_csv.sniff(FIXTURES)  # a folder holding one


def write_csv(
    path: Path, rows: list[list[str]], header: str = "AuthorID,Author,Date,Content,Attachments,Reactions"
) -> Path:
    lines = [header] + [",".join('"' + v.replace('"', '""') + '"' for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_legacy_dates_partitions_and_folder(tmp_path: Path) -> None:
    folder = tmp_path / "csvs"
    folder.mkdir()
    write_csv(folder / "g - a [5].csv", [["1", "ann", "04-Jan-19 05:52 PM", "first", "", ""]])
    write_csv(
        folder / "g - a [5] [part 2].csv",
        [["1", "ann", "2019-01-05T10:00:00.0000000+00:00", "second", "", ""]],
    )
    messages = parse_csv(folder)
    assert [(m.chat_id, m.id, m.text) for m in messages] == [("5", "1", "first"), ("5", "2", "second")]
    assert messages[0].timestamp == datetime(2019, 1, 4, 17, 52)


def test_csv_bad_input(tmp_path: Path) -> None:
    header_only = write_csv(tmp_path / "h.csv", [])
    assert parse_csv(header_only) == []
    cases = {
        "empty.csv": (b"", "empty"),
        "header.csv": (b"Name,When,What\n", "expected the header"),
        "short.csv": (
            b'"AuthorID","Author","Date","Content","Attachments","Reactions"\n"1","a"\n',
            "columns",
        ),
        "date.csv": (
            f'AuthorID,Author,Date,Content,Attachments,Reactions\n1,a,someday,"{SECRET}",,\n'.encode(),
            "Date",
        ),
        "unclosed.csv": (
            b'AuthorID,Author,Date,Content,Attachments,Reactions\n1,a,2020-01-01T00:00:00Z,"'
            + b"x" * 140_000,
            "malformed CSV",
        ),
        "latin1.csv": (
            "AuthorID,Author,Date,Content,Attachments,Reactions\n1,a,2020-01-01T00:00:00Z,caf\xe9,,\n".encode(
                "latin-1"
            ),
            "UTF-8",
        ),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        error = _error(parse_csv, path)
        assert expected in error.message, name
    assert _error(parse_csv, tmp_path / "date.csv").line == 2


@FUZZ
@given(st.binary(max_size=300))
def test_csv_fuzz_random_bytes(data: bytes) -> None:
    with TmpFile(b"AuthorID,Author,Date,Content,Attachments,Reactions\n" + data, ".csv") as path:
        assert_only_twinbot_errors(parse_csv, path)


@FUZZ
@given(st.data())
def test_csv_fuzz_mutated_fixture(data: st.DataObject) -> None:
    with TmpFile(mutate(DCE_CSV.read_bytes(), data), ".csv") as path:
        assert_only_twinbot_errors(parse_csv, path)


# --- discord-package ------------------------------------------------------------------------------


def test_package_folder() -> None:
    messages = parse_package(PACKAGE)
    assert {m.platform for m in messages} == {"discord-package"}
    assert {(m.author_id, m.author) for m in messages} == {("111111111111111111", "alice")}
    assert [(m.chat_id, m.id) for m in messages] == [
        ("900000000000000003", "1000000000000000010"),  # newest-first file: equal times in true order
        ("900000000000000003", "1000000000000000011"),
        ("900000000000000003", "7.73264E+18"),  # spreadsheet-mangled id kept as written
        ("900000000000000004", "1000000000000000020"),  # a JSON number id kept digit for digit
        ("900000000000000004", "1000000000000000021"),
    ]
    by_id = {m.id: m for m in messages}
    assert by_id["7.73264E+18"].text == "see you there!\nbring snacks"
    assert by_id["7.73264E+18"].timestamp == datetime(2020, 8, 25, 22, 54, 5, 726000, tzinfo=UTC)
    assert (by_id["1000000000000000010"].kind, by_id["1000000000000000010"].attachments) == ("media", 2)
    assert by_id["1000000000000000021"].timestamp.microsecond == 500000


def test_package_messages_folder_itself_finds_the_owner() -> None:
    messages = parse_package(PACKAGE / "messages")
    assert len(messages) == 5 and {m.author for m in messages} == {"alice"}
    assert discord_package.sniff(PACKAGE / "messages")


def zip_folder(folder: Path, target: Path, rename: dict[str, str] | None = None, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                name = file.relative_to(folder).as_posix()
                for old, new in (rename or {}).items():
                    name = name.replace(old, new)
                archive.write(file, prefix + name)
    return target


def test_package_zip_with_capitalised_messages_and_prefix(tmp_path: Path) -> None:
    archive = zip_folder(PACKAGE, tmp_path / "package.zip", {"messages/": "Messages/"}, prefix="package/")
    assert discord_package.sniff(archive)
    assert [m.id for m in parse_package(archive)] == [m.id for m in parse_package(PACKAGE)]


def test_package_without_user_json(tmp_path: Path) -> None:
    archive = zip_folder(PACKAGE / "messages", tmp_path / "m.zip", prefix="messages/")
    messages = parse_package(archive)
    assert {(m.author_id, m.author) for m in messages} == {("me", "me")}


def test_package_sniff_rejects_others(tmp_path: Path) -> None:
    assert discord_package.sniff(PACKAGE)
    assert not discord_package.sniff(DCE_JSON)
    assert not discord_package.sniff(FIXTURES)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert not discord_package.sniff(other_zip)
    fake_zip = tmp_path / "fake.zip"
    fake_zip.write_bytes(b"PK\x03\x04 not really")
    assert not discord_package.sniff(fake_zip)


def test_package_bad_input(tmp_path: Path) -> None:
    no_chat = tmp_path / "nochat.zip"
    with zipfile.ZipFile(no_chat, "w") as archive:
        archive.writestr("account/user.json", '{"id": "1"}')
    assert "no Discord messages" in _error(parse_package, no_chat).message
    broken = tmp_path / "broken.zip"
    broken.write_bytes(zip_folder(PACKAGE, tmp_path / "ok.zip").read_bytes()[:200])
    assert ".zip" in _error(parse_package, broken).message
    future_zip = (
        tmp_path / "future.zip"
    )  # "version needed to extract" 9.9: zipfile raises NotImplementedError
    raw = bytearray(zip_folder(PACKAGE, tmp_path / "ok2.zip").read_bytes())
    central = raw.index(b"PK\x01\x02")
    raw[central + 6] = 99
    future_zip.write_bytes(bytes(raw))
    assert ".zip" in _error(parse_package, future_zip).message
    not_zip = tmp_path / "x.json"
    not_zip.write_text("{}", encoding="utf-8")
    assert _error(parse_package, not_zip).path == not_zip

    bad_json = tmp_path / "badjson"
    shutil.copytree(PACKAGE, bad_json)
    target = bad_json / "messages" / "c900000000000000004" / "messages.json"
    target.write_text(f'[\n  {{"ID": "1", "Contents": "{SECRET}", ', encoding="utf-8")
    error = _error(parse_package, bad_json)
    assert error.path == target and error.line is not None and "not valid JSON" in error.message

    bad_stamp = tmp_path / "badstamp"
    shutil.copytree(PACKAGE, bad_stamp)
    target = bad_stamp / "messages" / "c900000000000000003" / "messages.csv"
    target.write_text(
        f"ID,Timestamp,Contents,Attachments\n1,2020-01-01 00:00:00+00:00,ok,\n2,25/08/2020,{SECRET},\n"
    )
    error = _error(parse_package, bad_stamp)
    assert (error.path, error.line) == (target, 3) and "Timestamp" in error.message

    missing_field = tmp_path / "missing"
    shutil.copytree(PACKAGE, missing_field)
    (missing_field / "messages" / "c900000000000000004" / "messages.json").write_text('[{"ID": "1"}]')
    assert "'Timestamp'" in _error(parse_package, missing_field).message


@FUZZ
@given(st.data())
def test_package_fuzz_mutated_zip(data: st.DataObject) -> None:
    with TmpDir() as tmp:
        archive = zip_folder(PACKAGE, tmp / "p.zip", {}) if data.draw(st.booleans()) else None
        raw = archive.read_bytes() if archive else _stored_zip_bytes()
        target = tmp / "m.zip"
        target.write_bytes(mutate(raw, data))
        assert_only_twinbot_errors(parse_package, target)


def _stored_zip_bytes() -> bytes:
    """An uncompressed zip, so that mutations hit the member contents too."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(PACKAGE.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(PACKAGE).as_posix())
    return buffer.getvalue()


@FUZZ
@given(st.data())
def test_package_fuzz_mutated_member_files(data: st.DataObject) -> None:
    with TmpDir() as tmp:
        copy = tmp / "pkg"
        shutil.copytree(PACKAGE, copy)
        files = sorted(p for p in copy.rglob("*") if p.is_file())
        target = data.draw(st.sampled_from(files))
        target.write_bytes(mutate(target.read_bytes(), data))
        assert_only_twinbot_errors(parse_package, copy)


# --- helpers for fuzzing --------------------------------------------------------------------------


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    """Truncate, flip, insert or delete bytes of a valid file."""
    buffer = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        if not buffer:
            break
        position = data.draw(st.integers(0, len(buffer) - 1))
        action = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "dup"]))
        if action == "truncate":
            del buffer[position:]
        elif action == "flip":
            buffer[position] = data.draw(st.integers(0, 255))
        elif action == "insert":
            buffer[position:position] = data.draw(
                st.sampled_from([b'"', b",", b"{", b"]", b"\n", b"\xff", b"\x00", b"9e999"])
            )
        elif action == "delete":
            del buffer[position : position + data.draw(st.integers(1, 20))]
        else:
            end = min(len(buffer), position + 40)
            buffer[position:position] = buffer[position:end]
    return bytes(buffer)


class TmpDir:
    """A temp folder for hypothesis tests (function-scoped pytest fixtures do not reset per example)."""

    def __enter__(self) -> Path:
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        return Path(self._dir.name)

    def __exit__(self, *exc_info: object) -> None:
        self._dir.cleanup()


class TmpFile:
    def __init__(self, data: bytes, suffix: str) -> None:
        self.data = data
        self.suffix = suffix

    def __enter__(self) -> Path:
        self._dir = TmpDir()
        path = self._dir.__enter__() / f"fuzz{self.suffix}"
        path.write_bytes(self.data)
        return path

    def __exit__(self, *exc_info: object) -> None:
        self._dir.__exit__(*exc_info)
