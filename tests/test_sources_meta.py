"""Messenger / Instagram ("Download your information" JSON) parsers: fixtures in tests/fixtures/meta/."""

from __future__ import annotations

import itertools
import json
import random
import tempfile
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions, instagram, messenger
from twinbot.data.sources.messenger import detect_platform, fix_mojibake, generated_kind
from twinbot.errors import TwinbotError

FIXTURES = Path(__file__).parent / "fixtures" / "meta"
FB_EXPORT = FIXTURES / "messenger_export"
FB_MESSAGES = FB_EXPORT / "your_facebook_activity" / "messages"
ALICE = FB_MESSAGES / "inbox" / "alicesmith_abc123"
GROUP = FB_MESSAGES / "inbox" / "groupchat_xyz9"
E2EE = FB_MESSAGES / "e2ee_cutover" / "alicesmith_9.json"
IG_EXPORT = FIXTURES / "instagram_export"
IG_LEGACY = FIXTURES / "instagram_legacy"
FB_LEGACY = FIXTURES / "messenger_legacy"
T0 = datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)


def mojibake(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def parse(path: Path) -> list[Message]:
    return list(messenger.parse(path, ParseOptions()))


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def thread_file(folder: Path, data: Any, name: str = "message_1.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------- mojibake


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("cafÃ©", "café"),  # broken: repaired
        ("café", "café"),  # already correct accented text: its Latin-1 bytes are not UTF-8
        ("\u00f0\u009f\u0098\u00a0", "😠"),  # FORMATS.md's example: one emoji
        ("😀 cafÃ©", "😀 cafÃ©"),  # a char above U+00FF: already correct, left alone
        ("plain ascii", "plain ascii"),
        ("", ""),
        ("Ã", "Ã"),  # a lone lead byte is not UTF-8
    ],
)
def test_fix_mojibake(stored: str, expected: str) -> None:
    assert fix_mojibake(stored) == expected


@given(st.text(max_size=40))
def test_fix_mojibake_undoes_meta_encoding_for_any_text(text: str) -> None:
    assert fix_mojibake(mojibake(text)) == text


@given(st.text(max_size=40).filter(lambda t: any(ord(c) > 0xFF for c in t)))
def test_fix_mojibake_leaves_text_with_wide_characters_alone(text: str) -> None:
    assert fix_mojibake(text) == text


# --------------------------------------------------------------------------------------- threads


def test_thread_parts_are_merged_oldest_first() -> None:
    messages = parse(ALICE)
    assert len(messages) == 17
    assert [m.id for m in messages] == [str(i) for i in range(17)]
    assert {m.chat_id for m in messages} == {"inbox/alicesmith_abc123"}
    assert {m.platform for m in messages} == {"messenger"}
    assert messages[0].text == "hello there"  # the oldest message is in message_2.json, listed last
    assert messages[0].timestamp == T0
    assert messages[-1].timestamp == T0 + timedelta(seconds=15)
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(messages))


def test_equal_times_keep_their_true_order() -> None:
    got = [t for t in texts(parse(ALICE)) if t.startswith("same ms")]
    assert got == ["same ms, first", "same ms, second"]


def test_strings_are_repaired_per_string() -> None:
    by_text = {m.text: m for m in parse(GROUP)}
    assert "Schöne Grüße 👋🏽" in by_text
    assert by_text["Schöne Grüße 👋🏽"].author == "Zoë Ünal"
    assert "already repaired: café, naïve, 😀" in by_text  # correct text in a Meta file stays as is
    assert "Déjà vu 😠 at the café" in texts(parse(ALICE))


def test_timestamps_are_utc_aware_from_milliseconds() -> None:
    first = parse(ALICE)[0]
    assert first.timestamp.tzinfo is not None and first.timestamp.utcoffset() == timedelta(0)


def test_message_without_timestamp_borrows_the_previous_time() -> None:
    messages = parse(ALICE)
    index = texts(messages).index("no timestamp here")
    assert messages[index].timestamp == messages[index - 1].timestamp == T0 + timedelta(seconds=5)


def test_one_part_file_pulls_in_its_sibling_parts() -> None:
    from_part = parse(ALICE / "message_2.json")
    assert [m.to_json() for m in from_part] == [m.to_json() for m in parse(ALICE)]


def test_author_id_is_the_sender_name() -> None:
    message = parse(ALICE)[0]
    assert (message.author_id, message.author) == ("Bob Owner", "Bob Owner")


# --------------------------------------------------------------------------------------- kinds


def by_text(messages: list[Message]) -> dict[str, Message]:
    return {m.text: m for m in messages}


@pytest.mark.parametrize(
    ("text", "kind", "attachments"),
    [
        ("hello there", "text", 0),
        ("Alice Smith named the group Trip.", "system", 0),
        ("You sent an attachment.", "media", 1),
        ("Alice Smith sent a photo.", "media", 1),
        ("Alice reacted ❤ to your message ", "system", 0),
        ("Alice Smith called you.", "call", 0),
        ("https://example.org/article", "text", 0),  # a Share without content: its link
        ("look: https://example.org/a", "text", 0),
        ("I sent a photo. yesterday, did you see it?", "text", 0),  # a person's text, not Meta's
    ],
)
def test_kinds_of_classic_messages(text: str, kind: str, attachments: int) -> None:
    message = by_text(parse(ALICE))[text]
    assert (message.kind, message.attachments) == (kind, attachments)


def test_media_without_content_counts_every_attachment() -> None:
    media = [m for m in parse(ALICE) if m.kind == "media" and not m.text]
    assert sorted(m.attachments for m in media) == [1, 2, 4]  # sticker; 2 photos; audio+video+file+gif


def test_unsent_message_is_system() -> None:
    unsent = [m for m in parse(ALICE) if m.timestamp == T0 + timedelta(seconds=12)]
    assert [(m.kind, m.author) for m in unsent] == [("system", "Bob Owner")]


def test_unsubscribe_is_system() -> None:
    assert by_text(parse(GROUP))["Zoë Ünal left the group."].kind == "system"


@pytest.mark.parametrize(
    ("text", "sender", "kind"),
    [
        ("You sent an attachment.", "Bob", "media"),
        ("Ann sent 3 photos.", "Ann Lee", "media"),
        ("Ann Lee sent a GIF.", "Ann Lee", "media"),
        ("Ann reacted 😂 to your message", "Ann", "system"),
        ("Reacted ❤️ to your message", "ann.gram", "system"),
        ("Liked a message", "ann.gram", "system"),
        ("You unsent a message", "Bob", "system"),
        ("The video chat ended.", "Bob", "call"),
        ("Bob sent a photo.", "Ann", None),  # the subject is not the sender: a person wrote it
        ("sent a photo.", "Ann", None),
        ("You sent an attachment. Did you get it?", "Bob", None),
        ("", "Bob", None),
    ],
)
def test_generated_kind(text: str, sender: str, kind: str | None) -> None:
    assert generated_kind(text, sender) == kind


# --------------------------------------------------------------------------------------- E2EE shape


def test_e2ee_file_is_oldest_first_and_not_repaired() -> None:
    messages = parse(E2EE)
    assert texts(messages) == ["e2ee first, café", "", "", "Ça va? 😀 cafÃ© stays"]
    assert [m.kind for m in messages] == ["text", "media", "system", "text"]
    assert messages[1].attachments == 1
    assert messages[0].timestamp == T0 + timedelta(seconds=100)
    assert {m.chat_id for m in messages} == {"alicesmith_9"}


def test_e2ee_timestamps_in_seconds_are_accepted(tmp_path: Path) -> None:
    data = {
        "participants": ["A", "B"],
        "threadName": "A",
        "messages": [{"senderName": "A", "text": "hi", "timestamp": 1_600_000_000, "type": "text"}],
    }
    path = thread_file(tmp_path, data, "a_1.json")
    assert parse(path)[0].timestamp == T0


# --------------------------------------------------------------------------------------- folders and zips


def test_export_folder_yields_every_thread() -> None:
    messages = parse(FB_EXPORT)
    assert list(dict.fromkeys(m.chat_id for m in messages)) == [
        "alicesmith_9",
        "inbox/alicesmith_abc123",
        "inbox/groupchat_xyz9",
    ]
    assert len(messages) == 4 + 17 + 3


def test_inbox_folder_yields_its_threads() -> None:
    assert {m.chat_id for m in parse(FB_MESSAGES / "inbox")} == {
        "inbox/alicesmith_abc123",
        "inbox/groupchat_xyz9",
    }


@pytest.mark.parametrize("prefix", ["", "facebook-bob-2024/"])
def test_zip_gives_the_same_messages_as_the_folder(tmp_path: Path, prefix: str) -> None:
    archive = zip_folder(FB_EXPORT, tmp_path / "export.zip", prefix)
    assert messenger.sniff(archive)
    assert [m.to_json() for m in parse(archive)] == [m.to_json() for m in parse(FB_EXPORT)]


def test_thread_without_thread_path_is_named_by_its_folder(tmp_path: Path) -> None:
    thread_file(
        tmp_path / "inbox" / "zed_1", {"messages": [{"sender_name": "Z", "timestamp_ms": 1, "content": "x"}]}
    )
    assert [m.chat_id for m in parse(tmp_path)] == ["inbox/zed_1"]


# --------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("path", "platform"),
    [
        (FB_EXPORT, "messenger"),
        (ALICE, "messenger"),
        (ALICE / "message_1.json", "messenger"),
        (E2EE, "messenger"),
        (IG_EXPORT, "instagram"),
        # no path hint and no platform-only field: both download types write these files -> meta
        (IG_LEGACY, "meta"),
        (FB_LEGACY, "meta"),
    ],
)
def test_detect_platform(path: Path, platform: str) -> None:
    assert detect_platform(path) == platform
    assert messenger.sniff(path) == (platform in ("messenger", "meta"))
    assert instagram.sniff(path) == (platform == "instagram")


def test_instagram_zip_is_recognised_by_its_name_or_its_folders(tmp_path: Path) -> None:
    assert detect_platform(zip_folder(FB_LEGACY, tmp_path / "instagram-dana-2024-01-01.zip")) == "instagram"
    assert detect_platform(zip_folder(FB_LEGACY, tmp_path / "download.zip")) == "meta"
    assert detect_platform(zip_folder(FB_LEGACY, tmp_path / "facebook-erin-2024.zip")) == "messenger"
    assert detect_platform(zip_folder(IG_EXPORT, tmp_path / "download2.zip")) == "instagram"


def test_instagram_share_owner_marks_instagram(tmp_path: Path) -> None:
    data = {
        "participants": [{"name": "a"}],
        "messages": [
            {
                "sender_name": "a",
                "timestamp_ms": 1,
                "type": "Share",
                "share": {"link": "x", "original_content_owner": "o"},
            }
        ],
    }
    assert detect_platform(thread_file(tmp_path / "t", data)) == "instagram"


def test_instagram_parse_names_the_platform() -> None:
    messages = list(instagram.parse(IG_EXPORT, ParseOptions()))
    assert {m.platform for m in messages} == {"instagram"}
    assert texts(messages) == [
        "ça marche 🙂",
        "https://www.instagram.com/p/abc/",
        "Reacted 😂 to your message",
    ]
    assert [m.kind for m in messages] == ["text", "text", "system"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"name": "N", "type": "personal_chat", "id": 1, "messages": []}',
        b'{"guild": {"id": "0"}, "channel": {}, "messages": [{"content": "x"}]}',
        b"\x00\x01binary",
        b"",
    ],
)
def test_non_meta_files_are_not_sniffed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "message_1.json"
    path.write_bytes(content)
    assert detect_platform(path) is None
    assert detect_platform(tmp_path) is None


def test_folders_without_threads_are_not_sniffed(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "notes.txt").write_text("hi")
    assert detect_platform(tmp_path) is None
    assert detect_platform(tmp_path / "missing") is None


# --------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"", 1),
        (b'{"participants": [],\n "messages": [\n {"sender_name": "A", "content": "secret', 3),
        (b"[]", None),
        (b'{"participants": []}', None),
        (b'{"messages": [42]}', None),
        (b'{"messages": [{"sender_name": "A", "content": "\xe9t\xe9"}]}', 1),  # Latin-1 bytes: not UTF-8
        (b"\x89PNG\r\n\x1a\n\x00\x00", None),
    ],
)
def test_bad_files_raise_twinbot_error(tmp_path: Path, content: bytes, line: int | None) -> None:
    path = tmp_path / "message_1.json"
    path.write_bytes(content)
    with pytest.raises(TwinbotError) as info:
        parse(path)
    assert info.value.path == path
    if line is not None:
        assert info.value.line == line
    assert "secret" not in str(info.value)


def test_zip_without_a_chat_is_a_twinbot_error(tmp_path: Path) -> None:
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(TwinbotError, match="no Messenger/Instagram messages"):
        parse(archive)


def test_html_download_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "inbox" / "a_1").mkdir(parents=True)
    (tmp_path / "inbox" / "a_1" / "message_1.html").write_text("<html></html>")
    with pytest.raises(TwinbotError, match="JSON format"):
        parse(tmp_path)


def test_damaged_zip_and_missing_paths_are_twinbot_errors(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    assert detect_platform(damaged) is None
    with pytest.raises(TwinbotError):
        parse(damaged)
    with pytest.raises(TwinbotError):
        parse(tmp_path / "missing")


# --------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
CLASSIC_KEYS = st.sampled_from(
    [
        "sender_name",
        "timestamp_ms",
        "content",
        "type",
        "is_unsent",
        "photos",
        "videos",
        "audio_files",
        "files",
        "gifs",
        "sticker",
        "share",
        "call_duration",
        "reactions",
    ]
)
E2EE_KEYS = st.sampled_from(["senderName", "timestamp", "text", "type", "isUnsent", "media", "reactions"])
FUZZ_FILES = [ALICE / "message_1.json", ALICE / "message_2.json", GROUP / "message_1.json", E2EE]


def _parse_in_tmp(name: str, data: bytes, platform_module: Any = messenger) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            detect_platform(path)
            detect_platform(Path(folder))
            for message in platform_module.parse(path, ParseOptions()):
                assert isinstance(message.text, str)
        except TwinbotError:
            pass


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["message_1.json", "thread.json", "export.zip"]))
def test_fuzz_random_bytes(data: bytes, name: str) -> None:
    _parse_in_tmp(name, data)


@FUZZ
@given(st.sampled_from(FUZZ_FILES), st.randoms(use_true_random=False))
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
    _parse_in_tmp(path.name, bytes(data), rnd.choice([messenger, instagram]))


@FUZZ
@given(
    st.sampled_from(FUZZ_FILES),
    st.lists(st.tuples(st.integers(0, 20), CLASSIC_KEYS, E2EE_KEYS, JSON_VALUES), min_size=1, max_size=4),
    st.tuples(st.sampled_from(["participants", "thread_path", "threadName", "title"]), JSON_VALUES)
    | st.none(),
)
def test_fuzz_field_mutations(
    path: Path, edits: list[tuple[int, str, str, Any]], top: tuple[str, Any] | None
) -> None:
    data = json.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    e2ee = path == E2EE
    for index, classic_key, e2ee_key, value in edits:
        data["messages"][index % len(data["messages"])][e2ee_key if e2ee else classic_key] = value
    if top is not None:
        data[top[0]] = top[1]
    _parse_in_tmp(path.name, json.dumps(data).encode())


@FUZZ
@given(st.randoms(use_true_random=False))
def test_fuzz_damaged_zip(rnd: random.Random) -> None:
    with tempfile.TemporaryDirectory() as folder:
        archive = zip_folder(ALICE, Path(folder) / "a.zip")
        data = bytearray(archive.read_bytes())
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        archive.write_bytes(bytes(data))
        try:
            detect_platform(archive)
            list(messenger.parse(archive, ParseOptions()))
        except TwinbotError:
            pass


# --------------------------------------------------------------------------------------- subkinds, reactions, label


def _thread(tmp_path: Path, messages: list[dict[str, Any]], folder: str = "t", **thread: Any) -> Path:
    data = {"participants": [{"name": "Ann Lee"}, {"name": "Bob"}], "messages": messages, **thread}
    return thread_file(tmp_path / folder, data)


@pytest.mark.parametrize(
    ("content", "sender", "kind", "subkind"),
    [
        ("Ann reacted ❤ to your message", "Ann Lee", "system", "reaction"),
        ("Ann Lee liked a message", "Ann Lee", "system", "reaction"),
        ("Ann reagiu 😂 à sua mensagem", "Ann Lee", "system", "reaction"),
        ("You sent an attachment.", "Bob", "media", "attachment"),
        ("You sent a location.", "Bob", "media", "location"),
        ("Ann unsent a message", "Ann Lee", "system", "deleted"),
        ("Ann added Carl to the group.", "Ann Lee", "system", "member_join"),
        ("Ann left the group.", "Ann Lee", "system", "member_leave"),
        ("Ann named the group Trip 2024.", "Ann Lee", "system", "rename"),
        ("Ann set the nickname for Bob to Bobby.", "Ann Lee", "system", "rename"),
        ("Ann created a poll: Where to?", "Ann Lee", "system", "poll"),
        ("Ann missed a video call with Bob.", "Ann Lee", "call", "call"),
        ("Bob reacted ❤ to your message", "Ann Lee", "text", None),  # not the sender: someone quoting it
        ("null", "Ann Lee", "system", "placeholder"),
        ("", "Ann Lee", "system", "placeholder"),
    ],
)
def test_meta_notices_get_their_subkind(
    tmp_path: Path, content: str, sender: str, kind: str, subkind: str | None
) -> None:
    [message] = parse(_thread(tmp_path, [{"sender_name": sender, "timestamp_ms": 1, "content": content}]))
    assert (message.kind, message.subkind) == (kind, subkind)


def test_meta_reactions_are_counted_and_system_types_have_subkinds(tmp_path: Path) -> None:
    messages = parse(
        _thread(
            tmp_path,
            [
                {"sender_name": "Ann Lee", "timestamp_ms": 4, "content": "hi", "reactions": [
                    {"reaction": "❤", "actor": "Bob"}, {"reaction": "😂", "actor": "Carl"}]},
                {"sender_name": "Bob", "timestamp_ms": 3, "type": "Subscribe", "content": "Bob added Carl"},
                {"sender_name": "Bob", "timestamp_ms": 2, "is_unsent": True},
                {"sender_name": "Bob", "timestamp_ms": 1, "photos": [{"uri": "a.jpg"}]},
            ],
        )
    )  # fmt: skip
    assert [(m.kind, m.subkind, m.reactions) for m in messages] == [
        ("media", "attachment", 0),
        ("system", "deleted", 0),
        ("system", "member_join", 0),
        ("text", None, 2),
    ]


def _reacted(actor: str, emoji: str, time: int) -> dict[str, Any]:
    """A message of Carl's that `actor` reacted to with `emoji`, as the export lists it."""
    return {"sender_name": "Carl", "timestamp_ms": time, "content": "ok", "reactions": [
        {"reaction": emoji, "actor": actor}]}  # fmt: skip


def test_reaction_notices_in_an_unlisted_wording_are_told_by_the_threads_reactions(tmp_path: Path) -> None:
    """A wording no phrase-table row has (written here for the test, not a real export's): two senders'
    notices of the reactions the export lists on Carl's messages are reactions; the same person's sentence
    with an emoji it has no words after, or a sentence only one (sender, emoji) pair writes, stays text."""
    messages = parse(
        _thread(
            tmp_path,
            [
                {"sender_name": "Ann Lee", "timestamp_ms": 9, "content": "Ann zareagował(a) ❤️ na wiadomość"},
                {"sender_name": "Bob", "timestamp_ms": 8, "content": "Bob zareagował(a) 😆 na wiadomość"},
                {"sender_name": "Bob", "timestamp_ms": 7, "content": "kocham was wszystkich 😆"},
                {"sender_name": "Ann Lee", "timestamp_ms": 6, "content": "dobranoc ❤ śpijcie dobrze"},
                {"sender_name": "Ann Lee", "timestamp_ms": 5, "content": "dobranoc ❤ śpijcie dobrze"},
                {"sender_name": "Bob", "timestamp_ms": 4, "content": "Bob zareagował(a) 👍 na wiadomość"},
                _reacted("Ann Lee", "❤", 3),
                _reacted("Bob", "😆", 2),
            ],
        )
    )
    kinds = [(m.text, m.kind, m.subkind) for m in messages if m.author != "Carl"]
    assert kinds == [
        ("Bob zareagował(a) 👍 na wiadomość", "text", None),  # Bob never reacted 👍 in this thread
        ("dobranoc ❤ śpijcie dobrze", "text", None),
        ("dobranoc ❤ śpijcie dobrze", "text", None),  # one (sender, emoji) pair: a person repeating it
        ("kocham was wszystkich 😆", "text", None),  # nothing after the emoji
        ("Bob zareagował(a) 😆 na wiadomość", "system", "reaction"),
        ("Ann zareagował(a) ❤️ na wiadomość", "system", "reaction"),
    ]


def test_notices_in_an_unlisted_wording_are_told_by_two_senders_writing_them(tmp_path: Path) -> None:
    """A wording no phrase-table row has (written here for the test, not a real export's): the same words
    after the sender's own name from two senders are a notice of an unknown kind; the same words from one
    sender only, a name followed by one word, another person's name, or a long message stay text."""
    messages = parse(
        _thread(
            tmp_path,
            [
                {"sender_name": "Ayşe Yılmaz", "timestamp_ms": 9, "content": "Ayşe Yılmaz bir ek gönderdi."},
                {"sender_name": "Bob", "timestamp_ms": 8, "content": "Bob  bir ek gönderdi."},
                {"sender_name": "Ayşe Yılmaz", "timestamp_ms": 7, "content": "Ayşe bir ek gönderdi."},
                {"sender_name": "Carl", "timestamp_ms": 6, "content": "Carl yarın geliyor musun?"},
                {"sender_name": "Carl", "timestamp_ms": 5, "content": "Bob bir ek gönderdi."},
                {"sender_name": "Bob", "timestamp_ms": 4, "content": "Bob burada"},
                {"sender_name": "Carl", "timestamp_ms": 3, "content": "Carl burada"},
                {"sender_name": "Bob", "timestamp_ms": 2, "content": "Bob " + "çok " * 12 + "güzel"},
                {"sender_name": "Carl", "timestamp_ms": 1, "content": "Carl " + "çok " * 12 + "güzel"},
            ],
        )
    )
    kinds = [(m.author, m.kind, m.subkind) for m in messages]
    assert kinds == [
        ("Carl", "text", None),  # more than ten words after the name
        ("Bob", "text", None),
        ("Carl", "text", None),  # a name and one word: a roll call, not a notice
        ("Bob", "text", None),
        ("Carl", "text", None),  # Bob's notice in Carl's message: not Carl's name
        ("Carl", "text", None),  # words no one else writes after their name
        ("Ayşe Yılmaz", "system", "other"),  # the first name, as Meta writes it too
        ("Bob", "system", "other"),
        ("Ayşe Yılmaz", "system", "other"),
    ]


def test_label_follows_the_evidence_not_the_format(tmp_path: Path) -> None:
    plain = [{"sender_name": "Ann Lee", "timestamp_ms": 1, "content": "hi"}]
    assert {m.platform for m in parse(_thread(tmp_path, plain, "a"))} == {"meta"}
    assert {m.platform for m in instagram.parse(_thread(tmp_path, plain, "b"), ParseOptions())} == {"meta"}
    kid_field = [{**plain[0], "is_unsent_image_by_messenger_kid_parent": False}]
    thread = _thread(tmp_path, kid_field, "c")
    assert detect_platform(thread) == "messenger"
    assert {m.platform for m in instagram.parse(thread, ParseOptions())} == {"messenger"}
    assert {m.platform for m in parse(_thread(tmp_path, plain, "d", joinable_mode={"mode": 1}))} == {
        "messenger"
    }
    # the same files under an Instagram download's folder are Instagram's, whatever --format said
    inside = _thread(tmp_path / "your_instagram_activity" / "messages" / "inbox", plain, "e")
    assert {m.platform for m in parse(inside)} == {"instagram"}
