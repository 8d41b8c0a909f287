"""Every regular expression twinbot runs on text from export files (or from a model, or from file names in
an archive) takes time linear in its input: none can be made to backtrack for seconds by a crafted message.

Each pattern is run the way the code runs it (match, search, sub, ...) on adversarial inputs built from its
own pieces: its literal runs and a string it matches, repeated to 20,000 characters, with and without a
character that makes the match fail at the end. Each run must finish within a budget of a thousand times a
plain linear scan of the same length in this process (a quadratic pattern on 20,000 characters needs
~10^8 steps, seconds; an exponential one never ends), enforced with a timer signal, so a regression fails
quickly instead of hanging the suite."""

from __future__ import annotations

import functools
import gc
import importlib
import pkgutil
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import pytest

import twinbot

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the time budget uses a POSIX timer signal")

SIZE = 20_000

# How the code applies each module-level pattern ("module.NAME": operations).
USES: dict[str, tuple[str, ...]] = {
    "twinbot.bot.generate._SPEAKER_LINE": ("match",),
    "twinbot.data.filters._LINK": ("fullmatch",),
    "twinbot.data.filters._DISCRIMINATOR": ("sub",),
    "twinbot.data.parse._CONTROL_CHARS": ("sub",),
    "twinbot.data.scrub._ANY_DIGIT": ("search",),
    "twinbot.data.pii_context._ASSIGNED_SECRET": ("finditer",),
    "twinbot.data.scrub._DIGIT_GROUPS": ("findall",),
    "twinbot.data.pii_context._PASSWORD": ("finditer",),
    "twinbot.data.scrub._PHONE_CUED": ("finditer",),
    "twinbot.data.pii_context.WORD_HINT": ("search",),
    "twinbot.data.pii_context.WORDS": ("finditer", "findall"),
    "twinbot.data.pii_context._SPELLED_DOT": ("search",),
    "twinbot.data.pii_context._SPELLED_EMAIL": ("finditer",),
    "twinbot.data.pii_context._SSN": ("finditer",),
    "twinbot.data.scrub._TELEGRAM_TOKEN": ("finditer",),
    "twinbot.data.pii_context._URL_SECRET_KEYS": ("search",),
    "twinbot.data.scrub._URL": ("finditer",),
    "twinbot.data.scrub._EMAIL": ("finditer",),
    "twinbot.data.scrub._SECRET_PREFIXED": ("finditer",),
    "twinbot.data.scrub._SECRET_HEX": ("finditer",),
    "twinbot.data.scrub._SECRET_B64": ("finditer",),
    "twinbot.data.scrub._LONG_RUN": ("search",),
    "twinbot.data.scrub._CARD": ("finditer",),
    "twinbot.data.scrub._IBAN": ("finditer",),
    "twinbot.data.scrub._IPV4": ("finditer",),
    "twinbot.data.scrub._IPV6": ("finditer",),
    "twinbot.data.scrub._PHONE_INTL": ("finditer",),
    "twinbot.data.scrub._PHONE_NANP": ("finditer",),
    "twinbot.data.scrub._PHONE_TRUNK": ("finditer",),
    "twinbot.data.scrub._SEPARATORS": ("search",),
    "twinbot.data.sources.common._LONG_FRACTION": ("sub",),
    "twinbot.data.sources.discord_csv._DISCRIMINATOR": ("sub",),
    "twinbot.data.sources.discord_csv._CHANNEL_ID_IN_NAME": ("search",),
    "twinbot.data.sources.discord_csv._CALL_TEXT": ("fullmatch",),
    "twinbot.data.sources.discord_csv._SYSTEM_TEXT": ("fullmatch",),
    "twinbot.data.sources.discord_json._SNIFF_HEAD": ("match",),
    "twinbot.data.sources.discord_json._CHANNEL_ID_IN_NAME": ("search",),
    "twinbot.data.sources.discord_package._CHANNEL_FILE": ("match",),
    "twinbot.data.sources.discord_package._USER_FILE": ("match",),
    "twinbot.data.sources.generic_jsonl._UNIX_SECONDS": ("fullmatch",),
    "twinbot.data.sources.messenger._PART_FILE": ("match",),
    "twinbot.data.sources.messenger._HTML_PART": ("search",),
    "twinbot.data.sources.slack._DAY_FILE": ("match",),
    "twinbot.data.sources.slack._TS": ("match",),
    "twinbot.data.sources.signal._SIGEXPORT_CALL": ("fullmatch",),
    "twinbot.data.sources.slack._MARKUP": ("split",),
    "twinbot.data.sources.telegram._SNIFF_MARKERS": ("search",),
    "twinbot.data.sources.whatsapp._HEADER": ("match",),
    "twinbot.data.sources.whatsapp._DATE_PARTS": ("match",),
    "twinbot.data.sources.whatsapp._MARKS": ("sub",),
    "twinbot.data.sources.whatsapp._EDITED": ("search",),
    "twinbot.data.sources.whatsapp._CHAT_NAME": ("fullmatch",),
    "twinbot.data.sources.whatsapp._DUPLICATE_SUFFIX": ("sub",),
    "twinbot.quality.blind._PROMPT_NAME": ("match",),
    "twinbot.quality.style._WORD": ("findall",),
    "twinbot.quality.style._PLACEHOLDER": ("search",),
    "twinbot.quality.style.CANARY": ("findall",),
    "twinbot.finetune.autostart._NAME": ("fullmatch",),
    "twinbot.runs._NAME": ("fullmatch", "search"),
}


@functools.cache
def module_patterns() -> dict[str, re.Pattern[Any]]:
    found = {}
    for info in pkgutil.walk_packages(twinbot.__path__, "twinbot."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found[f"{info.name}.{name}"] = value
    return found


def built_patterns() -> dict[str, tuple[re.Pattern[str], tuple[str, ...]]]:
    """Patterns built at run time from settings or names."""
    from twinbot.data.filters import FilterOptions

    command = FilterOptions()._command
    assert command is not None
    return {"filters: bot command": (command, ("match",))}


# --- adversarial inputs ------------------------------------------------------------------------------------


def _representative(items: list[tuple[object, object]]) -> str:
    """A character a character class accepts."""
    for op, value in items:
        if op is sre_constants.LITERAL:
            return chr(value)  # type: ignore[arg-type]
        if op is sre_constants.RANGE:
            return chr(value[0])  # type: ignore[index]
        if op is sre_constants.CATEGORY:
            return {"CATEGORY_DIGIT": "7", "CATEGORY_SPACE": " ", "CATEGORY_WORD": "w"}.get(str(value), "x")
    return "x"


def _walk(parsed: object, literals: list[str], example: list[str]) -> None:
    """Collects the literal runs of a parsed pattern and writes one string it matches into `example`."""
    run: list[str] = []

    def flush() -> None:
        if run:
            literals.append("".join(run))
            run.clear()

    for op, value in parsed:  # type: ignore[attr-defined]
        if op is sre_constants.LITERAL:
            run.append(chr(value))
            example.append(chr(value))
            continue
        flush()
        if op is sre_constants.IN:
            character = _representative(value)
            literals.append(character)
            example.append(character)
        elif op is sre_constants.ANY:
            example.append("a")
        elif op is sre_constants.SUBPATTERN:
            _walk(value[-1], literals, example)
        elif op is sre_constants.BRANCH:
            for number, branch in enumerate(value[1]):
                _walk(branch, literals, example if number == 0 else [])
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            low, _, body = value
            for _ in range(max(1, low)):
                _walk(body, literals, example)
        elif op is sre_constants.ATOMIC_GROUP:
            _walk(value, literals, example)
    flush()


def adversarial_inputs(pattern: re.Pattern[Any]) -> Iterator[str]:
    literals: list[str] = []
    example: list[str] = []
    _walk(sre_parse.parse(pattern.pattern, pattern.flags), literals, example)
    matched = "".join(example)
    pieces = {
        piece for piece in [*literals, matched, matched[:-1], " ", "\n", "a", "7", "www.", "<a"] if piece
    }
    for piece in sorted(pieces):
        body = piece * (SIZE // len(piece) + 1)
        yield from (body[:SIZE], body[: SIZE - 1] + "\x00", piece + " " * SIZE + "\x00", "a" + body[:SIZE])


# --- the time budget ---------------------------------------------------------------------------------------


class TooSlow(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise TooSlow


def plain_scan_seconds() -> float:
    """The time of one anchored pass of a trivial pattern over SIZE characters (the slowest of a few runs)."""
    plain = re.compile(r"[^\x01]*\x01")
    text = "lorem ipsum dolor sit amet " * (SIZE // 27 + 1)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        plain.match(text[:SIZE])
        timings.append(time.perf_counter() - started)
    return max(timings)


def run_within(budget: float, work: Callable[[], object]) -> float:
    """Runs `work`, raising TooSlow past `budget` seconds. The garbage collector is off meanwhile: a full
    collection of the test process's heap (torch and transformers imported) set off by the thousands of
    match objects a finditer makes takes longer than the budget and is not the pattern's time."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    collecting = gc.isenabled()
    gc.disable()
    signal.setitimer(signal.ITIMER_REAL, budget)
    started = time.perf_counter()
    try:
        work()
        return time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if collecting:
            gc.enable()


OPERATIONS: dict[str, Callable[[re.Pattern[Any], Any], object]] = {
    "match": lambda pattern, text: pattern.match(text),
    "fullmatch": lambda pattern, text: pattern.fullmatch(text),
    "search": lambda pattern, text: pattern.search(text),
    "finditer": lambda pattern, text: list(pattern.finditer(text)),
    "findall": lambda pattern, text: pattern.findall(text),
    "sub": lambda pattern, text: pattern.sub(text[:0], text),
    "split": lambda pattern, text: pattern.split(text),
}


def slow_inputs(pattern: re.Pattern[Any], operations: tuple[str, ...], budget: float) -> list[str]:
    slow = []
    for line in adversarial_inputs(pattern):
        text = line.encode("utf-8", "replace") if isinstance(pattern.pattern, bytes) else line
        for operation in operations:
            try:
                run_within(budget, lambda: OPERATIONS[operation](pattern, text))  # noqa: B023
            except TooSlow:
                slow.append(f"{operation} on {text[:24]!r}... ({len(text)} chars)")
    return slow


@pytest.fixture(scope="module")
def budget() -> float:
    return max(0.25, 1000 * plain_scan_seconds())


def test_every_module_pattern_is_listed_with_how_it_is_used() -> None:
    assert set(module_patterns()) == set(USES)


@pytest.mark.parametrize("name", sorted(USES))
def test_module_pattern_is_linear(name: str, budget: float) -> None:
    pattern = module_patterns()[name]
    assert slow_inputs(pattern, USES[name], budget) == []


def test_patterns_built_at_run_time_are_linear(budget: float) -> None:
    slow = {
        name: found
        for name, (pattern, operations) in built_patterns().items()
        if (found := slow_inputs(pattern, operations, budget))
    }
    assert slow == {}


def test_the_budget_catches_a_backtracking_pattern(budget: float) -> None:
    """The check itself: the link pattern that hung prepare (exponential under fullmatch) is caught."""
    backtracking = re.compile(r"(?:<?(?:https?://|www\.)\S+>?\s*)+", re.IGNORECASE)
    assert slow_inputs(backtracking, ("fullmatch",), budget)


def test_the_reported_slow_inputs_are_fast_where_the_code_uses_them(budget: float) -> None:
    """The cases the security review timed: a link-only check on repeated "www." (exponential before), and
    WhatsApp's edited-marker and notice-name checks on 80 KB lines (quadratic before)."""
    from datetime import datetime

    from twinbot.data.filters import FilterOptions, MessageFilter
    from twinbot.data.records import Message
    from twinbot.data.sources import whatsapp

    def message(text: str) -> Message:
        return Message("discord-json", "c", "1", datetime(2024, 1, 1), "a", "Ann", text, "text")

    keep = MessageFilter(FilterOptions(max_chars=10**6))
    cases: list[Callable[[], object]] = [
        lambda: keep(message("www." * 20_000 + " !")),
        lambda: keep(message("<https://x> " * 8_000 + "?")),
        lambda: whatsapp._classify("x" + " " * 80_000 + "<This message was edited>"),
        lambda: whatsapp._classify("<" * 80_000 + ">"),
        lambda: whatsapp._is_notice_with_colon('"' + "changed " * 10_000 + ': x"', 80_001),
        lambda: whatsapp._is_notice_with_colon('"' + "hat " * 20_000 + ': "', 80_001),
    ]
    for case in cases:
        run_within(budget, case)
    assert keep(message("www.example.com <https://b.example/x>")) == "link_only"
    assert keep(message("look www.example.com")) is None
    assert whatsapp._classify("fine  <This message was edited>") == ("text", None, "fine")
    assert whatsapp._is_notice_with_colon('Ann changed the subject to "Trip: day 2"', 32)
    assert not whatsapp._is_notice_with_colon("Ann changed: x", 11)


@pytest.mark.parametrize(
    "unit",
    [
        "203.0.113.7 ",
        "a@b.co ",
        "+44 20 7946 0958, ",
        "4111 1111 1111 1111; ",
        "https://x.example/5551234567 ",
        "pw is Ab1! ",
        "anna at gmail dot com, ",
        "call 655 123 456, ",
        "078-05-1120 ",
        "https://u:p@h.example/reset/AbCdEfGhIjKlMnOpQr?token=abcdef123 ",
        "DB_PASSWORD=abcdefgh12 ",
        "x at y dot ",
    ],
    ids=[
        "ip",
        "email",
        "phone",
        "card-and-phone",
        "urls",
        "password",
        "spelled",
        "cued",
        "ssn",
        "url-secrets",
        "assigned",
        "at-dot-chain",
    ],
)
def test_scrubbing_a_line_full_of_matches_is_linear(unit: str, budget: float) -> None:
    """Scrub's own work per line (URL checks, overlap resolution) grows with the line, not with the square
    of its number of matches: ~200,000 characters, tens of thousands of matches."""
    from twinbot.data.scrub import find_pii

    line = unit * (200_000 // len(unit))
    found: list[object] = []
    run_within(8 * budget, lambda: found.extend(find_pii(line)))
    assert len(found) >= (0 if unit.startswith(("https://x", "x at")) else line.count(unit))
