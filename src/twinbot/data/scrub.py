"""PII scrubbing: replace emails, phone numbers, card numbers, IBANs, US social security numbers, IP
addresses and secrets in message text with typed placeholders (`<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`,
`<SSN>`, `<IP>`, `<SECRET>`), and the words the user lists with `--redact` with `<REDACTED>`.

Built for throughput (about a microsecond for a typical chat line): every detector sits behind a cheap
pre-check (no '@' -> no email search, no digit -> no digit patterns, short text -> no secret search), all
patterns are compiled once, and candidates are validated in Python (Luhn, IBAN mod-97, IP ranges, the cue
words before them) only when a pattern fires. Every pattern is linear in the text (tests/test_linear_patterns).

What counts (and what deliberately does not):
- EMAIL: `local@domain.tld`, and the spelled-out forms people type to dodge scrapers: `anna at gmail dot
  com`, `anna[at]gmail[dot]com`, `anna (at) web (dot) de`, `juan arroba hotmail punto com` (at/dot words in
  several languages; a plain "at" before a plain "." counts only for well-known mail providers, so
  "look at example.com" stays). `@mentions` have no dot-TLD and are left alone.
- PHONE: international numbers starting with `+` or `00` (8-15 digits); NANP `(555) 123-4567`,
  `555-123-4567`, `555.123.4567`, `555 123 4567` (optional leading `1`); trunk-prefixed national numbers
  starting with 0 (`020 7946 0958`, `06 12 34 56 78`, `0151 23456789`, `0612345678`; 10-12 digits, one
  separator style throughout); bare 10-13 digit numbers (`4155550123`) only after a word that says it is a
  number to call or text ("call me", "my number", "whatsapp", "llámame", "Handy", "звони", ...) and not
  after one that says it is an order, invoice, tracking or meeting number. Never: dates, times, prices,
  versions, or numbers under 10 digits without a `+` prefix; digits inside URLs or after `#`.
- CARD: 13-19 digits, contiguous or in card groupings (4-4-4-4[-3], Amex 4-6-5, Diners 4-6-4) with one
  separator style, issuer prefix 2-6, Luhn-valid.
- IBAN: country code + check digits + BBAN (optionally grouped by spaces), the country's registered length
  and a valid mod-97 checksum.
- SSN: US social security numbers `078-05-1120` (valid area, group and serial), or with spaces after
  "SSN" / "social security".
- IP: IPv4 with every octet <= 255 and not part of a longer dotted number (`1.2.3.4.5`, `v1.2.3.4`); IPv6
  validated by `ipaddress`.
- SECRET: Discord and Telegram bot tokens, `sk-...` / `sk_live_...` keys, GitHub `ghp_/gho_/ghu_/ghs_/ghr_`
  and `github_pat_`, GitLab `glpat-`, Hugging Face `hf_`, npm `npm_`, AWS `AKIA/ASIA` key ids, Slack `xox?-`
  tokens, Google `AIza` keys, JSON web tokens; base64-like runs of 32+ characters that mix upper case, lower
  case and digits with many class changes (so `Hello-World-2023-Conference` style words survive); hex runs
  of 32+ characters, except 40- and 64-character ones (git commit ids, sha256 digests) and ones after a
  hash word (sha, md5, commit, checksum, ...) unless a key word (key, token, secret, ...) comes before them;
  passwords stated in chat (`password: x`, `pw is x`, `das Passwort ist x`, `la contraseña es x`, `senha:
  x`, `mot de passe : x`, `hasło to x`, `пароль: x`, ...: after "is"-like words the value must look like a
  password, with a digit, symbol or inner capital, so "the password is wrong" stays);
  and credentials inside URLs: the password of `scheme://user:password@host`, the values of query keys
  such as `token`, `key`, `code`, `pwd`, `signature`, the path segment after `reset`, `verify`, `token`,
  `webhooks/<id>` and the like, and the last segment of a `hooks.` host. Other ids in links are left alone.
- Not detected: people's names and postal addresses (no pattern tells them apart from ordinary words; list
  them with `--redact` / `--redact-file`), dates of birth, national ids other than US SSNs, licence plates.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from twinbot.data import pii_context
from twinbot.data.pii_context import (
    CUE_WINDOW,
    CUE_WINDOW_AFTER,
    HASH_CUES,
    NOT_PHONE_CUES,
    PHONE_CUES,
    PII_TYPES,
    PUBLIC_KEY_CUES,
    SECRET_CUES,
    PiiSpan,
    PiiType,
    cue_before,
    inside,
    iter_password,
    iter_spelled_email,
    iter_ssn,
    iter_url_secrets,
)
from twinbot.errors import TwinbotError

# When two detections overlap, the one with the lower rank wins (then the longer one).
_RANK: dict[PiiType, int] = {
    "REDACTED": 0, "SECRET": 1, "EMAIL": 2, "IBAN": 3, "CARD": 4, "SSN": 5, "IP": 6, "PHONE": 7
}  # fmt: skip

_ANY_DIGIT = re.compile(r"[0-9]")
_DROP_ASCII_DIGITS = str.maketrans("", "", "0123456789")
_URL = re.compile(r"(?<![\w+.-])(?:[a-z][a-z0-9+.-]{1,15}://|www\.)[^\s<>\"']+", re.IGNORECASE)

_EMAIL = re.compile(
    r"(?<![\w.%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)

_SECRET_PREFIXED = re.compile(
    r"(?<![\w-])(?:"
    r"[MNO][A-Za-z\d_-]{23,27}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,40}"  # Discord bot token
    r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style keys
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JSON web token
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"  # SendGrid
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|npm_[A-Za-z0-9]{36,}"  # npm
    r")(?![\w-])"
)
_TELEGRAM_TOKEN = re.compile(r"(?<!\d)\d{8,10}:[A-Za-z0-9_-]{35}(?![\w-])")
_SECRET_HEX = re.compile(r"(?<![\w+/=-])(?:[0-9a-f]{32,}|[0-9A-F]{32,})(?![\w+/=-])")
_SECRET_B64 = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![\w+/=-])")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_-]{20,}")

_FILE_EXTENSIONS = frozenset(
    ["png", "jpg", "jpeg", "gif", "webp", "svg", "pdf", "txt", "zip", "gz", "tar", "json", "js", "ts", "py",
     "css", "html", "md", "mp3", "mp4", "mov", "wav", "heic", "docx", "xlsx", "csv", "exe", "apk"]
)  # fmt: skip


def _iter_email(text: str) -> Iterator[PiiSpan]:
    for m in _EMAIL.finditer(text):
        if m.group().rpartition(".")[2].casefold() in _FILE_EXTENSIONS:
            continue  # icon@2x.png
        if m.group().casefold().startswith("git@") and text.startswith(":", m.end()):
            continue  # an SSH remote, git@github.com:org/repo.git
        yield PiiSpan(m.start(), m.end(), "EMAIL")


# Card: contiguous 13-19 digits, or card groupings with one separator style.
_CARD = re.compile(
    r"(?<![\w#@:/.,+-])(?<![\d][ -])"
    r"(?:[2-6]\d{12,18}"
    r"|[2-6]\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"
    r"|3\d{3}([ -])\d{6}\2\d{4,5})"
    r"(?![\w]|[.,/:-]\d|[ -]\d)"
)

_IBAN = re.compile(r"(?<![\w#/-])([A-Z]{2})(\d{2})((?: ?[A-Z0-9]){10,30})")

# Registered IBAN lengths (ISO 13616 registry).
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?<!\d\.){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::\d{1,3}(?:\.\d{1,3}){3})?(?![\w:.])"
)

_PHONE_END = r"(?![\w]|[.,:/-]?\d)"
_PHONE_INTL = re.compile(
    r"(?<![\w+#/=.-])(?<!\d[ .-])(?:\+|00(?=[1-9]))[1-9]\d{0,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d++){1,6}"
    + _PHONE_END
)
_PHONE_NANP = re.compile(
    r"(?<![\w#/=.,+:-])(?<!\d[ .-])(?:1[ .-]?)?(?:\([2-9]\d{2}\) ?\d{3}[ .-]\d{4}|[2-9]\d{2}([ .-])\d{3}\1\d{4})"
    + _PHONE_END
)
_PHONE_TRUNK = re.compile(
    r"(?<![\w#/=.,+:-])(?<!\d[ .-])(?:0[1-9]\d{8,10}|0[1-9]\d{0,4}([ .-])\d{2,8}(?:\1\d{2,4}){0,3})"
    + _PHONE_END
)
# Any run of digits, "(area)" groups and single separators; taken only next to a phone word (see _iter_phone).
_PHONE_CUED = re.compile(
    r"(?<![\w#/=.,+:-])(?:\(\d{1,4}\) ?|\d)(?:[ ./-]?(?:\(\d{1,4}\) ?|\d))*+" + _PHONE_END
)
_SEPARATORS = re.compile(r"[ .()-]")
_DIGIT_GROUPS = re.compile(r"\d+")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _count_digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def _class_changes(token: str) -> float:
    """Share of neighbouring characters that change class (upper/lower/digit/other): ~0.6 for random
    base64, ~0.3 for words glued with dashes or camel case."""

    def cls(ch: str) -> int:
        if ch.isupper():
            return 0
        if ch.islower():
            return 1
        if ch.isdigit():
            return 2
        return 3

    changes = 0
    prev = cls(token[0])
    for ch in token[1:]:
        c = cls(ch)
        if c != prev:
            changes += 1
        prev = c
    return changes / (len(token) - 1)


def _looks_like_hash(token: str) -> bool:
    return any(c.isdigit() for c in token) and not token.isdigit() and len(set(token)) >= 8


def _looks_random(token: str) -> bool:
    body = token.rstrip("=")
    has_upper = any(c.isupper() for c in body)
    has_lower = any(c.islower() for c in body)
    has_digit = any(c.isdigit() for c in body)
    return has_upper and has_lower and has_digit and _class_changes(body) >= 0.4


def _mark(spans: Iterator[tuple[int, int]], size: int) -> bytearray:
    marks = bytearray(size)
    for start, end in spans:
        marks[start:end] = b"\x01" * (end - start)
    return marks


def _iter_secret(text: str, urls: bytearray | None) -> Iterator[PiiSpan]:
    for m in _SECRET_PREFIXED.finditer(text):
        yield PiiSpan(m.start(), m.end(), "SECRET")
    for m in _TELEGRAM_TOKEN.finditer(text):
        yield PiiSpan(m.start(), m.end(), "SECRET")
    for m in _SECRET_HEX.finditer(text):
        if _looks_like_hash(m.group()) and not inside(urls, m.start(), m.end()) and _hex_secret(text, m):
            yield PiiSpan(m.start(), m.end(), "SECRET")
    for m in _SECRET_B64.finditer(text):
        if (
            not inside(urls, m.start(), m.end())
            and _looks_random(m.group())
            and not (m.group().startswith("AAAA") and cue_before(PUBLIC_KEY_CUES, text, m.start()))
            and (cue_before(SECRET_CUES, text, m.start()) or not cue_before(HASH_CUES, text, m.start()))
        ):
            yield PiiSpan(m.start(), m.end(), "SECRET")


def _hex_secret(text: str, m: re.Match[str]) -> bool:
    """A hex run is a key unless it is a digest: 40 or 64 characters (git commit ids, sha1, sha256) or after
    a hash word; a key word before it (key, token, secret, ...) makes it a key whatever its length."""
    if cue_before(SECRET_CUES, text, m.start()):
        return True
    return len(m.group()) not in (40, 64) and not cue_before(HASH_CUES, text, m.start())


def _iter_iban(text: str) -> Iterator[PiiSpan]:
    for m in _IBAN.finditer(text):
        country = m.group(1)
        length = _IBAN_LENGTHS.get(country)
        if length is None:
            continue
        # Take exactly the registered number of characters; what follows is not part of the IBAN.
        need = length - 4
        pos = m.start(3)
        end = m.end(3)
        taken = 0
        while pos < end and taken < need:
            if text[pos] != " ":
                taken += 1
            pos += 1
        if taken < need or (pos < len(text) and text[pos].isalnum()):
            continue
        compact = text[m.start() : pos].replace(" ", "")
        if _iban_ok(compact):
            yield PiiSpan(m.start(), pos, "IBAN")


def _iter_card(text: str, urls: bytearray | None) -> Iterator[PiiSpan]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits) and not inside(urls, m.start(), m.end()):
            yield PiiSpan(m.start(), m.end(), "CARD")


_NETMASK_OCTETS = frozenset({"0", "128", "192", "224", "240", "248", "252", "254", "255"})


def _iter_ipv4(text: str) -> Iterator[PiiSpan]:
    for m in _IPV4.finditer(text):
        octets = m.group().split(".")
        if octets[0] == "255" and all(o in _NETMASK_OCTETS for o in octets):
            continue  # a subnet mask (255.255.255.0), not a host
        yield PiiSpan(m.start(), m.end(), "IP")


def _iter_ipv6(text: str) -> Iterator[PiiSpan]:
    for m in _IPV6.finditer(text):
        candidate = m.group()
        if len(candidate) < 6 or sum(1 for part in candidate.split(":") if part) < 2:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield PiiSpan(m.start(), m.end(), "IP")


def _iter_phone(text: str, urls: bytearray | None) -> Iterator[PiiSpan]:
    for m in _PHONE_INTL.finditer(text):
        raw = m.group()
        if raw.startswith("00") and _SEPARATORS.search(raw) is None:
            continue  # a bare 00-number is more likely an order number than a dialled one
        digits = _count_digits(raw) - (2 if raw.startswith("00") else 0)
        if 8 <= digits <= 15 and not inside(urls, m.start(), m.end()):
            yield PiiSpan(m.start(), m.end(), "PHONE")
    for m in _PHONE_NANP.finditer(text):
        if not inside(urls, m.start(), m.end()):
            yield PiiSpan(m.start(), m.end(), "PHONE")
    for m in _PHONE_TRUNK.finditer(text):
        if 10 <= _count_digits(m.group()) <= 12 and not inside(urls, m.start(), m.end()):
            yield PiiSpan(m.start(), m.end(), "PHONE")
    for m in _PHONE_CUED.finditer(text):
        start, end = m.start(), m.end()
        groups = _DIGIT_GROUPS.findall(m.group())
        if (
            9 <= _count_digits(m.group()) <= 13
            and all(len(group) >= 2 for group in groups[1:])  # "4 8 15 16 23 42" is not a number to call
            and not inside(urls, start, end)
            and _phone_cue_around(text, start, end)
        ):
            yield PiiSpan(start, end, "PHONE")


def _phone_cue_around(text: str, start: int, end: int) -> bool:
    """A word saying "phone" just before or after (`call me`, `whatsapp`, `to mój nowy numer`), and none saying
    order, invoice, tracking or meeting number."""
    before, after = start - CUE_WINDOW, end + CUE_WINDOW_AFTER
    if "#" in text[max(0, before) : after] or NOT_PHONE_CUES.in_text(text, before, after):
        return False
    return PHONE_CUES.in_text(text, before, start) or PHONE_CUES.in_text(text, end, after)


# --- the user's own list: names, addresses, places ------------------------------------------------------------

REDACT_FILE_MAX_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Redactions:
    """Words and phrases the user lists (`--redact`, `--redact-file`): names and addresses, which no pattern
    can tell from ordinary words. Matched as whole words, case-insensitively; an entry of several words
    matches them in order whatever stands between them ("221B Baker Street" also in "221b baker-street")."""

    by_first_word: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[str]) -> Redactions:
        phrases: dict[str, set[tuple[str, ...]]] = {}
        for entry in entries:
            words = tuple(w.casefold() for w in pii_context.WORDS.findall(entry))
            if words:
                phrases.setdefault(words[0], set()).add(words)
        # the longest phrase first, so "Anna Maria Lopez" wins over "Anna"
        return cls({first: tuple(sorted(found, key=len, reverse=True)) for first, found in phrases.items()})

    @classmethod
    def read(cls, entries: Iterable[str], files: Iterable[Path]) -> Redactions:
        """Entries given one by one plus those in `files` (one per line; `#` starts a comment line)."""
        listed = list(entries)
        for path in files:
            try:
                with open(path, "rb") as fh:
                    data = fh.read(REDACT_FILE_MAX_BYTES + 1)
            except OSError as exc:
                raise TwinbotError(
                    f"cannot read the redact file ({exc.strerror}); check the path", path
                ) from exc
            if len(data) > REDACT_FILE_MAX_BYTES:
                raise TwinbotError(
                    "the redact file is over 1 MB; list names and addresses, one per line", path
                )
            lines = data.decode("utf-8-sig", errors="replace").splitlines()
            listed.extend(line for line in lines if line.strip() and not line.lstrip().startswith("#"))
        return cls.of(listed)

    def __bool__(self) -> bool:
        return bool(self.by_first_word)

    def spans(self, text: str) -> Iterator[PiiSpan]:
        words = [(m.group().casefold(), m.start(), m.end()) for m in pii_context.WORDS.finditer(text)]
        for index, (word, start, _) in enumerate(words):
            for phrase in self.by_first_word.get(word, ()):
                following = words[index : index + len(phrase)]
                if tuple(w for w, _, _ in following) == phrase:
                    yield PiiSpan(start, following[-1][2], "REDACTED")
                    break


def find_pii(text: str, redactions: Redactions | None = None) -> list[PiiSpan]:
    """Non-overlapping PII spans in `text`, in order; with `redactions`, the user's listed words too."""
    found = _pattern_spans(text)
    if redactions:
        found.extend(redactions.spans(text))
    return _without_overlaps(found, len(text))


def _pattern_spans(text: str) -> list[PiiSpan]:
    has_at = "@" in text
    # Digit patterns need a minimum number of digits: phones, IBANs 8+, cards 13+, IPv4 4 plus 3 dots.
    digits = 0 if _ANY_DIGIT.search(text) is None else len(text) - len(text.translate(_DROP_ASCII_DIGITS))
    has_digit = digits >= 4
    long_enough = len(text) >= 20 and _LONG_RUN.search(text) is not None
    maybe_ipv6 = "::" in text or text.count(":") >= 7
    words = pii_context.WORD_HINT.search(text.lower()) is not None
    if not (has_at or has_digit or long_enough or maybe_ipv6 or words):
        return []
    url_spans = (
        [m.span() for m in _URL.finditer(text)] if "://" in text or "www." in text or "WWW." in text else []
    )
    urls = _mark(iter(url_spans), len(text)) if url_spans else None
    found: list[PiiSpan] = []
    for start, end in url_spans:
        found.extend(iter_url_secrets(text, start, end))
    if long_enough:
        found.extend(_iter_secret(text, urls))
    if has_at:
        found.extend(_iter_email(text))
    if words or has_at:
        found.extend(iter_spelled_email(text))
    if words:
        found.extend(iter_password(text))
    if maybe_ipv6:
        found.extend(_iter_ipv6(text))
    if digits >= 8:
        found.extend(_iter_iban(text))
        found.extend(_iter_phone(text, urls))
        found.extend(iter_ssn(text, urls))
        if digits >= 13:
            found.extend(_iter_card(text, urls))
    if has_digit and text.count(".") >= 3:
        found.extend(_iter_ipv4(text))
    return found


def _without_overlaps(found: list[PiiSpan], size: int) -> list[PiiSpan]:
    if len(found) <= 1:
        return found
    # Overlaps: the lower rank wins, then the longer span. Each span is checked against the characters
    # already taken, so resolving costs the total length of the matches, not their count squared.
    found.sort(key=lambda s: (_RANK[s.type], -(s.end - s.start), s.start))
    taken = bytearray(size)
    chosen: list[PiiSpan] = []
    for span in found:
        if taken.find(1, span.start, span.end) < 0:
            chosen.append(span)
            taken[span.start : span.end] = b"\x01" * (span.end - span.start)
    chosen.sort(key=lambda s: s.start)
    return chosen


@dataclass(slots=True)
class Scrubber:
    """Replaces PII (`patterns`) and the user's listed words (`redactions`) with typed placeholders, and
    keeps a running count per type."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_TYPES, 0))
    patterns: bool = True
    redactions: Redactions | None = None

    def scrub(self, text: str) -> str:
        if self.patterns:
            spans = find_pii(text, self.redactions)
        elif self.redactions:
            spans = _without_overlaps(list(self.redactions.spans(text)), len(text))
        else:
            return text
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for span in spans:
            parts.append(text[pos : span.start])
            parts.append(f"<{span.type}>")
            self.counts[span.type] += 1
            pos = span.end
        parts.append(text[pos:])
        return "".join(parts)
