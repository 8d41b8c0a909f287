"""Slack export parser: fixture workspace in tests/fixtures/slack/export/."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, slack
from twinbot.errors import TwinbotError

EXPORT = Path(__file__).parent / "fixtures" / "slack" / "export"
T = 1_610_000_000


def parse(path: Path) -> list[Message]:
    return list(slack.parse(path, ParseOptions()))


def chat(path: Path, channel: str) -> list[Message]:
    return [m for m in parse(path) if m.chat_id == channel]


def by_text(messages: list[Message]) -> dict[str, Message]:
    return {m.text: m for m in messages}


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def workspace(tmp_path: Path, messages: Any, users: Any = None) -> Path:
    root = tmp_path / "ws"
    (root / "general").mkdir(parents=True)
    (root / "channels.json").write_text(json.dumps([{"id": "C1", "name": "general"}]))
    if users is not None:
        (root / "users.json").write_text(json.dumps(users))
    (root / "general" / "2021-01-01.json").write_text(json.dumps(messages))
    return root


# --------------------------------------------------------------------------------------- sniffing


def test_sniff_accepts_the_export_folder_and_its_zip(tmp_path: Path) -> None:
    assert slack.sniff(EXPORT)
    assert slack.sniff(zip_folder(EXPORT, tmp_path / "ws.zip"))
    assert slack.sniff(zip_folder(EXPORT, tmp_path / "nested.zip", "My Workspace Slack export/"))


def test_sniff_rejects_other_things(tmp_path: Path) -> None:
    assert not slack.sniff(tmp_path)  # empty folder
    assert not slack.sniff(EXPORT / "users.json")  # a single file
    (tmp_path / "users.json").write_text('{"not": "a list"}')
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "2021-01-01.json").write_text("[]")
    assert not slack.sniff(tmp_path)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("users.json", "[]")
        zf.writestr("notes/readme.txt", "x")
    assert not slack.sniff(other)
    assert not slack.sniff(tmp_path / "missing")


# --------------------------------------------------------------------------------------- parsing


def test_every_channel_kind_is_a_chat_named_by_its_folder() -> None:
    chats = list(dict.fromkeys(m.chat_id for m in parse(EXPORT)))
    assert chats == ["D1", "general", "mpdm-annie--bob--carl-1", "random", "secret-plans"]
    assert {m.platform for m in parse(EXPORT)} == {"slack"}


def test_ts_is_the_id_and_a_utc_time_with_microseconds() -> None:
    first = chat(EXPORT, "general")[0]
    assert first.id == f"{T}.000100"
    assert first.timestamp == datetime(2021, 1, 7, 6, 13, 20, 100, tzinfo=UTC)


def test_channel_is_in_time_order_across_days() -> None:
    messages = chat(EXPORT, "general")
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(messages))
    texts = [m.text for m in messages]
    assert texts.index("posted earlier, listed later") < texts.index("@here @channel tom & jerry: 1 < 2 > 0")
    assert texts.index("same ts, first") < texts.index("same-second, later micro")


def test_users_resolve_to_display_then_real_then_user_name() -> None:
    messages = by_text(chat(EXPORT, "general"))
    assert messages["hi @Bob Owner, see #random and #random"].author == "annie"  # profile.display_name
    assert messages["same ts, first"].author == "Bob Owner"  # real_name
    assert messages["@here @channel tom & jerry: 1 < 2 > 0"].author == "carl"  # name
    guest = messages["guest from another workspace"]
    assert (guest.author_id, guest.author) == ("UX", "Xena Guest")  # not in users.json: user_profile


def test_markup_is_rendered() -> None:
    texts = {m.text for m in chat(EXPORT, "general")}
    assert "hi @Bob Owner, see #random and #random" in texts  # <@U2>, <#C2|random>, <#C2>
    assert "thanks @annie! https://example.org/a?b=1&c=2 and the site" in texts  # links, &amp; in a url
    assert "@here @channel tom & jerry: 1 < 2 > 0" in texts


@pytest.mark.parametrize(
    ("raw", "rendered"),
    [
        ("<@U9>", "@U9"),
        ("<@U9|zed>", "@zed"),
        ("<#C9>", "#C9"),
        ("<!everyone>", "@everyone"),
        ("<!here|here>", "@here"),
        ("<!subteam^S1|@devs> ping", "@devs ping"),
        ("<!date^1392734382^{date}|Feb 18, 2014>", "Feb 18, 2014"),
        ("<mailto:a@b.org|a@b.org>", "a@b.org"),
        ("<https://x.org>", "https://x.org"),
        ("&amp;lt; stays one level", "&lt; stays one level"),
        ("a < b", "a < b"),
    ],
)
def test_render(raw: str, rendered: str) -> None:
    assert slack.render(raw, slack.SlackDirectory({}, {})) == rendered


def test_thread_replies_point_at_the_parent() -> None:
    messages = chat(EXPORT, "general")
    parent = next(m for m in messages if m.text.startswith("hi @Bob"))
    reply = next(m for m in messages if m.text.startswith("thanks"))
    assert parent.reply_to is None  # thread_ts == ts: the parent itself
    assert reply.reply_to == parent.id


def test_channel_events_are_system_and_bots_keep_their_messages() -> None:
    messages = by_text(chat(EXPORT, "general"))
    joined = messages["@Bob Owner has joined the channel"]
    assert (joined.kind, joined.subkind) == ("system", "member_join")
    topic = messages["@annie set the channel topic: plans"]
    assert (topic.kind, topic.subkind) == ("system", "rename")
    # bots are authors like anyone, marked is_bot: prepare's bot filter drops them (reason "bot")
    deploy = messages["Deployed v1.2"]
    assert (deploy.kind, deploy.author_id, deploy.author, deploy.is_bot) == (
        "text",
        "bot:B1",
        "deploybot",
        True,
    )
    app = messages["app says hello"]
    assert (app.kind, app.author_id, app.is_bot) == ("text", "bot:B2", True)
    assert not any(m.is_bot for m in messages.values() if not m.author_id.startswith("bot:"))


def test_file_comment_belongs_to_the_commenter_and_reactions_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "export"
    (root / "general").mkdir(parents=True)
    (root / "users.json").write_text(json.dumps([{"id": "U1", "name": "ann"}, {"id": "U2", "name": "bob"}]))
    (root / "channels.json").write_text(json.dumps([{"id": "C1", "name": "general"}]))
    day = [
        {"type": "message", "subtype": "file_share", "user": "U1", "ts": "1.0", "text": "",
         "files": [{"id": "F1"}], "reactions": [{"name": "+1", "users": ["U2"], "count": 1},
                                                {"name": "tada", "users": ["U1", "U2"], "count": 2}]},
        {"type": "message", "subtype": "file_comment", "user": "U1", "ts": "2.0",
         "text": "<@U2> commented on <@U1>'s file: nice", "comment": {"user": "U2", "comment": "nice"}},
        {"type": "message", "subtype": "tombstone", "user": "USLACKBOT", "ts": "3.0",
         "text": "This message was deleted."},
        {"type": "message", "subtype": "pinned_item", "user": "U1", "ts": "4.0", "text": "pinned"},
    ]  # fmt: skip
    (root / "general" / "2024-01-01.json").write_text(json.dumps(day))
    share, comment, tombstone, pin = chat(root, "general")
    assert (share.kind, share.subkind, share.author, share.attachments, share.reactions) == (
        "media",
        "attachment",
        "ann",
        1,
        3,
    )
    assert (comment.kind, comment.author_id, comment.author, comment.text) == ("text", "U2", "bob", "nice")
    assert (tombstone.kind, tombstone.subkind) == ("system", "deleted")
    assert (pin.kind, pin.subkind) == ("system", "pin")


def test_files_count_as_attachments() -> None:
    messages = chat(EXPORT, "general")
    upload = next(m for m in messages if m.attachments == 2)
    assert (upload.kind, upload.text) == ("media", "")
    doc = by_text(messages)["here is the doc"]
    assert (doc.kind, doc.attachments) == ("text", 1)


def test_message_without_ts_borrows_the_previous_time() -> None:
    messages = chat(EXPORT, "general")
    texts = [m.text for m in messages]
    index = texts.index("no ts on this one")
    assert messages[index].timestamp == messages[index - 1].timestamp
    assert messages[index].id.startswith("#")


@pytest.mark.parametrize("prefix", ["", "Workspace export/"])
def test_zip_gives_the_same_messages_as_the_folder(tmp_path: Path, prefix: str) -> None:
    archive = zip_folder(EXPORT, tmp_path / "ws.zip", prefix)
    assert [m.to_json() for m in parse(archive)] == [m.to_json() for m in parse(EXPORT)]


def test_a_channel_folder_or_day_file_inside_an_export_parses_just_that() -> None:
    assert slack.sniff(EXPORT / "general")
    assert slack.sniff(EXPORT / "general" / "2021-01-08.json")
    channel = parse(EXPORT / "general")
    assert [m.to_json() for m in channel] == [m.to_json() for m in chat(EXPORT, "general")]
    day = parse(EXPORT / "general" / "2021-01-08.json")
    assert {m.timestamp.date().isoformat() for m in day} == {"2021-01-08"}
    assert any(m.author == "annie" for m in day)  # names still come from the export's users.json


def test_a_channel_folder_outside_an_export_is_not_slack(tmp_path: Path) -> None:
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "2021-01-01.json").write_text("[]")
    assert not slack.sniff(tmp_path / "general")
    assert not slack.sniff(tmp_path / "general" / "2021-01-01.json")


def test_export_without_users_json_keeps_user_ids(tmp_path: Path) -> None:
    root = workspace(tmp_path, [{"type": "message", "user": "U1", "text": "hi <@U1>", "ts": "1.5"}])
    message = parse(root)[0]
    assert (message.author_id, message.author, message.text) == ("U1", "U1", "hi @U1")
    assert message.timestamp == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)


# --------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"", 1),
        (b'[\n{"type": "message", "user": "U1", "text": "secret', 2),
        (b'{"messages": []}', None),
        (b"[42]", None),
        (b'[{"text": "caf\xe9"}]', 1),
        (b"\x00\x01\x02", None),
    ],
)
def test_bad_day_files_raise_twinbot_error_naming_the_file(
    tmp_path: Path, content: bytes, line: int | None
) -> None:
    root = workspace(tmp_path, [])
    day = root / "general" / "2021-01-01.json"
    day.write_bytes(content)
    with pytest.raises(TwinbotError) as info:
        parse(root)
    assert info.value.path == day
    if line is not None:
        assert info.value.line == line
    assert "secret" not in str(info.value)


def test_bad_users_json_is_a_twinbot_error(tmp_path: Path) -> None:
    root = workspace(tmp_path, [], users={"U1": "not a list"})
    with pytest.raises(TwinbotError, match="list of users"):
        parse(root)


def test_exports_without_a_channel_are_twinbot_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("users.json", "[]")
    for path in (empty, tmp_path):
        with pytest.raises(TwinbotError, match="no Slack channel"):
            parse(path)
    with pytest.raises(TwinbotError, match=r"folder or a \.zip"):
        parse(EXPORT / "users.json")
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04" + b"\x00" * 30)
    with pytest.raises(TwinbotError):
        parse(damaged)


# --------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
MESSAGE_KEYS = st.sampled_from(
    [
        "type",
        "user",
        "text",
        "ts",
        "subtype",
        "thread_ts",
        "files",
        "bot_id",
        "username",
        "user_profile",
        "bot_profile",
    ]
)
SLACK_TEXT = st.lists(
    st.sampled_from(["<", ">", "|", "@", "#", "!", "&amp;", "&lt;", "U1", "C1", "^", "http://x", " ", "a"]),
    max_size=12,
).map("".join)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the fixture workspace for all fuzz examples; each example restores what it changed."""
    return Path(shutil.copytree(EXPORT, tmp_path_factory.mktemp("slack") / "ws"))


def _parse_mutated(root: Path, mutate: Any) -> None:
    originals = {p: p.read_bytes() for p in root.rglob("*.json")}
    try:
        mutate(root)
        try:
            slack.sniff(root)
            for message in slack.parse(root, ParseOptions()):
                assert isinstance(message.text, str)
        except TwinbotError:
            pass
    finally:
        for path, data in originals.items():
            path.write_bytes(data)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["users.json", "channels.json", "general/2021-01-07.json"]))
def test_fuzz_random_bytes(scratch: Path, data: bytes, name: str) -> None:
    _parse_mutated(scratch, lambda root: (root / name).write_bytes(data))


@FUZZ
@given(
    st.sampled_from(["users.json", "channels.json", "general/2021-01-07.json"]),
    st.randoms(use_true_random=False),
)
def test_fuzz_byte_mutations(scratch: Path, name: str, rnd: random.Random) -> None:
    def mutate(root: Path) -> None:
        data = bytearray((root / name).read_bytes())
        for _ in range(rnd.randint(1, 4)):
            position = rnd.randrange(len(data))
            if rnd.random() < 0.3:
                del data[position:]
                if not data:
                    break
            else:
                data[position] = rnd.randrange(256)
        (root / name).write_bytes(bytes(data))

    _parse_mutated(scratch, mutate)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10), MESSAGE_KEYS, JSON_VALUES | SLACK_TEXT), min_size=1, max_size=4),
    st.tuples(st.integers(0, 3), st.sampled_from(["id", "name", "profile", "is_bot"]), JSON_VALUES)
    | st.none(),
)
def test_fuzz_field_mutations(
    scratch: Path, edits: list[tuple[int, str, Any]], user_edit: tuple[int, str, Any] | None
) -> None:
    def mutate(root: Path) -> None:
        day = root / "general" / "2021-01-07.json"
        messages = json.loads(day.read_text())
        for index, key, value in edits:
            messages[index % len(messages)][key] = value
        day.write_text(json.dumps(messages))
        if user_edit is not None:
            users = json.loads((root / "users.json").read_text())
            users[user_edit[0]][user_edit[1]] = user_edit[2]
            (root / "users.json").write_text(json.dumps(users))

    _parse_mutated(scratch, mutate)


@FUZZ
@given(SLACK_TEXT)
def test_fuzz_render_never_fails(text: str) -> None:
    directory = slack.SlackDirectory({"U1": slack.SlackUser("Ann", False)}, {"C1": "general"})
    assert isinstance(slack.render(text, directory), str)
