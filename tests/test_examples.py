"""The bundled sample exports (examples/): reproducible, well-formed, and the persona's style as documented.

The style markers are measured here from the files themselves, independently of the generator's own
`--stats` code, and compared with the table in examples/README.md.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DISCORD = EXAMPLES / "sample-discord.json"
WHATSAPP = EXAMPLES / "sample-whatsapp.txt"
README = EXAMPLES / "README.md"

WHATSAPP_HEADER = re.compile(r"^(\d{2})/(\d{2})/(\d{4}), (\d{2}):(\d{2}) - (.*)$")
WHATSAPP_SENDER = re.compile(r"^([^:]+): (.*)$", re.S)
SIGNATURE_EMOJI = ("💀", "✨", "🫠")
SLANG = re.compile(r"\b(?:fr|ngl|lowkey|bestie|ok but|deadass)\b")
STRETCHED = re.compile(r"([a-z])\1\1")
URL = re.compile(r"https?://\S+")
PAUSE = timedelta(minutes=30)


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "twinbot_examples_generator", EXAMPLES / "generate_sample.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def discord() -> dict:
    return json.loads(DISCORD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def whatsapp_lines() -> list[str]:
    return WHATSAPP.read_text(encoding="utf-8").splitlines()


# --- reproducibility --------------------------------------------------------------------------------


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    generator = load_generator()
    written = generator.write_samples(tmp_path)
    assert [p.name for p in written] == [DISCORD.name, WHATSAPP.name]
    for committed in (DISCORD, WHATSAPP):
        fresh = (tmp_path / committed.name).read_bytes()
        # a Windows checkout may have turned LF into CRLF; the generator always writes LF
        assert fresh == committed.read_bytes().replace(b"\r\n", b"\n"), f"{committed.name} is stale"


def test_sample_is_small() -> None:
    assert DISCORD.stat().st_size + WHATSAPP.stat().st_size < 2_000_000


# --- format: DiscordChatExporter JSON ---------------------------------------------------------------

MESSAGE_KEYS = {
    "id",
    "type",
    "timestamp",
    "timestampEdited",
    "callEndedTimestamp",
    "isPinned",
    "content",
    "author",
    "attachments",
    "embeds",
    "stickers",
    "reactions",
    "mentions",
    "inlineEmojis",
}


def test_discord_structure(discord: dict) -> None:
    assert list(discord) == ["guild", "channel", "dateRange", "exportedAt", "messages", "messageCount"]
    assert set(discord["guild"]) == {"id", "name", "iconUrl"}
    assert {"id", "type", "categoryId", "category", "name", "topic"} <= set(discord["channel"])
    messages = discord["messages"]
    assert discord["messageCount"] == len(messages) == 2200
    ids = set()
    previous = None
    for message in messages:
        assert MESSAGE_KEYS <= set(message) <= MESSAGE_KEYS | {"reference"}
        assert isinstance(message["id"], str) and message["id"].isdigit() and message["id"] not in ids
        ids.add(message["id"])
        moment = datetime.fromisoformat(message["timestamp"])
        assert moment.utcoffset() == timedelta(0)
        assert previous is None or moment >= previous
        previous = moment
        author = message["author"]
        assert set(author) == {
            "id",
            "name",
            "discriminator",
            "nickname",
            "color",
            "isBot",
            "roles",
            "avatarUrl",
        }
        assert author["discriminator"] == ("7613" if author["isBot"] else "0000")
        if "reference" in message:
            assert message["reference"]["messageId"] in ids  # points back to an earlier message
            assert message["type"] in ("Reply", "ChannelPinnedMessage")
    assert max(int(i) for i in ids) > 2**53  # snowflakes do not survive floats


def test_discord_has_the_export_quirks(discord: dict) -> None:
    messages = discord["messages"]
    types = {m["type"] for m in messages}
    assert types == {"Default", "Reply", "Call", "ChannelPinnedMessage", "GuildMemberJoin"}
    assert any(m["author"]["isBot"] for m in messages)
    assert any(m["content"].startswith("!play") for m in messages)
    assert any(m["attachments"] and not m["content"] for m in messages)  # media only
    assert any(m["timestampEdited"] for m in messages)
    assert any(m["isPinned"] for m in messages)
    assert all(m["callEndedTimestamp"] for m in messages if m["type"] == "Call")
    assert any("\n" in m["content"] for m in messages)
    assert any(m["mentions"] for m in messages)
    juno = [m for m in messages if m["author"]["name"] == "junebug"]
    assert juno and all(m["author"]["nickname"] == "Juno" for m in juno)


# --- format: WhatsApp Android -----------------------------------------------------------------------


def test_whatsapp_lines_follow_the_android_layout(whatsapp_lines: list[str]) -> None:
    headers = [WHATSAPP_HEADER.match(line) for line in whatsapp_lines]
    assert headers[0] is not None and "end-to-end encrypted" in headers[0].group(6)
    assert sum(h is not None for h in headers) == 2600
    days = set()
    previous = None
    for header in filter(None, headers):
        day, month, year, hour, minute, _ = header.groups()
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute))  # day-first
        assert previous is None or moment >= previous
        previous = moment
        days.add(int(day))
    assert max(days) > 12  # the date order can be inferred
    continuations = [line for line, h in zip(whatsapp_lines, headers, strict=True) if h is None]
    assert continuations  # multi-line messages
    texts = [h.group(6) for h in headers if h is not None]
    for marker in ("<Media omitted>", "This message was deleted", "<This message was edited>"):
        assert any(marker in t for t in texts), marker
    assert any(t.startswith("Juno: ") for t in texts)
    assert any(t.startswith("\u202a+1 555 0123\u202c: ") for t in texts)


def test_synthetic_pii_is_in_other_peoples_messages(discord: dict, whatsapp_lines: list[str]) -> None:
    discord_others = " ".join(m["content"] for m in discord["messages"] if m["author"]["name"] != "junebug")
    whatsapp_others = " ".join(line for line in whatsapp_lines if " - Juno: " not in line)
    for needle in ("sam.carter@example.com", "+1 555 0142", "4111 1111 1111 1111"):
        assert needle in discord_others, needle
    for needle in ("sam.carter@example.com", "+1 555 0100", "host.pinelake@example.com"):
        assert needle in whatsapp_others, needle


# --- the persona's style ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One message as the style table sees it: `text` is None for anything that is not a text message."""

    author: str
    time: datetime
    text: str | None


def discord_lines(discord: dict) -> list[Line]:
    lines = []
    for m in discord["messages"]:
        is_text = (
            m["type"] in ("Default", "Reply")
            and not m["author"]["isBot"]
            and not m["attachments"]
            and m["content"] != ""
        )
        author = "juno" if m["author"]["name"] == "junebug" else m["author"]["name"]
        lines.append(Line(author, datetime.fromisoformat(m["timestamp"]), m["content"] if is_text else None))
    return lines


def whatsapp_message_lines(raw_lines: list[str]) -> list[Line]:
    records: list[tuple[datetime, str]] = []
    for raw in raw_lines:
        header = WHATSAPP_HEADER.match(raw)
        if header is None:
            moment, body = records[-1]
            records[-1] = (moment, body + "\n" + raw)
            continue
        day, month, year, hour, minute, body = header.groups()
        records.append((datetime(int(year), int(month), int(day), int(hour), int(minute)), body))
    lines = []
    for moment, body in records:
        sender = WHATSAPP_SENDER.match(body)
        if sender is None:  # a system line
            lines.append(Line("", moment, None))
            continue
        author, text = sender.groups()
        text = text.removesuffix(" <This message was edited>")
        is_text = text not in ("<Media omitted>", "This message was deleted")
        lines.append(Line("juno" if author == "Juno" else author, moment, text if is_text else None))
    return lines


def measure(lines: list[Line], juno: bool) -> dict[str, float]:
    def mine(line: Line) -> bool:
        return (line.author == "juno") == juno

    texts = [line.text for line in lines if line.text is not None and mine(line)]
    bursts: list[int] = []
    run_author, run = "", 0
    for i, line in enumerate(lines):
        paused = i > 0 and line.time - lines[i - 1].time >= PAUSE
        if line.text is not None and line.author == run_author and not paused:
            run += 1
            continue
        if run and (run_author == "juno") == juno:
            bursts.append(run)
        run_author, run = (line.author, 1) if line.text is not None else ("", 0)
    if run and (run_author == "juno") == juno:
        bursts.append(run)

    def rate(predicate: Callable[[str], bool]) -> float:
        return sum(map(predicate, texts)) / len(texts)

    return {
        "text messages": len(texts),
        "all lowercase (apart from LMAO)": rate(
            lambda t: not any(c.isupper() for c in t.replace("LMAO", ""))
        ),
        "ends with a period": rate(lambda t: t.rstrip().endswith(".")),
        "signature emoji 💀 ✨ 🫠": rate(lambda t: any(e in t for e in SIGNATURE_EMOJI)),
        "slang (fr, ngl, lowkey, bestie, ok but, deadass)": rate(lambda t: bool(SLANG.search(t.lower()))),
        "stretched word (3+ same letters)": rate(lambda t: bool(STRETCHED.search(URL.sub("", t.lower())))),
        '"LMAO"': rate(lambda t: "LMAO" in t),
        '"haha"': rate(lambda t: "haha" in t.lower()),
        "mean burst length (messages)": sum(bursts) / len(bursts),
        "mean characters per message": sum(map(len, texts)) / len(texts),
    }


def readme_table() -> dict[str, dict[str, str]]:
    """{column: {marker: cell}} from the style table in examples/README.md."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    start = next(i for i, row in enumerate(rows) if row.startswith("| marker |"))
    table = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[start:]]
    header, body = table[0], [r for r in table[1:] if not set(r[0]) <= {"-"}]
    body = body[: next((i for i, r in enumerate(body) if len(r) != len(header)), len(body))]
    return {column: {r[0]: r[i] for r in body} for i, column in enumerate(header) if i}


def test_readme_style_table_matches_the_files(discord: dict, whatsapp_lines: list[str]) -> None:
    documented = readme_table()
    sides = {
        "Juno, Discord": measure(discord_lines(discord), juno=True),
        "Juno, WhatsApp": measure(whatsapp_message_lines(whatsapp_lines), juno=True),
        "Others, Discord": measure(discord_lines(discord), juno=False),
        "Others, WhatsApp": measure(whatsapp_message_lines(whatsapp_lines), juno=False),
    }
    assert set(documented) == set(sides)
    for column, measured in sides.items():
        assert set(documented[column]) == set(measured), column
        for marker, value in measured.items():
            cell = documented[column][marker]
            if cell.endswith("%"):
                assert abs(value * 100 - float(cell[:-1])) <= 0.05 + 1e-9, (column, marker, value, cell)
            else:
                decimals = len(cell.partition(".")[2])
                assert abs(value - float(cell)) <= 0.5 * 10**-decimals + 1e-9, (column, marker, value, cell)


def test_juno_style_is_distinct(discord: dict, whatsapp_lines: list[str]) -> None:
    for lines in (discord_lines(discord), whatsapp_message_lines(whatsapp_lines)):
        juno, others = measure(lines, juno=True), measure(lines, juno=False)
        assert juno["text messages"] > 1000
        assert juno["all lowercase (apart from LMAO)"] == 1.0
        assert juno["ends with a period"] == 0.0 and juno['"haha"'] == 0.0
        assert 0.08 <= juno["signature emoji 💀 ✨ 🫠"] <= 0.2 and others["signature emoji 💀 ✨ 🫠"] == 0.0
        assert 0.02 <= juno['"LMAO"'] <= 0.08
        assert 1.7 <= juno["mean burst length (messages)"] <= 2.3
        assert others["mean burst length (messages)"] < 1.1
        assert others["mean characters per message"] > 1.5 * juno["mean characters per message"]


def test_generator_stats_agree_with_the_files(discord: dict, whatsapp_lines: list[str]) -> None:
    generator = load_generator()
    events = list(generator.simulate(generator.SAMPLE_WHATSAPP))
    from_events = generator.style_stats(events, juno=True)
    from_file = measure(whatsapp_message_lines(whatsapp_lines), juno=True)
    assert from_events.messages == from_file["text messages"]
    assert from_events.mean_burst == pytest.approx(from_file["mean burst length (messages)"])
    assert from_events.signature_emoji == pytest.approx(from_file["signature emoji 💀 ✨ 🫠"])


@pytest.mark.parametrize("seed", range(40))
def test_juno_style_rewrites_any_line(seed: int) -> None:
    import random

    line = load_generator().juno_style("So. I can't believe it's Friday, LOL. No way!", random.Random(seed))
    assert line.replace("LMAO", "") == line.replace("LMAO", "").lower()
    assert not line.endswith((".", "!")) and "'" not in line
    assert line.replace("LMAO ", "").startswith(
        ("so ", "sooo ", "ngl ", "lowkey ", "ok but ", "deadass ", "bestie ")
    )


# --- the parsers read the sample --------------------------------------------------------------------


def test_parse_path_reads_both_files_and_finds_juno(discord: dict, whatsapp_lines: list[str]) -> None:
    sources = pytest.importorskip("twinbot.data.sources")
    discord_messages = list(sources.parse_path(DISCORD))
    whatsapp_messages = list(sources.parse_path(WHATSAPP))
    assert len(discord_messages) == 2200
    assert len(whatsapp_messages) == 2600
    juno_discord = [m for m in discord_messages if m.author_id == "689214055735361547"]
    juno_whatsapp = [m for m in whatsapp_messages if m.author == "Juno"]
    assert {m.author for m in juno_discord} <= {"Juno", "junebug"}
    # every text message the style table counts for Juno comes out of the parser as a text record
    assert (
        sum(m.kind == "text" for m in juno_discord)
        == measure(discord_lines(discord), juno=True)["text messages"]
    )
    expected = measure(whatsapp_message_lines(whatsapp_lines), juno=True)["text messages"]
    assert sum(m.kind == "text" for m in juno_whatsapp) == expected
    assert {m.platform for m in discord_messages} != {m.platform for m in whatsapp_messages}
    assert sum(m.is_bot for m in discord_messages) > 0
    assert sum(m.reply_to is not None for m in discord_messages) > 0
