"""Style metrics on hand-made replies: every feature, the distance, and the memorisation checks."""

from __future__ import annotations

import math

import pytest

from twinbot.quality.style import (
    TrainingIndex,
    distinct_n,
    duplicate_reply_rate,
    find_canaries,
    fingerprint,
    histogram,
    is_emoji,
    js_divergence,
    longest_line_run,
    memorisation,
    messages_of,
    relative_gap,
    reply_distinct_n,
    style_distance,
    vocabulary_overlap,
    words_of,
)

JUNO = ["ok but fr 💀", "nooo\nwaittt ✨\nim coming", "lowkey yes", "dont 🫠\nlmao"]
FORMAL = ["Sure, I will be there at six.", "That sounds great! See you then.", "Why not?", "I agree."]


def test_words_and_messages() -> None:
    assert words_of("Don't STOP, ok_then 2day!") == ["don't", "stop", "ok", "then", "2day"]
    assert messages_of("a\n\n  b \n") == ["a", "b"]
    assert is_emoji("💀") and is_emoji("✨") and is_emoji("🫠") and not is_emoji("a") and not is_emoji("é")


def test_fingerprint_features_by_hand() -> None:
    fp = fingerprint(["hi there.\nHow are you?", "ok 💀💀"])
    assert fp.replies == 2 and fp.messages == 3
    assert fp.mean_messages == 1.5
    assert fp.mean_chars == pytest.approx((9 + 12 + 5) / 3)
    assert fp.mean_words == pytest.approx((2 + 3 + 1) / 3)
    assert fp.lowercase_rate == pytest.approx(2 / 3)  # "How are you?" has a capital
    assert fp.period_end_rate == pytest.approx(1 / 3)
    assert fp.question_rate == pytest.approx(1 / 3)
    assert fp.exclamation_rate == 0
    assert fp.punctuation_rate == pytest.approx(2 / 26)
    assert fp.emoji_rate == pytest.approx(1 / 3)
    assert fp.emoji_per_message == pytest.approx(2 / 3)
    assert fp.top_emoji == [("💀", 2)]
    assert fp.burst_histogram[0] == 0.5 and fp.burst_histogram[1] == 0.5
    assert sum(fp.char_histogram) == pytest.approx(1)
    assert fp.vocabulary == {"hi", "there", "how", "are", "you", "ok"}


def test_top_phrases_need_two_occurrences() -> None:
    fp = fingerprint(["ok but why", "ok but no", "something else"])
    assert fp.top_phrases == [("ok but", 2)]


def test_distinct_n() -> None:
    assert distinct_n(["a a a a"], 1) == 0.25
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n(["a b c"], 2) == 1.0
    assert distinct_n([], 1) == 0.0


def test_repetition_within_and_across_replies() -> None:
    # within a reply: "lol lol lol lol" has 1 distinct word of 4; "a b a b" 2 of 4 words and 2 of 3 bigrams
    assert reply_distinct_n(["lol lol lol lol"], 1) == 0.25
    assert reply_distinct_n(["lol lol lol lol", "a b a b"], 1) == pytest.approx((0.25 + 0.5) / 2)
    assert reply_distinct_n(["a b a b", "one"], 2) == pytest.approx(2 / 3)  # "one" has no bigram: left out
    assert reply_distinct_n(["ok", ""], 2) == 1.0
    # across replies: the same text (case and spacing aside) given to different contexts
    assert duplicate_reply_rate(["ok sure", "OK  sure", "no", "maybe"]) == 0.5
    assert duplicate_reply_rate(["a", "b"]) == 0 and duplicate_reply_rate([]) == 0
    # runs of identical consecutive lines
    assert longest_line_run("haha\nHAHA\nhaha \nok\nhaha") == 3
    assert longest_line_run("a\nb\na") == 1 and longest_line_run("") == 0
    assert longest_line_run("a\n\na") == 2  # empty lines are not messages

    degenerate = fingerprint(["lol lol lol lol", "lol lol lol lol", "same\nsame\nsame\nsame"])
    assert degenerate.duplicate_reply_rate == pytest.approx(2 / 3)
    assert degenerate.longest_line_run == 4
    assert degenerate.reply_distinct_1 == 0.25
    varied = fingerprint(JUNO)
    assert varied.duplicate_reply_rate == 0 and varied.longest_line_run == 1 and varied.reply_distinct_1 == 1
    assert {"reply_distinct_1", "reply_distinct_2", "duplicate_reply_rate", "longest_line_run"} <= set(
        varied.to_json()
    )


def test_histogram_and_js_divergence() -> None:
    assert histogram([1, 5, 6, 1000], (5, 10)) == [0.5, 0.25, 0.25]
    assert histogram([], (5,)) == [0.0, 0.0]
    assert js_divergence([1, 0], [1, 0]) == 0
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    half = js_divergence([0.5, 0.5], [1, 0])
    assert 0 < half < 1
    assert js_divergence([0, 0], [0, 0]) == 0 and js_divergence([0, 0], [1, 0]) == 1
    with pytest.raises(ValueError):
        js_divergence([1], [1, 0])


def test_relative_gap_and_vocabulary_overlap() -> None:
    assert relative_gap(10, 5) == 0.5 and relative_gap(0, 0) == 0 and relative_gap(0, 3) == 1
    real, generated = fingerprint(["a b c d"]), fingerprint(["a b x y"])
    assert vocabulary_overlap(real, generated) == 0.5
    assert vocabulary_overlap(real, fingerprint([""])) == 0


def test_style_distance_identical_is_zero_and_different_is_larger() -> None:
    same = style_distance(fingerprint(JUNO), fingerprint(list(JUNO)))
    assert same.score == 0 and same.vocabulary_overlap == 1
    different = style_distance(fingerprint(JUNO), fingerprint(FORMAL))
    assert different.score > 0.3
    closer = style_distance(
        fingerprint(JUNO), fingerprint(["ok but no 💀", "yesss\nlowkey ✨", "fr", "nah 🫠\nok"])
    )
    assert 0 < closer.score < different.score
    assert all(0 <= gap.gap <= 1 for gap in different.gaps)
    names = {gap.feature for gap in different.gaps}
    assert {"lowercase_rate", "mean_chars", "chars_histogram_jsd", "emoji_jsd"} <= names


def test_style_distance_is_deterministic_and_bounded() -> None:
    a = style_distance(fingerprint(JUNO), fingerprint(FORMAL))
    b = style_distance(fingerprint(JUNO), fingerprint(FORMAL))
    assert a == b and 0 <= a.score <= 1
    empty = style_distance(fingerprint(JUNO), fingerprint([]))
    assert math.isfinite(empty.score) and empty.score > a.score * 0.5


def test_memorisation_verbatim_overlap_placeholders_and_canaries() -> None:
    training = [
        "we should go to the lake this weekend fr",
        "ok",
        "my email is <EMAIL> btw",
        "secret code twinbot-canary-abc123 here",
    ]
    index = TrainingIndex(training, n=5)
    generated = [
        "We should  go to the LAKE this weekend fr",  # verbatim, case/space-insensitive (and an overlap)
        "ok",  # too short to count as memorised
        "honestly we should go to the lake this year",  # 6 shared words in a row: long overlap
        "write to <EMAIL>",  # a placeholder came back
        "TWINBOT-CANARY-ABC123",  # the canary came back
        "something new",
    ]
    memo = memorisation(generated, index, find_canaries(training) | {"never-seen", ""})
    assert memo.replies == 6
    assert memo.verbatim == 1
    assert memo.long_overlap == 2
    assert memo.memorised_share == pytest.approx(2 / 6)
    assert memo.placeholders == 1
    assert memo.canaries_found == ["twinbot-canary-abc123"]
    assert find_canaries(["x Twinbot-Canary-Q1 y", "none"]) == {"twinbot-canary-q1"}
    clean = memorisation(["new words only"], index, ["twinbot-canary-abc123"])
    assert clean.memorised_share == 0 and clean.placeholders == 0 and clean.canaries_found == []
