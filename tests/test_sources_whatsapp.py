"""WhatsApp "Export chat" parser: layouts, locales, date order, message kinds, ordering, bad input."""

from __future__ import annotations

import random
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinbot.data.records import MESSAGE_KINDS, Message
from twinbot.data.sources import ParseOptions, format_module, whatsapp
from twinbot.errors import TwinbotError

FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"
ALEX = FIXTURES / "WhatsApp Chat with Alex.txt"
TRIP = FIXTURES / "WhatsApp Chat with Trip Crew.txt"
ANA = FIXTURES / "Chat de WhatsApp con Ana.txt"
IOS_GROUP = FIXTURES / "ios_group_chat.txt"
NNBSP = "\u202f"


def parse(path: Path, dayfirst: bool | None = None) -> list[Message]:
    return list(whatsapp.parse(path, ParseOptions(dayfirst=dayfirst)))


def rows(messages: list[Message]) -> list[tuple[str, str, str, str]]:
    return [(m.id, m.kind, m.author, m.text) for m in messages]


def write(tmp_path: Path, lines: list[str], name: str = "WhatsApp Chat with Test.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_registered_under_its_name() -> None:
    assert whatsapp.NAME == "whatsapp"
    assert format_module("whatsapp") is whatsapp


# --- Android --------------------------------------------------------------------------------------


def test_android_day_first_fixture_with_bom_and_crlf() -> None:
    raw = ALEX.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the fixture really has both quirks
    messages = parse(ALEX)
    assert {(m.platform, m.chat_id) for m in messages} == {("whatsapp", "Alex")}
    assert rows(messages) == [
        ("1", "system", "", messages[0].text),
        ("2", "text", "Alex", "Hi there: how are you?"),
        ("3", "text", "Sam", "Fine, thanks\nand you?\n\nstill there?"),
        ("7", "media", "Alex", ""),
        ("8", "system", "Sam", "This message was deleted"),
        ("9", "system", "Alex", "You deleted this message"),
        ("10", "text", "Sam", "I meant tomorrow"),
        ("17", "text", "Sam", "sent late"),  # out of file order; stable after the line with the same time
        ("11", "call", "Alex", ""),
        ("12", "media", "Sam", ""),  # POLL: block
        ("16", "media", "Alex", ""),  # location
        ("18", "text", "Dr:Who - The 🦄 One", "names can hold colons"),
        ("19", "text", "+44 7700 900123", "wrapped phone number"),
        ("20", "call", "Alex", ""),
        ("21", "media", "Sam", ""),  # "(file attached)"
        ("22", "media", "Alex", ""),
        ("23", "text", "Sam", "bye"),
    ]
    assert messages[0].text.startswith("Messages and calls are end-to-end encrypted")
    assert messages[1].timestamp == datetime(2020, 2, 1, 9, 1)  # 13/02/20 elsewhere: day-first
    assert messages[3].timestamp == datetime(2020, 2, 13, 10, 0)
    assert all(m.author_id == m.author for m in messages)
    assert [m.attachments for m in messages if m.kind == "media"] == [1, 1, 1, 1, 1]
    assert all(m.attachments == 0 for m in messages if m.kind != "media")
    assert all(m.timestamp.tzinfo is None for m in messages)
    times = [m.timestamp for m in messages]
    assert times == sorted(times)


def test_month_first_12h_clock_and_group_notices() -> None:
    messages = parse(TRIP)
    assert {m.chat_id for m in messages} == {"Trip Crew"}
    assert [(m.kind, m.author, m.timestamp) for m in messages] == [
        ("system", "", datetime(2021, 1, 15, 9, 5)),
        ("system", "", datetime(2021, 1, 15, 9, 5)),
        ("system", "", datetime(2021, 1, 15, 9, 6)),
        ("system", "", datetime(2021, 1, 15, 9, 6)),
        ("text", "Jo", datetime(2021, 1, 15, 12, 0)),  # 12 PM is noon
        ("text", "Kim-Lee", datetime(2021, 1, 16, 0, 30)),  # 12 AM is midnight
        ("text", "Kim-Lee", datetime(2021, 1, 16, 23, 59)),
        ("text", "Jo", datetime(2021, 1, 17, 1, 2)),
        ("system", "", datetime(2021, 1, 17, 1, 3)),
    ]
    # a subject with ": " in it does not turn the notice into a message from 'Jo created group "Trip'
    assert messages[1].text == 'Jo created group "Trip: Lisbon"'
    assert messages[2].text == 'Jo changed the subject from "Trip: Lisbon" to "Trip"'
    assert messages[3].text == "You were added"


def test_spanish_a_m_p_m_with_narrow_spaces() -> None:
    assert f"{NNBSP}p.{NNBSP}m." in ANA.read_text(encoding="utf-8")
    messages = parse(ANA)
    assert {m.chat_id for m in messages} == {"Ana"}
    assert [(m.timestamp, m.kind, m.author, m.text) for m in messages] == [
        (datetime(2021, 3, 5, 9, 15), "text", "Ana", "buenos días"),
        (datetime(2021, 3, 5, 14, 5), "text", "Luis", "hola: ¿qué tal?"),
        (datetime(2021, 3, 25, 22, 0), "media", "Ana", ""),
        (datetime(2021, 3, 25, 22, 1), "system", "Luis", "Se eliminó este mensaje."),
        (datetime(2021, 3, 25, 22, 2), "text", "Ana", "mañana"),  # <Se editó este mensaje.> removed
        (datetime(2021, 3, 25, 22, 3), "call", "Luis", ""),
        (datetime(2021, 3, 25, 22, 4), "system", "Ana", "Eliminaste este mensaje"),
    ]


@pytest.mark.parametrize(
    ("file_name", "chat_id", "author"),
    [
        ("WhatsApp Chat mit Joerg.txt", "Joerg", "Jörg"),
        ("Discussion WhatsApp avec Lea.txt", "Lea", "Léa"),
        ("Conversa do WhatsApp com Joao.txt", "Joao", "João"),
        ("Chat WhatsApp con Giulia.txt", "Giulia", "Giulia"),
        ("WhatsApp-chat met Daan.txt", "Daan", "Daan"),
    ],
)
def test_localised_exports(file_name: str, chat_id: str, author: str) -> None:
    messages = parse(FIXTURES / file_name)
    assert {m.chat_id for m in messages} == {chat_id}
    # each file: a greeting at 23:59 on 31 Dec 2019, a media placeholder, a deleted message after midnight
    assert [m.kind for m in messages[:3]] == ["text", "media", "system"]
    assert messages[0].author == author and messages[0].text
    assert messages[1].text == "" and messages[1].attachments == 1
    assert messages[0].timestamp == datetime(2019, 12, 31, 23, 59)
    assert messages[2].timestamp == datetime(2020, 1, 1, 0, 1)
    assert messages[2].author == author


def test_year_first_dates_with_dashes_slashes_and_trailing_dot() -> None:
    messages = parse(FIXTURES / "year_first.txt")
    assert [m.timestamp for m in messages] == [
        datetime(2020, 3, 12, 14, 5),
        datetime(2020, 3, 13, 8, 0),
        datetime(2020, 3, 14, 9, 30),
    ]
    assert [m.author for m in messages] == ["Alex", "Sam", "Alex"]


# --- iOS ------------------------------------------------------------------------------------------


def test_ios_zip_with_group_name_as_notice_sender(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "WhatsApp Chat - Trip Group.zip",
        {"_chat.txt": IOS_GROUP.read_bytes(), "00000012-PHOTO-2020-03-12-14-06-10.jpg": b"\xff\xd8\xff"},
    )
    assert whatsapp.sniff(archive)
    messages = parse(archive)
    assert {m.chat_id for m in messages} == {"Trip Group"}
    assert rows(messages) == [
        ("1", "system", "", messages[0].text),  # encryption notice "sent" by the group
        ("2", "system", "", "Alex created group “Trip Group”"),
        ("3", "media", "Alex", ""),  # image omitted
        ("4", "media", "Alex", ""),  # <attached: …>
        ("5", "text", "Bea", "Look at this: a colon"),
        ("6", "text", "Bea", "no comma here"),
        ("7", "system", "Alex", "This message was deleted."),
        ("8", "text", "Bea", "Fixed the typo"),
        ("9", "call", "Alex", ""),
        ("10", "media", "Bea", ""),  # Location: https://maps…
        ("11", "media", "Alex", ""),  # document omitted
        ("12", "media", "Bea", ""),
        ("13", "media", "Bea", ""),
        ("14", "media", "Bea", ""),
        ("15", "media", "Bea", ""),
        ("16", "text", "~ Carl", "multi\nline iOS"),
        ("18", "system", "", "Bea added Carl"),
    ]
    assert messages[0].text.startswith("Messages and calls are end-to-end encrypted")
    assert messages[0].timestamp == datetime(2020, 3, 12, 14, 5, 23)
    assert not any("\u200e" in m.text or "\u200e" in m.author for m in messages)


def test_ios_12h_month_first() -> None:
    messages = parse(FIXTURES / "ios_12h_monthfirst.txt")
    assert [(m.id, m.timestamp) for m in messages] == [
        ("1", datetime(2020, 3, 12, 14, 5, 23)),
        ("3", datetime(2020, 3, 13, 0, 0, 1)),  # 12:00:01 AM sorts before 9 AM of the same day
        ("2", datetime(2020, 3, 13, 9, 0, 0)),
    ]


def test_zip_member_named_after_the_chat(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "export.zip", {"WhatsApp Chat with Alex.txt": ALEX.read_bytes()})
    messages = parse(archive)
    assert {m.chat_id for m in messages} == {"Alex"}
    assert len(messages) == len(parse(ALEX))


def test_unzipped_ios_chat_takes_its_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "WhatsApp Chat - Book Club"
    folder.mkdir()
    chat = folder / "_chat.txt"
    chat.write_bytes(IOS_GROUP.read_bytes())
    assert {m.chat_id for m in parse(chat)} == {"Book Club"}
    duplicate = write(tmp_path, ["01/02/20, 09:00 - A: x"], "WhatsApp Chat with Zoë (2).txt")
    assert {m.chat_id for m in parse(duplicate)} == {"Zoë"}


# --- date order -----------------------------------------------------------------------------------


def test_ambiguous_dates_default_to_day_first_and_follow_the_override() -> None:
    path = FIXTURES / "ambiguous.txt"
    assert [m.timestamp.date() for m in parse(path)] == [
        datetime(2020, 4, 3).date(),
        datetime(2020, 5, 4).date(),
    ]
    assert [m.timestamp.date() for m in parse(path, dayfirst=False)] == [
        datetime(2020, 3, 4).date(),
        datetime(2020, 4, 5).date(),
    ]
    assert [m.timestamp.month for m in parse(path, dayfirst=True)] == [4, 5]


def test_inference_uses_the_whole_file(tmp_path: Path) -> None:
    lines = [f"0{1 + i % 9}/0{1 + i % 9}/21, 10:{i:02d} - A: msg {i}" for i in range(50)]
    lines.append("01/28/21, 11:00 - B: only the last line says month-first")
    by_id = {m.id: m for m in parse(write(tmp_path, lines))}
    assert by_id["51"].timestamp == datetime(2021, 1, 28, 11, 0)
    assert by_id["2"].timestamp == datetime(2021, 2, 2, 10, 1)


def test_override_contradicting_the_dates_is_an_error_with_the_line() -> None:
    with pytest.raises(TwinbotError, match="--monthfirst") as error:
        parse(TRIP, dayfirst=True)  # 1/15/21 cannot be day-first
    assert error.value.line == 1


def test_mixed_day_and_month_first_dates_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, ["13/01/21, 10:00 - A: day-first", "01/14/21, 10:00 - B: month-first"])
    with pytest.raises(TwinbotError, match="--dayfirst or --monthfirst") as error:
        parse(path)
    assert error.value.line == 2
    assert [m.timestamp.day for m in parse(write(tmp_path, ["13/01/21, 10:00 - A: x"]), dayfirst=True)] == [
        13
    ]


# --- ordering, ids, text --------------------------------------------------------------------------


def test_out_of_order_lines_are_sorted_stably(tmp_path: Path) -> None:
    rng = random.Random(7)
    minutes = [rng.randrange(0, 30) for _ in range(300)]
    lines = [f"05/06/22, 10:{minute:02d} - P{i % 3}: m{i}" for i, minute in enumerate(minutes)]
    messages = parse(write(tmp_path, lines))
    expected = sorted(range(300), key=lambda i: minutes[i])  # sorted() is stable
    assert [m.text for m in messages] == [f"m{i}" for i in expected]
    assert [m.id for m in messages] == [str(i + 1) for i in expected]


def test_reversed_file_and_multi_line_messages(tmp_path: Path) -> None:
    lines: list[str] = []
    for i in reversed(range(20)):
        lines += [f"[07/08/2022, 09:{i:02d}:00] Kim: first {i}", f"second {i}", ""]
    messages = parse(write(tmp_path, lines))
    assert [m.text for m in messages] == [f"first {i}\nsecond {i}" for i in range(20)]
    assert [m.id for m in messages] == [str(3 * (19 - i) + 1) for i in range(20)]


def test_name_then_text_on_the_next_line_and_edited_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            "01/02/20, 09:00 - Alex:",
            "text on the next line",
            "01/02/20, 09:01 - Sam: <This message was edited>",
            "01/02/20, 09:02 - Sam: a reply that mentions <Media omitted> is text",
            "01/02/20, 09:03 - Sam: I missed voice call practice (sorry)",
        ],
    )
    messages = parse(path)
    assert rows(messages) == [
        ("1", "text", "Alex", "text on the next line"),
        ("3", "system", "Sam", ""),  # only the edit marker: a placeholder, not text
        ("4", "text", "Sam", "a reply that mentions <Media omitted> is text"),
        ("5", "text", "Sam", "I missed voice call practice (sorry)"),
    ]


def test_placeholders_in_more_languages(tmp_path: Path) -> None:
    texts = {
        "<Multimedia omitido>": "media",
        "<Medien ausgeschlossen>": "media",
        "<Médias omis>": "media",
        "<Media weggelaten>": "media",
        "<Mídia oculta>": "media",
        "<Media omessi>": "media",
        "\u200eimagen omitida": "media",
        "\u200e<adjunto: 00000031-PHOTO.jpg>": "media",
        "\u200e<Anhang: 00000031-PHOTO.jpg>": "media",
        "Standort: https://maps.google.com/?q=1,2": "media",
        "Verpasster Sprachanruf": "call",
        "Appel vidéo manqué": "call",
        "Du hast diese Nachricht gelöscht": "system",
        "Questo messaggio è stato eliminato": "system",
        "Dit bericht is verwijderd": "system",
        "Vous avez supprimé ce message": "system",
        "Você apagou esta mensagem": "system",
    }
    lines = [f"01/02/20, 09:{i:02d} - Pat: {text}" for i, text in enumerate(texts)]
    messages = parse(write(tmp_path, lines))
    assert [m.kind for m in messages] == list(texts.values())
    assert all(m.text == "" and m.attachments == 1 for m in messages if m.kind == "media")


def test_utf16_export(tmp_path: Path) -> None:
    path = tmp_path / "WhatsApp Chat with Utf.txt"
    path.write_bytes("01/02/20, 09:00 - Ana: olá\r\n01/02/20, 09:01 - Bo: hi\r\n".encode("utf-16"))
    assert whatsapp.sniff(path)
    assert rows(parse(path)) == [("1", "text", "Ana", "olá"), ("2", "text", "Bo", "hi")]


# --- sniff ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", sorted(FIXTURES.iterdir()), ids=lambda p: p.name)
def test_sniff_accepts_every_fixture(fixture: Path) -> None:
    assert whatsapp.sniff(fixture)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"messages": []}',
        b"AuthorID,Author,Date,Content,Attachments,Reactions\n",
        b"\x00\x01\x02\x03binary",
        b"hello\n01/02/20, 09:00 - A: header only on line 2\n",
        b"01/02/20, 09:00 - \n",
    ],
)
def test_sniff_rejects_other_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.txt"
    path.write_bytes(content)
    assert not whatsapp.sniff(path)


def test_sniff_rejects_folders_and_zips_without_a_chat(tmp_path: Path) -> None:
    assert not whatsapp.sniff(tmp_path)
    assert not whatsapp.sniff(make_zip(tmp_path / "a.zip", {"x.json": b"{}", "y.txt": b"a", "z.txt": b"b"}))
    assert not whatsapp.sniff(make_zip(tmp_path / "b.zip", {"WhatsApp Chat with X.txt": b"not a chat"}))
    broken = tmp_path / "c.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    assert not whatsapp.sniff(broken)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "match", "line"),
    [
        (b"", "empty file", None),
        (b"\n\n  \n", "no WhatsApp message header", None),
        (b"just some notes\nwithout any header\n", "text before the first", 1),
        (b"\n\nnote\n01/02/20, 09:00 - A: x\n", "text before the first", 3),
        (b"\x00\x00\x00\x00", "binary", None),
        (b"01/02/20, 09:00 - A: ok\n01/02/20, 09:01 - B: \xff\xfe bad\n", "UTF-8", 2),
        (b"01/02/20, 09:00 - A: ok\n01/02/20, 25:01 - B: x\n", "impossible time", 2),
        (b"01/02/20, 09:00 - A: ok\n01/02/20, 13:01 PM - B: x\n", "12-hour", 2),
        (b"01/02/20, 09:00 - A: ok\n31/02/20, 10:01 - B: x\n", "impossible date", 2),
        (b"01/02/20, 09:00 - A: ok\n01/02/1812, 10:01 - B: x\n", "before 1970", 2),
        (b"01/02/20, 09:00 - A: truncated \xe2\x82", "UTF-8", 1),
    ],
)
def test_bad_files_raise_twinbot_error_with_the_line(
    tmp_path: Path, content: bytes, match: str, line: int | None
) -> None:
    path = tmp_path / "chat.txt"
    path.write_bytes(content)
    with pytest.raises(TwinbotError, match=match) as error:
        parse(path)
    assert error.value.line == line
    assert error.value.path == path


def test_error_messages_never_quote_message_text(tmp_path: Path) -> None:
    path = write(tmp_path, ["01/02/20, 09:00 - A: secret-words-here", "01/02/20, 25:00 - B: more-secret"])
    with pytest.raises(TwinbotError) as error:
        parse(path)
    assert "secret" not in str(error.value)


def test_bad_zips(tmp_path: Path) -> None:
    no_chat = make_zip(tmp_path / "photos.zip", {"IMG-1.jpg": b"\xff\xd8", "a.txt": b"x", "b.txt": b"y"})
    with pytest.raises(TwinbotError, match="no WhatsApp chat"):
        parse(no_chat)
    good = make_zip(tmp_path / "good.zip", {"_chat.txt": IOS_GROUP.read_bytes() * 20})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TwinbotError, match="zip"):
        parse(truncated)
    corrupt = bytearray(good.read_bytes())
    corrupt[60:90] = b"\x00" * 30  # inside the compressed chat
    (tmp_path / "corrupt.zip").write_bytes(bytes(corrupt))
    with pytest.raises(TwinbotError):
        parse(tmp_path / "corrupt.zip")
    with pytest.raises(TwinbotError, match="folder"):
        parse(tmp_path)


# --- fuzzing: nothing but TwinbotError escapes ----------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER_BITS = st.sampled_from(
    [
        "01/02/20, 09:00 - ", "[13/03/2020, 09:00:00] ", "1/15/21, 9:05\u202fAM - ", "2020-03-12 14:05 - ",
        "31.12.19, 23:59 - ", "5/3/21, 2:05\u202fp.\u202fm. - ", "12/13/20, 10:00 - ", "99/99/99, 99:99 - ",
        "Alex: ", "\u200e", "\u202a+1 555\u202c: ", "<Media omitted>", "POLL:", "location: https://maps.x",
        "<This message was edited>", "This message was deleted", ": ", "\n", "\r\n", "text", "🦄", "\x00",
        "\ufeff", '"', "created group \"a: b\"", "\r",
    ]
)  # fmt: skip


def check_parse_of(data: bytes, name: str = "WhatsApp Chat with Fuzz.txt") -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            whatsapp.sniff(path)
            messages = parse(path)
        except TwinbotError:
            return
        times = [m.timestamp for m in messages]
        assert times == sorted(times)
        assert all(m.kind in MESSAGE_KINDS for m in messages)
        assert len({m.id for m in messages}) == len(messages)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    check_parse_of(data)


@FUZZ
@given(st.lists(st.lists(HEADER_BITS, max_size=6).map("".join), max_size=12))
def test_fuzz_header_like_lines(lines: list[str]) -> None:
    check_parse_of("\n".join(lines).encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(
    st.sampled_from(sorted(FIXTURES.iterdir())),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.binary(max_size=3)), max_size=4),
    st.booleans(),
)
def test_fuzz_mutated_fixtures(fixture: Path, edits: list[tuple[int, int, bytes]], as_zip: bool) -> None:
    data = bytearray(fixture.read_bytes())
    for operation, position, chunk in edits:
        at = position % (len(data) + 1)
        if operation == 0:
            data[at:at] = chunk  # insert
        elif operation == 1:
            del data[at : at + len(chunk) + 1]  # delete
        else:
            data = data[:at]  # truncate
    if as_zip:
        with tempfile.TemporaryDirectory() as folder:
            archive = make_zip(Path(folder) / "a.zip", {"_chat.txt": bytes(data)})
            check_parse_of(archive.read_bytes()[: len(archive.read_bytes()) - (len(edits) * 7)], "x.zip")
    else:
        check_parse_of(bytes(data))


def test_polls_in_an_unlisted_language_are_told_by_their_shape(tmp_path: Path) -> None:
    """Labels the phrase table has no row for (written here for the test, not a real export's): a capital
    label alone, the question, and options under one capital label with vote counts are a poll, iOS's U+200E
    marks or not; texts that are only partly shaped so stay text."""
    lines = [
        "12.03.2024, 10:00 - Anna: ОПРОС:",
        "Где встретимся?",
        "ВАРИАНТ: кафе (2 голоса)",
        "ВАРИАНТ: парк (0 голосов)",
        "12.03.2024, 10:01 - Bartek: \u200eJAJAK PENDAPAT:",
        "Makan di mana?",
        "\u200eOPSI: bakso (3 suara)",
        "\u200eOPSI: sate (0 suara)",
        "12.03.2024, 10:02 - Anna: TODO:",
        "zakupy",
        "A: jajka (2 szt)",
        "B: chleb (1 szt)",
        "12.03.2024, 10:03 - Bartek: NOTE:",
        "only one option",
        "OPTION: x (2 votes)",
        "12.03.2024, 10:04 - Anna: so where:",
        "tonight?",
        "OPTION: a (1 vote)",
        "OPTION: b (2 votes)",
        "12.03.2024, 10:05 - Bartek: LISTA:",
        "plan",
        "PUNKT: kino (wieczorem)",
        "PUNKT: pizza (potem)",
    ]
    messages = parse(write(tmp_path, lines))
    assert [(m.author, m.kind, m.subkind, m.text) for m in messages[:2]] == [
        ("Anna", "media", "poll", ""),
        ("Bartek", "media", "poll", ""),
    ]
    # two option labels; one option; a label not in capitals; options without vote counts
    assert [(m.kind, m.subkind) for m in messages[2:]] == [("text", None)] * 4
