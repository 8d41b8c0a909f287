"""PII found through the words around it: passwords stated in chat, credentials in links and pasted
config lines, spelled-out email addresses, US social security numbers, and the cue words that confirm a
candidate ("call me", "ssn", "token") or veto it ("order number", "sha256"). `twinbot.data.scrub` runs
these next to its pattern detectors and resolves overlaps; the placeholder types are defined here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

PiiType = Literal["EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET", "REDACTED"]
PII_TYPES: tuple[PiiType, ...] = ("EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET", "REDACTED")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    start: int
    end: int
    type: PiiType


def inside(urls: bytearray | None, start: int, end: int) -> bool:
    """Whether [start, end) touches a URL; `urls` marks URL characters with 1 (None: no URL in the text).
    The cost is the span's length, so checking every match of a line stays linear in the line."""
    return urls is not None and urls.find(1, start, end) >= 0


# --- cue words: what the words just before a candidate say it is ----------------------------------------

CUE_WINDOW = 48  # characters before a candidate searched for cue words
CUE_WINDOW_AFTER = 32
WORDS = re.compile(r"\w+")  # also the word splitter of scrub's redactions


@dataclass(frozen=True, slots=True)
class Cues:
    """Words that say what a candidate is. A window of text has the cue when one of its lower-cased words
    is in `words`, starts with one of `prefixes`, ends with one of `suffixes` or contains one of
    `substrings`. Word checks, not one big regex: a regex of fifty alternatives tries each of them at
    every position (tens of microseconds per window), and phone candidates each check two windows."""

    prefixes: tuple[str, ...] = ()
    words: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    substrings: tuple[str, ...] = ()

    def in_text(self, text: str, start: int, end: int) -> bool:
        for word in WORDS.findall(text[max(0, start) : end].lower()):
            if word.isdigit():
                continue
            if word in self.words or word.startswith(self.prefixes) or word.endswith(self.suffixes):
                return True
            if self.substrings and any(part in word for part in self.substrings):
                return True
        return False


SECRET_CUES = Cues(
    words=frozenset(["pass", "pw", "pwd", "clé", "cle"]),
    substrings=(
        "key", "token", "secret", "passw", "auth", "bearer", "credential", "clave", "chave", "schlüssel",
        "schluessel", "chiave", "sleutel", "ключ", "токен", "anahtar", "klucz", "kunci",
    ),
)  # fmt: skip
HASH_CUES = Cues(
    prefixes=("rev",),
    words=frozenset(["git"]),
    substrings=("sha", "md5", "commit", "hash", "checksum", "digest", "blob", "merge", "cherry", "build"),
)
PHONE_CUES = Cues(
    prefixes=(
        "call", "text", "phone", "tel", "cell", "mobile", "number", "ring", "whats", "sms", "reach", "contact",
        "dial", "zap", "num", "núm", "llam", "llám", "movil", "móvil", "fijo", "ligu", "liga", "anruf", "handy",
        "festnetz", "appel", "portable", "chiam", "cellul", "звон", "номер", "телеф", "aray", "zadzwo",
        "hubungi", "nomor",
    ),
    words=frozenset(["nr", "wa", "pix", "bel", "ruf", "ara"]),
    suffixes=("nummer", "number", "numer", "numero", "número", "nr"),
)  # fmt: skip
NOT_PHONE_CUES = Cues(
    prefixes=(
        "order", "invoice", "tracking", "ticket", "ref", "account", "acct", "iban", "pedido", "bestel",
        "commande", "ordine", "заказ", "sipari", "zamówien", "zamowien", "pesanan", "rechnung", "factura",
        "fattura", "fiscal", "meeting", "zoom", "isbn", "serial", "serie", "imei", "pnr", "booking", "auftrag",
        "sendung", "kunden", "artikel",
    ),
    words=frozenset(["id"]),
)  # fmt: skip
SSN_CUES = Cues(substrings=("ssn", "social", "seguro"))
PUBLIC_KEY_CUES = Cues(words=frozenset(["ssh"]), prefixes=("ecdsa",))


def cue_before(cues: Cues, text: str, start: int) -> bool:
    return cues.in_text(text, start - CUE_WINDOW, start)


# Cheap pre-check for the detectors that start from a word (passwords, spelled-out addresses, config lines),
# run on the lower-cased text: a case-sensitive alternation of literals is several times faster.
WORD_HINT = re.compile(
    r"pass|pw|contrase|clave|senha|mdp|parola|wachtwoord|пароль|ifre|hasło|haslo|sandi|key|token|secret|senord"
    r"|adgangskode|salasana|heslo|jelsz| at |arroba|arobase|chiocciola| ät |małpa|malpa|собака|apenstaartje"
    r"|\[at|\(at|\{at|<at|\[ at|\( at"
)  # literals only: the regex engine skips ahead fastest on them


# --- passwords stated in chat ----------------------------------------------------------------------------

_PASSWORD_WORDS = (
    r"passwords?|passwort|kennwort|passwd|passcode|pass|pwd|pw|contrase[ñn]a|clave|senha|mot de passe|mdp"
    r"|parola d'ordine|parola|wachtwoord|пароль|[şs]ifre(?:si|m)?|has[łl]o|kata sandi|sandi|l[öo]senord(?:et)?"
    r"|passord(?:et)?|adgangskode(?:n)?|salasana|heslo|jelsz[óo]"
)
# A password's characters; it does not end in sentence punctuation ("pw: abc123." is abc123), and a password
# after an "is" word or a bare space must look like one (a digit, a symbol or an inner capital): the regex
# checks that itself, so "pw is Tr0ub4dor&3 (dont change it)" is not taken as "(dont".
_VALUE_CHARS = r"[^\s\"'”»’`]"
_VALUE = rf"{_VALUE_CHARS}{{3,64}}(?<![.,;:)])(?=[.,;:)]{{0,3}}(?:[\s\"'”»’`]|$))"
_STRONG = rf"(?={_VALUE_CHARS}{{0,63}}?(?:\d|[^\w\s\"'”»’`.,;:)]|_|(?-i:[a-z][A-Z])))"
# cue, up to three short words ("contraseña del wifi"), then ":" / "=" / an "is" word / a space, then the value
_PASSWORD = re.compile(
    rf"(?<!\w)(?:{_PASSWORD_WORDS})(?:nya)?(?:\s{{1,3}}[^\s:=]{{1,12}}){{0,3}}?"
    rf"(?:\s{{0,3}}[:=]\s{{0,3}}[\"'“«‘`]?(?P<after_mark>{_VALUE})"
    r"|(?P<is>\s{1,3}(?:is|ist|lautet|es|est|é|è|e|era|was|jest|to|adalah|yaitu|это|[—–-])(?:\s{0,3}:)?)?"
    rf"\s{{1,3}}[\"'“«‘`]?{_STRONG}(?P<after_word>{_VALUE}))",
    re.IGNORECASE,
)
# configuration lines pasted into chat: SECRET_KEY = '...', api_key: ..., DB_PASSWORD=...
_ASSIGNED_SECRET = re.compile(
    r"(?<![\w-])(?:[A-Za-z0-9]+_)*(?:secret|token|api_?key|key|password|passwd|pwd|pass)(?:_[A-Za-z0-9]+)*"
    r"\s{0,3}[:=]\s{0,3}[\"'`]?(?P<value>[^\s\"'`]{8,200})",
    re.IGNORECASE,
)


def _is_placeholder(value: str) -> bool:
    """A variable or template standing for the secret: ${DB_PASSWORD}, {{ token }}, <your-key>, %PASS%."""
    return value.startswith(("${", "{{", "<", "%", "$(")) or value.endswith(("}", ">"))


def iter_password(text: str) -> Iterator[PiiSpan]:
    for m in _PASSWORD.finditer(text):
        group = "after_mark" if m.group("after_mark") is not None else "after_word"
        value = m.group(group)
        if value.casefold().startswith(("http", "www.")) or _is_placeholder(value):
            continue  # "reset link: https://..." (its tokens are checked as a URL), "password: ${DB_PASSWORD}"
        if value.isdigit() and m.group("is") is None and group == "after_word":
            continue  # "mot de passe doit contenir 12 caractères": a bare number needs "is" or ":"
        yield PiiSpan(m.start(group), m.end(group), "SECRET")
    for m in _ASSIGNED_SECRET.finditer(text):
        value = m.group("value").rstrip(".,;:)")
        if (
            len(value) >= 8
            and not value.casefold().startswith(("http", "www.", "ssh-", "ecdsa-", "sk-ssh"))
            and not _is_placeholder(value)
        ):
            yield PiiSpan(m.start("value"), m.start("value") + len(value), "SECRET")


# --- credentials inside URLs --------------------------------------------------------------------------------

_URL_SECRET_KEYS = re.compile(
    r"token|secret|passw|^pwd?$|^pass$|key|sig|auth|credential|^code$|session|^sid$|jwt|otp|nonce|hash",
    re.IGNORECASE,
)
# path segments after which the next long segment is a token: reset and verification links, webhooks
_URL_SECRET_PATHS = frozenset(
    [
        "reset",
        "reset-password",
        "password-reset",
        "reset_password",
        "resetpassword",
        "password",
        "token",
        "tokens",
        "verify",
        "verification",
        "confirm",
        "confirmation",
        "activate",
        "activation",
        "magic",
        "magic-link",
        "login",
        "auth",
        "invite",
        "invitation",
        "webhooks",
        "unsubscribe",
    ]
)
_MIN_URL_SECRET = 6  # a query value
_MIN_PATH_SECRET = 16  # a path segment


def iter_url_secrets(text: str, start: int, end: int) -> Iterator[PiiSpan]:
    url = text[start:end].rstrip(".,;:!?)]}")
    scheme_end = url.find("://")
    rest_at = scheme_end + 3 if scheme_end >= 0 else 0
    authority_end = len(url)
    for separator in "/?#":
        found = url.find(separator, rest_at)
        if 0 <= found < authority_end:
            authority_end = found
    authority = url[rest_at:authority_end]
    userinfo, at, host = authority.rpartition("@")
    if at and ":" in userinfo:
        password_at = rest_at + userinfo.index(":") + 1
        if password_at < rest_at + len(userinfo):
            yield PiiSpan(start + password_at, start + rest_at + len(userinfo), "SECRET")
    path_end = min(
        (i for i in (url.find("?", authority_end), url.find("#", authority_end)) if i >= 0), default=len(url)
    )
    yield from _path_secrets(url, start, authority_end, path_end, host.casefold().startswith("hooks."))
    for part_start, part_end in _url_parameters(url, path_end):
        key, equals, value = url[part_start:part_end].partition("=")
        if equals and len(value) >= _MIN_URL_SECRET and _URL_SECRET_KEYS.search(key):
            value_at = part_start + len(key) + 1
            yield PiiSpan(start + value_at, start + part_end, "SECRET")


def _path_secrets(
    url: str, offset: int, path_start: int, path_end: int, hook_host: bool
) -> Iterator[PiiSpan]:
    after_cue = False
    position = path_start + 1
    segments = url[path_start + 1 : path_end].split("/") if path_start < path_end else []
    for number, segment in enumerate(segments):
        last = number == len(segments) - 1
        if (after_cue or (hook_host and last)) and len(segment) >= _MIN_PATH_SECRET and not segment.isdigit():
            yield PiiSpan(offset + position, offset + position + len(segment), "SECRET")
            after_cue = False
        elif segment.casefold() in _URL_SECRET_PATHS:
            after_cue = True
        elif not segment.isdigit():  # ids between the cue and the token (webhooks/<id>/<token>) keep it
            after_cue = False
        position += len(segment) + 1


def _url_parameters(url: str, at: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each `key=value` in the query and the fragment."""
    position = at + 1
    while position < len(url):
        end = position
        while end < len(url) and url[end] not in "&;#?":
            end += 1
        if end > position:
            yield position, end
        position = end + 1


# --- spelled-out email addresses --------------------------------------------------------------------------

_AT_WORDS = r"at|arroba|arobase|chiocciola|ät|ma[łl]pa|собака|apenstaartje"
_DOT_WORDS = r"dot|punto|ponto|point|punkt|punt|nokta|kropka|titik|точка"
_OPEN, _CLOSE = r"[\[\(\{<]", r"[\]\)\}>]"
_TLDS = (
    r"com|net|org|edu|gov|info|biz|io|co|me|de|fr|es|it|nl|be|at|ch|ru|pl|tr|id|br|pt|uk|ie|se|no|dk|fi"
    r"|us|ca|au|mx|ar|cl|jp|in|eu|ua|cz|ro|hu|gr|su|рф"
)
_SPELLED_EMAIL = re.compile(
    r"(?<![\w.+@-])(?P<local>[a-z0-9][a-z0-9._+-]{0,63})"
    rf"(?P<at>\s{{0,3}}{_OPEN}\s{{0,3}}(?:{_AT_WORDS}|@)\s{{0,3}}{_CLOSE}\s{{0,3}}|\s{{1,3}}(?:{_AT_WORDS}|@)\s{{1,3}}"
    r"|@\s{1,3}|\s{1,3}@)"
    rf"(?P<domain>(?:[a-z0-9][a-z0-9-]{{0,62}}(?:\s{{0,3}}{_OPEN}\s{{0,3}}(?:{_DOT_WORDS}|\.)\s{{0,3}}{_CLOSE}\s{{0,3}}"
    rf"|\s{{1,3}}(?:{_DOT_WORDS})\s{{1,3}}|\.))++)(?:{_TLDS})(?![\w.-])",
    re.IGNORECASE,
)
_SPELLED_DOT = re.compile(rf"{_OPEN}|\s(?:{_DOT_WORDS})\s", re.IGNORECASE)
_MAIL_PROVIDERS = frozenset(
    [
        "gmail",
        "googlemail",
        "yahoo",
        "hotmail",
        "outlook",
        "live",
        "msn",
        "aol",
        "icloud",
        "me",
        "proton",
        "protonmail",
        "pm",
        "gmx",
        "web",
        "mail",
        "yandex",
        "orange",
        "free",
        "laposte",
        "libero",
        "virgilio",
        "wp",
        "o2",
        "interia",
        "onet",
        "seznam",
        "ziggo",
        "kpn",
        "telenet",
        "bluewin",
    ]
)


def iter_spelled_email(text: str) -> Iterator[PiiSpan]:
    for m in _SPELLED_EMAIL.finditer(text):
        at, domain = m.group("at").strip(), m.group("domain")
        plain_at = at.casefold() in ("at", "@")
        if plain_at and _SPELLED_DOT.search(domain) is None:
            # "look at example.com" is not an address; "anna at gmail.com" is
            first_label = domain.split(".", 1)[0].casefold()
            if at == "@" or first_label not in _MAIL_PROVIDERS:
                continue
        yield PiiSpan(m.start(), m.end(), "EMAIL")


# --- US social security numbers ------------------------------------------------------------------------------

_SSN = re.compile(
    r"(?<![\w-])(?!000|666|9)\d{3}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}(?![\w-]|[.,]\d)"
)


def iter_ssn(text: str, urls: bytearray | None) -> Iterator[PiiSpan]:
    for m in _SSN.finditer(text):
        if inside(urls, m.start(), m.end()):
            continue
        if m.group("sep") == "-" or cue_before(SSN_CUES, text, m.start()):
            yield PiiSpan(m.start(), m.end(), "SSN")
