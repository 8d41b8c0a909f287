"""The twin detector on synthetic reply sets whose answer is known: the same distribution (chance), obviously
different styles (near-perfect detection), the grouping of a context's two replies, and the words it uses."""

from __future__ import annotations

import random

import numpy as np
import pytest

from twinbot.quality import detector
from twinbot.quality.detector import (
    DISTINGUISHABLE,
    INCONCLUSIVE,
    INDISTINGUISHABLE,
    TOO_FEW,
    detect,
    grouped_folds,
    verdict,
)
from twinbot.quality.detector_features import FEATURE_NAMES, context_overlap, reply_features

_WORD_TEXT = (
    "ok but fr no way lol wait im coming lowkey yes same what sure thing omw wild ugh fine where when idk "
    "tbh maybe later tonight pizza movie game work tired send pics call me haha nice cool dude bro"
)
WORDS = _WORD_TEXT.split()
EMOJI = ("💀", "✨", "🫠", "😭")
RESAMPLES = 60  # enough for the tests' intervals, a third of the default's time


def chat_reply(rng: random.Random, max_words: int = 5) -> str:
    lines = []
    for _ in range(rng.randint(1, 3)):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))
        lines.append(line + (f" {rng.choice(EMOJI)}" if rng.random() < 0.3 else ""))
    return "\n".join(lines)


def contexts(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(count)]


def test_same_distribution_is_chance() -> None:
    rng = random.Random(7)
    n = 60
    result = detect(contexts(rng, n), [chat_reply(rng) for _ in range(n)], [chat_reply(rng) for _ in range(n)],
                    seed=0, resamples=RESAMPLES)  # fmt: skip
    assert result is not None and result.contexts == n
    low, high = result.auc_ci
    assert low < 0.5 < high and abs(result.auc - 0.5) < 0.12
    assert result.accuracy_ci[0] < 0.5 < result.accuracy_ci[1]
    assert result.verdict in (INDISTINGUISHABLE, INCONCLUSIVE)
    assert result.telling == []  # nothing differs, so nothing is reported as giving the twin away


def test_obviously_different_styles_are_detected() -> None:
    rng = random.Random(3)
    n = 40
    real = [chat_reply(rng, max_words=12).lower() for _ in range(n)]
    twin = [rng.choice(WORDS).upper() + "." for _ in range(n)]
    result = detect(contexts(rng, n), real, twin, seed=0, resamples=RESAMPLES)
    assert result is not None
    assert result.auc > 0.95 and result.auc_ci[0] > 0.8 and result.accuracy > 0.9
    assert result.interpretable_auc > 0.9
    assert result.verdict == DISTINGUISHABLE
    words = {t.description for t in result.telling}
    assert words <= {
        "shorter than yours",
        "always uses capital letters",
        "ends messages with a full stop more often than you",
        "uses more punctuation than you",
        "uses no emoji",
        "sends fewer messages in a row than you",
    }
    assert 1 <= len(result.telling) <= 3 and all(t.p_value < 0.05 for t in result.telling)


def test_detection_is_seeded() -> None:
    rng = random.Random(1)
    n = 12
    args = (contexts(rng, n), [chat_reply(rng) for _ in range(n)], [chat_reply(rng, 2) for _ in range(n)])
    first = detect(*args, seed=4, resamples=20)
    assert first == detect(*args, seed=4, resamples=20)
    assert first is not None and first.verdict == TOO_FEW  # under MIN_VERDICT_CONTEXTS: no verdict
    assert detect(["a", "b"], ["x", "y"], ["z", "w"]) is None


def test_grouped_folds_never_split_a_context() -> None:
    rng = np.random.default_rng(0)
    n = 23
    groups = np.tile(np.arange(n), 2)  # rows i and n + i: the real and the twin reply to context i
    pick = rng.integers(0, n, size=n)  # a bootstrap resample: contexts drawn several times
    for rows in (groups, np.concatenate([pick, pick])):
        folds = grouped_folds(rows, 5, rng)
        assert sorted(np.concatenate(folds).tolist()) == list(range(len(rows)))  # every row tested once
        for test in folds:
            inside = set(rows[test].tolist())
            outside = set(np.delete(rows, test).tolist())
            assert not inside & outside


def test_pairs_sharing_their_context_words_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both replies to a context share a made-up word no other context has, then one common word each:
    otherwise alike. Grouped folds: chance. Folds that split pairs: the made-up word is seen with the other
    label in training, and the detector is confidently wrong (far below 0.5), which shows that the grouping
    matters."""
    rng = random.Random(5)
    n = 40
    real, twin = [], []
    for _ in range(n):
        marker = "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(8))
        real.append(f"{marker} {rng.choice(WORDS)}")
        twin.append(f"{marker} {rng.choice(WORDS)}")
    context = contexts(rng, n)
    grouped = detect(context, real, twin, seed=0, resamples=RESAMPLES)
    assert grouped is not None and grouped.auc_ci[0] < 0.5 < grouped.auc_ci[1]

    def split_pairs(groups: np.ndarray, folds: int, rng: np.random.Generator) -> list[np.ndarray]:
        return np.array_split(rng.permutation(len(groups)), folds)

    monkeypatch.setattr(detector, "grouped_folds", split_pairs)
    leaky = detect(context, real, twin, seed=0, resamples=5)
    assert leaky is not None and leaky.auc < 0.3


def test_verdict_rule() -> None:
    assert verdict(100, (0.55, 0.8)) == DISTINGUISHABLE
    assert verdict(100, (0.42, 0.62)) == INDISTINGUISHABLE  # rules out more than weak detection
    assert verdict(100, (0.2, 0.45)) == INDISTINGUISHABLE  # below chance is chance
    assert verdict(100, (0.45, 0.75)) == INCONCLUSIVE  # more contexts needed
    assert verdict(10, (0.9, 1.0)) == TOO_FEW


def test_reply_features_by_hand() -> None:
    features = dict(
        zip(FEATURE_NAMES, reply_features(["Pizza tonight?\nyes!", "ok"], ["want pizza later", "hm"])[0], strict=True)
    )  # fmt: skip
    assert features["messages_per_reply"] == 2 and features["questions"] == 0.5
    assert features["exclamations"] == 0.5 and features["lowercase"] == 0.5
    assert features["picks_up_context"] == 0.5  # "pizza" of {"pizza", "tonight"}
    assert features["reused_reply"] == 0
    copies = reply_features(["same thing", "Same  thing", "else"], ["a", "b", "c"])
    assert [row[FEATURE_NAMES.index("reused_reply")] for row in copies] == [1, 1, 0]
    lines = reply_features(["lol\nlol\nlol\nok"], ["x"])[0]
    assert lines[FEATURE_NAMES.index("repeated_lines")] == 2
    assert context_overlap("the and", "the and") == 0  # stopwords only: no content word


def test_telling_features_say_what_differs() -> None:
    rng = random.Random(11)
    n = 40
    real = [f"{chat_reply(rng)}\nu coming {rng.choice(WORDS)}?" for _ in range(n)]
    twin = ["same thing lol"] * n  # one reply for every context, and never a question
    result = detect(contexts(rng, n), real, twin, seed=0, resamples=10)
    assert result is not None
    words = {t.description for t in result.telling}
    assert words & {
        "never asks questions",
        "gives the same reply to different messages",
        "shorter than yours",
    }
    assert all(t.weight > 0 if t.twin_mean > t.real_mean else t.weight < 0 for t in result.telling)
