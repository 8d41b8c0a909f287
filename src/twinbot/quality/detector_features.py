"""What the twin detector looks at in one reply, besides its character and word n-grams: the things a
person would notice, each a number per reply with the words that say how the twin differs on it.

A reply is a burst (its messages are its non-empty lines, as in `twinbot.quality.style`). `context` is the
other side's turn the reply answers. docs/eval.md lists the features.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twinbot.quality.style import is_emoji, is_punctuation, longest_line_run, messages_of, normalize, words_of

# Too common to show that a reply picked up what was said to it (plus every word under 3 characters).
_STOPWORD_TEXT = (
    "the and for are but not you your yours all any can had has have her him his its our out she they "
    "them this that these those then than what when where who why how was were will with would could "
    "should just about from into onto over some such very too also been being did does doing i'm it's "
    "that's don't dont im its yes yeah yep nah nope lol haha okay"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class ReplyFeature:
    """One interpretable feature: its name, how to read it in words, and how it is measured."""

    name: str
    label: str  # what the number is, for the report: "characters per reply"
    more: str  # the twin scores higher than the person: "longer than yours"
    less: str  # the twin scores lower
    never: str  # the twin scores 0 where the person does not: "uses no emoji" (empty: use `less`)
    measure: Callable[[str, str, int], float]  # (reply, context, copies of the reply in its set) -> value


def _share(messages: Sequence[str], predicate: Callable[[str], bool]) -> float:
    return sum(1 for m in messages if predicate(m)) / len(messages) if messages else 0.0


def _lowercase(message: str) -> bool:
    letters = [ch for ch in message if ch.isalpha()]
    return bool(letters) and not any(ch.isupper() for ch in letters)


def _repeated_words(reply: str) -> float:
    words = words_of(reply)
    return 1 - len(set(words)) / len(words) if words else 0.0


def content_words(text: str) -> set[str]:
    return {w for w in words_of(text) if len(w) >= 3 and w not in STOPWORDS}


def context_overlap(reply: str, context: str) -> float:
    """Share of the reply's content words that the message it answers also uses."""
    words = content_words(reply)
    return len(words & content_words(context)) / len(words) if words else 0.0


def _punctuation_rate(reply: str) -> float:
    characters = "".join(messages_of(reply))
    return sum(1 for ch in characters if is_punctuation(ch)) / len(characters) if characters else 0.0


FEATURES: tuple[ReplyFeature, ...] = (
    ReplyFeature(
        "reply_length",
        "characters per reply",
        "longer than yours",
        "shorter than yours",
        "",
        lambda reply, context, copies: float(sum(len(m) for m in messages_of(reply))),
    ),
    ReplyFeature(
        "messages_per_reply",
        "messages per reply",
        "sends more messages in a row than you",
        "sends fewer messages in a row than you",
        "",
        lambda reply, context, copies: float(len(messages_of(reply))),
    ),
    ReplyFeature(
        "emoji",
        "emoji per reply",
        "uses more emoji than you",
        "uses fewer emoji than you",
        "uses no emoji",
        lambda reply, context, copies: float(sum(1 for ch in reply if is_emoji(ch))),
    ),
    ReplyFeature(
        "questions",
        "share of messages with a question mark",
        "asks more questions than you",
        "asks fewer questions than you",
        "never asks questions",
        lambda reply, context, copies: _share(messages_of(reply), lambda m: "?" in m),
    ),
    ReplyFeature(
        "exclamations",
        "share of messages with an exclamation mark",
        "uses more exclamation marks than you",
        "uses fewer exclamation marks than you",
        "never uses exclamation marks",
        lambda reply, context, copies: _share(messages_of(reply), lambda m: "!" in m),
    ),
    ReplyFeature(
        "full_stops",
        "share of messages ending with a full stop",
        "ends messages with a full stop more often than you",
        "ends messages with a full stop less often than you",
        "never ends a message with a full stop",
        lambda reply, context, copies: _share(
            messages_of(reply), lambda m: m.endswith(".") and not m.endswith("..")
        ),
    ),
    ReplyFeature(
        "punctuation",
        "punctuation characters per character",
        "uses more punctuation than you",
        "uses less punctuation than you",
        "uses no punctuation",
        lambda reply, context, copies: _punctuation_rate(reply),
    ),
    ReplyFeature(
        "lowercase",
        "share of messages all in lowercase",
        "writes all-lowercase more often than you",
        "uses capital letters more often than you",
        "always uses capital letters",
        lambda reply, context, copies: _share(messages_of(reply), _lowercase),
    ),
    ReplyFeature(
        "repeated_words",
        "share of a reply's words that repeat an earlier one",
        "repeats words within a reply",
        "repeats words less than you",
        "",
        lambda reply, context, copies: _repeated_words(reply),
    ),
    ReplyFeature(
        "repeated_lines",
        "lines repeating the line before (longest run - 1)",
        "sends the same line several times in a row",
        "repeats lines less than you",
        "",
        lambda reply, context, copies: float(max(0, longest_line_run(reply) - 1)),
    ),
    ReplyFeature(
        "reused_reply",
        "share of replies also given to another context",
        "gives the same reply to different messages",
        "reuses replies less than you",
        "",
        lambda reply, context, copies: float(copies > 1),
    ),
    ReplyFeature(
        "picks_up_context",
        "share of content words taken from the message answered",
        "echoes the words of the message it answers",
        "picks up less of what was said to it",
        "never picks up a word of what was said to it",
        lambda reply, context, copies: context_overlap(reply, context),
    ),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)


def reply_features(replies: Sequence[str], contexts: Sequence[str]) -> list[list[float]]:
    """One row of FEATURES per reply. `replies` is one side's set (the person's or one model's): a reply's
    copies are counted within its own set."""
    copies = Counter(normalize(r) for r in replies)
    return [
        [feature.measure(reply, context, copies[normalize(reply)]) for feature in FEATURES]
        for reply, context in zip(replies, contexts, strict=True)
    ]


def describe(feature: ReplyFeature, twin_mean: float, real_mean: float) -> str:
    """How the twin differs on `feature`, in words."""
    if twin_mean > real_mean:
        return feature.more
    return feature.never if feature.never and twin_mean == 0 else feature.less
