"""PII scrubbing: precision/recall per type on the labeled set, plus generated cases the set does not hold."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from support.data import scrub_text
from twinbot.data.scrub import PII_TYPES, Redactions, Scrubber, find_pii
from twinbot.errors import TwinbotError

LABELED = Path(__file__).parent / "fixtures" / "pii" / "labeled.jsonl"
# Thresholds actually reached on labeled.jsonl (see the printed table with `pytest -s`). The set was written
# together with the detectors, so it is a regression guard; the generated tests below are held out.
MIN_PRECISION = 0.95
MIN_RECALL = 0.95


def _load() -> list[dict]:
    return [json.loads(line) for line in LABELED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labeled_set_is_large_and_consistent() -> None:
    rows = _load()
    assert len(rows) >= 150
    negatives = [r for r in rows if not r["spans"]]
    assert len(negatives) >= 60
    for row in rows:
        for span in row["spans"]:
            assert row["text"][span["start"] : span["end"]] == span["value"]
    assert {s["type"] for r in rows for s in r["spans"]} <= set(PII_TYPES)


def test_precision_and_recall_per_type() -> None:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    misses: list[str] = []
    for row in _load():
        truth = {(s["start"], s["end"], s["type"]) for s in row["spans"]}
        pred = {(p.start, p.end, p.type) for p in find_pii(row["text"])}
        for _start, _end, kind in pred & truth:
            tp[kind] += 1
        for start, end, kind in pred - truth:
            fp[kind] += 1
            misses.append(f"FP {kind}: {row['text'][start:end]!r}")
        for start, end, kind in truth - pred:
            fn[kind] += 1
            misses.append(f"FN {kind}: {row['text'][start:end]!r}")
    print("\ntype     precision  recall  (tp fp fn)")
    failed = []
    for kind in sorted(set(tp) | set(fp) | set(fn)):
        precision = tp[kind] / max(1, tp[kind] + fp[kind])
        recall = tp[kind] / max(1, tp[kind] + fn[kind])
        print(f"{kind:8} {precision:9.3f} {recall:7.3f}  ({tp[kind]} {fp[kind]} {fn[kind]})")
        if precision < MIN_PRECISION or recall < MIN_RECALL:
            failed.append(kind)
    assert not failed, f"below threshold: {failed}; {misses}"


def _pii_benchmark():  # bench/pii.py: the evaluation on the chat corpus written apart from the detectors
    import importlib.util

    path = Path(__file__).parents[1] / "bench" / "pii.py"
    spec = importlib.util.spec_from_file_location("twinbot_bench_pii", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("corpus", ["chat_corpus.jsonl", "chat_holdout.jsonl"])
def test_the_chat_corpora_meet_the_precision_and_recall_targets(corpus: str) -> None:
    bench = _pii_benchmark()
    result = bench.evaluate(LABELED.parent / corpus)
    assert result.lines >= 300 and result.negatives >= 150
    assert sum(s.labelled for k, s in result.scores.items() if k in bench.CLAIMED) >= 150
    assert result.failed_targets() == [], bench.render(result)


def test_scrub_replaces_with_placeholders_and_counts() -> None:
    text = "mail a.b@example.com or call +44 7700 900123, card 4111 1111 1111 1111, ip 203.0.113.9"
    out, counts = scrub_text(text)
    assert out == "mail <EMAIL> or call <PHONE>, card <CARD>, ip <IP>"
    assert counts == {"EMAIL": 1, "PHONE": 1, "CARD": 1, "IP": 1}


def test_scrubber_accumulates_counts_and_returns_same_object_when_clean() -> None:
    scrubber = Scrubber()
    clean = "nothing to see here, meet at 12:30 on 05/10/2023"
    assert scrubber.scrub(clean) is clean
    scrubber.scrub("IBAN DE89 3704 0044 0532 0130 00 and key AKIAIOSFODNN7EXAMPLE")
    scrubber.scrub("another AKIAJ7ZQWERTY1234567")
    assert scrubber.counts["IBAN"] == 1
    assert scrubber.counts["SECRET"] == 2
    assert scrubber.counts["EMAIL"] == 0


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def _group(number: str, sep: str) -> str:
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def test_generated_valid_cards_are_found_and_broken_ones_are_not() -> None:
    rng = random.Random(7)
    for _ in range(300):
        number = _luhn_complete(rng.choice(["4", "51", "55", "2221", "6011", "35"]), 16, rng)
        sep = rng.choice(["", " ", "-"])
        shown = _group(number, sep) if sep else number
        spans = find_pii(f"the card is {shown} thanks")
        assert [(s.type, s.start, s.end) for s in spans] == [("CARD", 12, 12 + len(shown))], shown
        broken = number[:-1] + str((int(number[-1]) + 1) % 10)
        shown = _group(broken, sep) if sep else broken
        assert find_pii(f"the card is {shown} thanks") == [], shown


def _iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def test_generated_ibans_are_found_and_wrong_checksums_are_not() -> None:
    rng = random.Random(11)
    for _ in range(200):
        country, length = rng.choice([("DE", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("BE", 16)])
        bban = "".join(rng.choice("0123456789") for _ in range(length - 4))
        iban = _iban(country, bban)
        spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        for shown in (iban, spaced):
            assert [s.type for s in find_pii(f"iban: {shown}")] == ["IBAN"], shown
        wrong = iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
        assert all(s.type != "IBAN" for s in find_pii(f"iban: {wrong}")), wrong


def test_generated_dates_times_prices_and_versions_are_left_alone() -> None:
    rng = random.Random(3)
    for _ in range(500):
        y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
        hh, mm, ss = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        samples = [
            f"{d:02d}/{m:02d}/{y} {hh:02d}:{mm:02d}",
            f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}",
            f"{d:02d}.{m:02d}.{y}, {hh}:{mm:02d}",
            f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}+02:00",
            f"${rng.randint(1, 99)},{rng.randint(100, 999)}.{rng.randint(0, 99):02d}",
            f"{rng.randint(1, 9)} {rng.randint(100, 999)} {rng.randint(100, 999)},{rng.randint(0, 99):02d} €",
            f"v{rng.randint(0, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 300)}",
            f"{rng.randint(0, 20)}.{rng.randint(0, 30)}.{rng.randint(1000, 30000)}",
            f"order #{rng.randint(10**8, 10**12)}",
        ]
        for text in samples:
            assert find_pii(f"so {text} ok") == [], text


def test_generated_ipv4_inside_text_is_found() -> None:
    rng = random.Random(5)
    for _ in range(200):
        ip = ".".join(str(rng.randint(0, 255)) for _ in range(4))
        assert [s.type for s in find_pii(f"host {ip}, port 22")] == ["IP"], ip


@pytest.mark.parametrize(
    "text",
    [
        "I was sk-ating all day",
        "https://example.com/watch?v=4111111111111111&t=0612345678",
        "<@123456789012345678> hi",
        "#20231005 #hashtag",
        "the build 1.2.3.4.5 failed",
        "std::move is fine",
    ],
)
def test_hard_negatives(text: str) -> None:
    assert find_pii(text) == []


def test_generated_phone_numbers_in_common_formats_are_found() -> None:
    rng = random.Random(13)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    for _ in range(200):
        area = f"{rng.randint(2, 9)}{digits(2)}"
        formats = [
            f"+44 7{digits(3)} {digits(6)}",
            f"+49 {rng.randint(30, 89)} {digits(8)}",
            f"+1 ({area}) {digits(3)}-{digits(4)}",
            f"({area}) {digits(3)}-{digits(4)}",
            f"{area}-{digits(3)}-{digits(4)}",
            f"0{rng.randint(1, 9)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
            f"0{rng.randint(1, 9)}{digits(2)} {digits(4)} {digits(4)}",
            f"0{rng.randint(1, 9)}{digits(8)}",
        ]
        for phone in formats:
            found = [(s.type, s.start, s.end) for s in find_pii(f"call {phone} later")]
            assert found == [("PHONE", 5, 5 + len(phone))], phone


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("password: hunter2!", [("SECRET", "hunter2!")]),
        ("pw is Tr0ub4dor&3 (dont change it)", [("SECRET", "Tr0ub4dor&3")]),
        ("la contraseña del wifi: Perrito_2021.", [("SECRET", "Perrito_2021")]),
        ("пароль от вайфая kotik2020", [("SECRET", "kotik2020")]),
        ("DB_PASSWORD='s3cr3t-value-x'", [("SECRET", "s3cr3t-value-x")]),
        ("postgres://admin:s3cretPass@db.example.com:5432/app", [("SECRET", "s3cretPass")]),
        ("reset it here https://example.com/reset?token=9f8e7d6c5b4a3921", [("SECRET", "9f8e7d6c5b4a3921")]),
        (
            "https://discord.com/api/webhooks/1234567890/AbCdEfGhIjKlMnOpQrSt_uv",
            [("SECRET", "AbCdEfGhIjKlMnOpQrSt_uv")],
        ),
        ("mail anna at gmail dot com", [("EMAIL", "anna at gmail dot com")]),
        ("tom.h[at]proton[dot]me", [("EMAIL", "tom.h[at]proton[dot]me")]),
        ("ssn 078-05-1120 ok", [("SSN", "078-05-1120")]),
        ("call me 4155550123", [("PHONE", "4155550123")]),
        ("mi móvil es 612 34 56 78", [("PHONE", "612 34 56 78")]),
        # what must stay
        ("the password is wrong", []),
        ("forgot my password AGAIN lol", []),
        ("le mot de passe doit contenir 12 caractères", []),
        ("fixed in 3f786850e387550fdab836ed7e6dc881de23001b", []),
        ("sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", []),
        ("look at example.com for the docs", []),
        ("my order number is 4155550123", []),
        ("icon@2x.png looks blurry", []),
        ("public key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", []),
        ("https://github.com/org/repo/commit/3f786850e387550fdab836ed7e6dc881de23001b", []),
        ("subnet mask 255.255.255.0", []),
        ("git remote is git@github.com:acme/widgets.git", []),
        ("the lottery numbers were 4 8 15 16 23 42", []),
        ("password: ${DB_PASSWORD} from the env", []),
        ("bestelnummer 7031596284 is onderweg", []),
        ("lösenordet är Kanelbulle#7", [("SECRET", "Kanelbulle#7")]),
        ("nya numret är 070-123 45 67", [("PHONE", "070-123 45 67")]),
    ],
)
def test_detectors_for_passwords_url_credentials_spelled_emails_ssns_and_cued_phones(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert [(s.type, text[s.start : s.end]) for s in find_pii(text)] == found


def test_redactions_match_whole_words_and_phrases_case_insensitively() -> None:
    redactions = Redactions.of(["Anna", "anna maria lopez", "221B Baker Street"])
    scrubber = Scrubber(redactions=redactions)
    assert scrubber.scrub("ANNA said hi to Annabelle") == "<REDACTED> said hi to Annabelle"
    assert scrubber.scrub("it's Anna Maria Lopez, 221b baker-street") == "it's <REDACTED>, <REDACTED>"
    assert scrubber.counts["REDACTED"] == 3
    assert not Redactions.of(["", "  ", "!!"])
    without_patterns = Scrubber(patterns=False, redactions=redactions)
    assert without_patterns.scrub("anna: a@b.co") == "<REDACTED>: a@b.co"


def test_redact_files_are_read_with_comments_and_a_size_cap(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("# friends\nJo Smith\n\n  Kai\n", encoding="utf-8")
    redactions = Redactions.read(["Lee"], [names])
    assert (
        Scrubber(redactions=redactions).scrub("jo smith, kai and lee")
        == "<REDACTED>, <REDACTED> and <REDACTED>"
    )
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"x\n" * 600_000)
    with pytest.raises(TwinbotError, match="over 1 MB"):
        Redactions.read([], [huge])
    with pytest.raises(TwinbotError, match="cannot read"):
        Redactions.read([], [tmp_path / "missing.txt"])
