"""Style fingerprints of chat replies, the style distance between two sets of replies, and memorisation
checks.

A reply is one persona turn as `prepare` writes it: the messages of a burst joined with "\\n". Every metric
here is deterministic and pure (no model, no randomness). Definitions: docs/eval.md.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

# Histogram bins (upper bounds, inclusive; the last bin takes everything above).
CHAR_BINS = (5, 10, 20, 40, 80, 160, 320)  # characters per message
BURST_BINS = (1, 2, 3, 4, 6)  # messages per reply
TOP_K = 10
# A generated reply sharing this many consecutive words with a training reply is a long overlap.
MEMO_NGRAM = 8
MIN_VERBATIM_WORDS = 4  # shorter replies ("lol", "ok") match training replies by chance, not by memorising

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_PLACEHOLDER = re.compile(r"<(?:EMAIL|PHONE|CARD|IBAN|IP|SECRET|URL|NAME|PERSON|ADDRESS)>")
CANARY = re.compile(r"twinbot-canary-[a-z0-9]+", re.IGNORECASE)
_PUNCTUATION = frozenset("!?.,;:…'\"()-")
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # emoticons, pictographs, transport, supplemental symbols (💀 🫠 ...)
    (0x2600, 0x27BF),  # misc symbols and dingbats (✨ ☕ ❤ ...)
    (0x2B00, 0x2BFF),  # arrows/stars used as emoji (⭐ ⬆)
)


def is_emoji(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _EMOJI_RANGES)


def messages_of(reply: str) -> list[str]:
    """The messages of a burst (non-empty lines)."""
    return [line.strip() for line in reply.split("\n") if line.strip()]


def words_of(text: str) -> list[str]:
    """Lowercased words (letters/digits, inner apostrophes kept: "don't" is one word)."""
    return _WORD.findall(text.casefold())


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def histogram(values: Iterable[int], bins: Sequence[int]) -> list[float]:
    """Share of values per bin: value <= bins[0], ..., <= bins[-1], > bins[-1]. All zeros when empty."""
    counts = [0] * (len(bins) + 1)
    for value in values:
        index = next((i for i, upper in enumerate(bins) if value <= upper), len(bins))
        counts[index] += 1
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits, in [0, 1]; two empty (all-zero) distributions are 0 apart."""
    if len(p) != len(q):
        raise ValueError("distributions of different lengths")
    p_total, q_total = sum(p), sum(q)
    if p_total == 0 and q_total == 0:
        return 0.0
    if p_total == 0 or q_total == 0:
        return 1.0
    p = [x / p_total for x in p]
    q = [x / q_total for x in q]

    def kl(a: Sequence[float], m: Sequence[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0)

    middle = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    return min(1.0, max(0.0, (kl(p, middle) + kl(q, middle)) / 2))


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over every reply's words (0 when there are none)."""
    grams = [g for reply in replies for g in ngrams(words_of(reply), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


# --- repetition: what small models do ------------------------------------------------------------------------


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def reply_distinct_n(replies: Sequence[str], n: int) -> float:
    """Mean over replies of distinct n-grams / n-grams *within* the reply ("lol lol lol lol": 0.25), over the
    replies with at least n words; 1 (nothing repeated) when there are none."""
    shares = []
    for reply in replies:
        grams = ngrams(words_of(reply), n)
        if grams:
            shares.append(len(set(grams)) / len(grams))
    return sum(shares) / len(shares) if shares else 1.0


def duplicate_reply_rate(replies: Sequence[str]) -> float:
    """Share of replies whose text (ignoring case and whitespace) is also another reply of the set: the same
    answer given to different contexts."""
    counts = Counter(normalize(r) for r in replies)
    return sum(1 for r in replies if counts[normalize(r)] > 1) / len(replies) if replies else 0.0


def longest_line_run(reply: str) -> int:
    """The longest run of consecutive identical messages (lines, ignoring case and whitespace) in a reply:
    1 when no line repeats the one before it, 0 for an empty reply."""
    longest, run, previous = 0, 0, None
    for message in messages_of(reply):
        key = normalize(message)
        run = run + 1 if key == previous else 1
        longest, previous = max(longest, run), key
    return longest


@dataclass(frozen=True)
class StyleFingerprint:
    """Measured style of a set of replies. Rates are shares of messages (a burst has several), in [0, 1]."""

    replies: int
    messages: int
    mean_chars: float  # characters per message (code points)
    mean_words: float  # words per message
    mean_messages: float  # messages per reply (burst size)
    lowercase_rate: float  # messages with letters and no uppercase letter
    period_end_rate: float  # messages ending with "."
    question_rate: float  # messages containing "?"
    exclamation_rate: float  # messages containing "!"
    punctuation_rate: float  # punctuation characters per character
    emoji_rate: float  # messages containing an emoji
    emoji_per_message: float
    distinct_1: float
    distinct_2: float
    char_histogram: list[float]  # over CHAR_BINS
    burst_histogram: list[float]  # over BURST_BINS
    # repetition (reported, not in the style distance): mean distinct 1-/2-grams within a reply, share of
    # replies identical to another reply, longest run of identical consecutive lines in any reply
    reply_distinct_1: float
    reply_distinct_2: float
    duplicate_reply_rate: float
    longest_line_run: int
    top_emoji: list[tuple[str, int]] = field(default_factory=list)
    top_phrases: list[tuple[str, int]] = field(default_factory=list)  # word 2- and 3-grams seen 2+ times
    emoji_counts: dict[str, int] = field(default_factory=dict)
    vocabulary: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, object]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("vocabulary", "emoji_counts")}
        data["vocabulary_size"] = len(self.vocabulary)
        data["top_emoji"] = [list(item) for item in self.top_emoji]
        data["top_phrases"] = [list(item) for item in self.top_phrases]
        return data


def fingerprint(replies: Sequence[str]) -> StyleFingerprint:
    messages = [m for reply in replies for m in messages_of(reply)]
    words_per_message = [words_of(m) for m in messages]
    chars = sum(len(m) for m in messages)
    emoji = Counter(ch for m in messages for ch in m if is_emoji(ch))
    phrases: Counter[str] = Counter()
    for words in words_per_message:
        for n in (2, 3):
            phrases.update(" ".join(g) for g in ngrams(words, n))

    def share(predicate: Callable[[str], bool]) -> float:
        return sum(1 for m in messages if predicate(m)) / len(messages) if messages else 0.0

    def lowercase(m: str) -> bool:
        letters = [ch for ch in m if ch.isalpha()]
        return bool(letters) and not any(ch.isupper() for ch in letters)

    non_empty = [r for r in replies if messages_of(r)]
    return StyleFingerprint(
        replies=len(replies),
        messages=len(messages),
        mean_chars=chars / len(messages) if messages else 0.0,
        mean_words=sum(map(len, words_per_message)) / len(messages) if messages else 0.0,
        mean_messages=len(messages) / len(replies) if replies else 0.0,
        lowercase_rate=share(lowercase),
        period_end_rate=share(lambda m: m.endswith(".") and not m.endswith("..")),
        question_rate=share(lambda m: "?" in m),
        exclamation_rate=share(lambda m: "!" in m),
        punctuation_rate=sum(1 for m in messages for ch in m if is_punctuation(ch)) / chars if chars else 0.0,
        emoji_rate=share(lambda m: any(is_emoji(ch) for ch in m)),
        emoji_per_message=sum(emoji.values()) / len(messages) if messages else 0.0,
        distinct_1=distinct_n(replies, 1),
        distinct_2=distinct_n(replies, 2),
        char_histogram=histogram((len(m) for m in messages), CHAR_BINS),
        burst_histogram=histogram((len(messages_of(r)) for r in non_empty), BURST_BINS),
        reply_distinct_1=reply_distinct_n(replies, 1),
        reply_distinct_2=reply_distinct_n(replies, 2),
        duplicate_reply_rate=duplicate_reply_rate(replies),
        longest_line_run=max((longest_line_run(r) for r in replies), default=0),
        top_emoji=sorted(emoji.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_K],
        top_phrases=sorted(((p, c) for p, c in phrases.items() if c >= 2), key=lambda kv: (-kv[1], kv[0]))[
            :TOP_K
        ],
        emoji_counts=dict(emoji),
        vocabulary=frozenset(w for words in words_per_message for w in words),
    )


def is_punctuation(char: str) -> bool:
    return char in _PUNCTUATION or unicodedata.category(char).startswith("P")


def vocabulary_overlap(real: StyleFingerprint, generated: StyleFingerprint) -> float:
    """Share of the generated replies' distinct words that the person also uses in the real replies."""
    if not generated.vocabulary:
        return 0.0
    return len(generated.vocabulary & real.vocabulary) / len(generated.vocabulary)


# --- style distance ---------------------------------------------------------------------------------------

RATE_FEATURES = (
    "lowercase_rate",
    "period_end_rate",
    "question_rate",
    "exclamation_rate",
    "punctuation_rate",
    "emoji_rate",
    "distinct_1",
    "distinct_2",
)
SCALED_FEATURES = ("mean_chars", "mean_words", "mean_messages", "emoji_per_message")


@dataclass(frozen=True)
class FeatureGap:
    feature: str
    real: float | None  # None for the divergence features
    generated: float | None
    gap: float  # in [0, 1]


@dataclass(frozen=True)
class StyleDistance:
    """Mean of the per-feature gaps, in [0, 1]; 0 = the same measured style. See docs/eval.md."""

    score: float
    gaps: list[FeatureGap]
    vocabulary_overlap: float


def relative_gap(real: float, generated: float) -> float:
    """|r - g| / max(r, g): 0 when equal, 1 when one side is 0 and the other is not."""
    largest = max(abs(real), abs(generated))
    return abs(real - generated) / largest if largest else 0.0


def style_distance(real: StyleFingerprint, generated: StyleFingerprint) -> StyleDistance:
    gaps: list[FeatureGap] = []
    for name in RATE_FEATURES:
        r, g = float(getattr(real, name)), float(getattr(generated, name))
        gaps.append(FeatureGap(name, r, g, min(1.0, abs(r - g))))
    for name in SCALED_FEATURES:
        r, g = float(getattr(real, name)), float(getattr(generated, name))
        gaps.append(FeatureGap(name, r, g, relative_gap(r, g)))
    gaps.append(
        FeatureGap(
            "chars_histogram_jsd", None, None, js_divergence(real.char_histogram, generated.char_histogram)
        )
    )
    gaps.append(
        FeatureGap(
            "burst_histogram_jsd", None, None, js_divergence(real.burst_histogram, generated.burst_histogram)
        )
    )
    emoji = sorted(real.emoji_counts.keys() | generated.emoji_counts.keys())
    gaps.append(
        FeatureGap(
            "emoji_jsd",
            None,
            None,
            js_divergence(
                [real.emoji_counts.get(e, 0) for e in emoji],
                [generated.emoji_counts.get(e, 0) for e in emoji],
            ),
        )
    )
    score = sum(gap.gap for gap in gaps) / len(gaps)
    return StyleDistance(round(score, 6), gaps, vocabulary_overlap(real, generated))


# --- memorisation -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memorisation:
    replies: int
    verbatim: int  # equal (case/whitespace-insensitive) to a training reply of MIN_VERBATIM_WORDS+ words
    long_overlap: int  # share a MEMO_NGRAM-word run with a training reply
    memorised_share: float  # replies with either, / replies
    placeholders: int  # replies containing a scrubbed-PII placeholder such as <EMAIL>
    canaries_found: list[str]  # canaries (planted strings) that came back in a reply


class TrainingIndex:
    """The training replies, indexed for verbatim and long n-gram lookups."""

    def __init__(self, training_replies: Iterable[str], n: int = MEMO_NGRAM) -> None:
        self.n = n
        self.exact: set[str] = set()
        self.grams: set[tuple[str, ...]] = set()
        for reply in training_replies:
            words = words_of(reply)
            if len(words) >= MIN_VERBATIM_WORDS:
                self.exact.add(normalize(reply))
            self.grams.update(ngrams(words, n))

    def is_verbatim(self, reply: str) -> bool:
        return len(words_of(reply)) >= MIN_VERBATIM_WORDS and normalize(reply) in self.exact

    def has_long_overlap(self, reply: str) -> bool:
        return any(g in self.grams for g in ngrams(words_of(reply), self.n))


def find_canaries(texts: Iterable[str]) -> set[str]:
    """Planted canaries in the data: strings like `twinbot-canary-7f3a9c` (docs/eval.md)."""
    return {match.casefold() for text in texts for match in CANARY.findall(text)}


def memorisation(generated: Sequence[str], index: TrainingIndex, canaries: Iterable[str]) -> Memorisation:
    verbatim = [index.is_verbatim(r) for r in generated]
    overlap = [index.has_long_overlap(r) for r in generated]
    memorised = sum(1 for v, o in zip(verbatim, overlap, strict=True) if v or o)
    wanted = sorted({c for c in canaries if c})
    found = [c for c in wanted if any(c.casefold() in r.casefold() for r in generated)]
    return Memorisation(
        replies=len(generated),
        verbatim=sum(verbatim),
        long_overlap=sum(overlap),
        memorised_share=memorised / len(generated) if generated else 0.0,
        placeholders=sum(1 for r in generated if _PLACEHOLDER.search(r)),
        canaries_found=found,
    )
