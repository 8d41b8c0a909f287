"""Would your friends notice? A classifier that tells the twin's replies from the person's, measured.

For every held-out context there are two replies: the person's real one (label 0) and the model's (label 1).
A logistic regression over character and word n-grams (TF-IDF) and the interpretable features of
`twinbot.quality.detector_features` is trained on part of the contexts and scores the replies of the rest:
grouped K-fold cross-validation, where the two replies of a context are always in the same fold (a context's
words in the training folds would otherwise give its other reply away), repeated with reshuffled folds; a
reply's out-of-fold scores are averaged over the repeats. The n-gram vocabulary, IDF weights and feature
scaling are fitted on all replies without their labels; only the classifier sees labels, of its training folds.

- accuracy: replies on the right side of 0.5; ROC AUC: the chance that a twin reply scores above a real
  one. 0.5 = the classifier cannot tell them apart;
- 95% confidence intervals: the estimate ± 1.96 standard deviations of the same measurement on bootstrap
  resamples of the contexts (each resample cross-validated anew, a context's copies kept in one fold), so
  that the interval holds the variation of the test replies *and* of the classifiers trained on them;
- what gives the twin away: a second logistic regression on the standardized interpretable features alone,
  fitted on every context; its largest weights, in words, for the features on which the twin's replies
  differ from the person's replies to the same contexts (Wilcoxon signed-rank test, Bonferroni-corrected).

Deterministic for a seed. docs/eval.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import sklearn
from scipy import sparse
from scipy.stats import rankdata, wilcoxon
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from twinbot.quality.detector_features import FEATURES, describe, reply_features
from twinbot.quality.style import words_of

FOLDS = 5
REPEATS = 5  # of the cross-validation behind the estimate (each bootstrap resample is cross-validated once)
BOOTSTRAP = 200
MIN_CONTEXTS = 3  # fewer: nothing to cross-validate
# Below this many contexts the interval is too rough to base a verdict on.
MIN_VERDICT_CONTEXTS = 30
# Enough contexts for an AUC interval about ±0.12 wide: `twinbot eval`'s default.
SUGGESTED_CONTEXTS = 128
# "Indistinguishable" needs the interval to rule out more than weak detection: its top at most 0.5 + this.
CHANCE_MARGIN = 0.15
MIN_TELLING_WEIGHT = 0.25  # standardized coefficient below which a feature is not reported as telling
TELLING_ALPHA = 0.05  # family-wise, over all the interpretable features
TOP_TELLING = 3
METHOD = (
    f"Logistic regression on character 2-4-grams, word 1-2-grams and {len(FEATURES)} interpretable features; "
    f"{FOLDS}-fold cross-validation grouped by context, {REPEATS} repeats; 95% CI: estimate ± 1.96 SD over "
    f"{BOOTSTRAP} bootstrap resamples of the contexts, each cross-validated anew"
)

# verdicts
DISTINGUISHABLE = "distinguishable"  # the AUC's interval lies above 0.5
INDISTINGUISHABLE = "indistinguishable"  # the interval includes 0.5 and rules out more than weak detection
INCONCLUSIVE = "inconclusive"  # the interval includes 0.5 and reaches above 0.5 + CHANCE_MARGIN
TOO_FEW = "too_few"  # under MIN_VERDICT_CONTEXTS contexts


@dataclass(frozen=True)
class TellingFeature:
    feature: str
    description: str  # how the twin differs, e.g. "shorter than yours"
    weight: float  # standardized logistic-regression coefficient; > 0: more of it looks like the twin
    real_mean: float
    twin_mean: float
    p_value: float  # paired Wilcoxon signed-rank test, twin vs real reply to the same context (uncorrected)


@dataclass(frozen=True)
class Detection:
    """How well a classifier tells one model's replies from the person's real replies to the same contexts."""

    contexts: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    auc: float
    auc_ci: tuple[float, float]
    interpretable_auc: float  # the same cross-validation on the interpretable features alone
    verdict: str  # DISTINGUISHABLE | INDISTINGUISHABLE | INCONCLUSIVE | TOO_FEW
    telling: list[TellingFeature] = field(default_factory=list)
    method: str = METHOD


# --- cross-validation ---------------------------------------------------------------------------------------


def grouped_folds(groups: np.ndarray, folds: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Test rows of each of `folds` folds; all rows of a group (a context: its real and its twin reply, and
    their copies in a bootstrap resample) fall in the same fold."""
    unique = rng.permutation(np.unique(groups))
    return [np.flatnonzero(np.isin(groups, chunk)) for chunk in np.array_split(unique, folds)]


def _word_grams(text: str) -> list[str]:
    words = words_of(text)
    return words + [f"{a} {b}" for a, b in pairwise(words)]


def design_matrix(texts: Sequence[str], features: np.ndarray) -> sparse.csr_matrix:
    """Standardized interpretable features (the first columns), then TF-IDF character and word n-grams."""
    blocks = [sparse.csr_matrix(StandardScaler().fit_transform(features))]
    vectorizers = (
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=False, sublinear_tf=True),
        TfidfVectorizer(analyzer=_word_grams, sublinear_tf=True),
    )
    for vectorizer in vectorizers:
        try:
            blocks.append(vectorizer.fit_transform(texts))
        except ValueError:  # not one n-gram in any reply (e.g. all empty)
            continue
    return sparse.hstack(blocks, format="csr")


def out_of_fold_scores(
    matrix: sparse.csr_matrix, labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator, repeats: int
) -> np.ndarray:
    """Each row's probability of being the twin's, from classifiers that did not see its context, averaged
    over `repeats` reshufflings of the folds."""
    total = np.zeros(len(labels))
    folds = min(FOLDS, len(np.unique(groups)))
    # thousands of small fits: sklearn's per-call input checks would cost more than the fits themselves
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for _ in range(repeats):
            for test in grouped_folds(groups, folds, rng):
                train = np.setdiff1d(np.arange(len(labels)), test)
                model = LogisticRegression(C=1.0, solver="liblinear").fit(matrix[train], labels[train])
                total[test] += model.predict_proba(matrix[test])[:, 1]
    return total / repeats


# --- scores and intervals -----------------------------------------------------------------------------------


def roc_auc(real_scores: np.ndarray, twin_scores: np.ndarray) -> float:
    """Mann-Whitney: the chance that a twin reply scores above a real one, ties counting half."""
    ranks = rankdata(np.concatenate([real_scores, twin_scores]))
    n_real, n_twin = len(real_scores), len(twin_scores)
    return float((ranks[n_real:].sum() - n_twin * (n_twin + 1) / 2) / (n_real * n_twin))


def accuracy(real_scores: np.ndarray, twin_scores: np.ndarray) -> float:
    """Replies on the right side of 0.5 (a score of exactly 0.5 counts half)."""
    right = (real_scores < 0.5).sum() + (twin_scores > 0.5).sum()
    ties = (real_scores == 0.5).sum() + (twin_scores == 0.5).sum()
    return float((right + ties / 2) / (len(real_scores) + len(twin_scores)))


def bootstrap_spread(
    matrix: sparse.csr_matrix, contexts: int, rng: np.random.Generator, resamples: int = BOOTSTRAP
) -> tuple[float, float]:
    """Standard deviations of (accuracy, AUC) over resamples of the contexts, each cross-validated anew."""
    accuracies, aucs = [], []
    for _ in range(resamples):
        pick = rng.integers(0, contexts, size=contexts)
        if len(np.unique(pick)) < 2:  # one context drawn n times: nothing to train on in cross-validation
            continue
        rows = np.concatenate([pick, pick + contexts])
        labels = np.repeat([0, 1], contexts)
        scores = out_of_fold_scores(matrix[rows], labels, np.concatenate([pick, pick]), rng, repeats=1)
        accuracies.append(accuracy(scores[:contexts], scores[contexts:]))
        aucs.append(roc_auc(scores[:contexts], scores[contexts:]))
    return float(np.std(accuracies, ddof=1)), float(np.std(aucs, ddof=1))


def interval(estimate: float, spread: float) -> tuple[float, float]:
    return max(0.0, estimate - 1.96 * spread), min(1.0, estimate + 1.96 * spread)


def verdict(contexts: int, auc_ci: tuple[float, float]) -> str:
    low, high = auc_ci
    if contexts < MIN_VERDICT_CONTEXTS:
        return TOO_FEW
    if low > 0.5:
        return DISTINGUISHABLE
    if high <= 0.5 + CHANCE_MARGIN:
        return INDISTINGUISHABLE
    return INCONCLUSIVE


# --- what gives the twin away -------------------------------------------------------------------------------


def telling_features(real: np.ndarray, twin: np.ndarray) -> list[TellingFeature]:
    """Up to TOP_TELLING interpretable features by standardized weight (at least MIN_TELLING_WEIGHT), kept
    when the twin's replies differ on them from the person's replies to the same contexts (paired test,
    Bonferroni over all features) and the weight's sign agrees with the means, so the words say what the
    data shows. `real[i]` and `twin[i]` are the feature rows of the two replies to context i."""
    features = np.vstack([real, twin])
    labels = np.repeat([0, 1], len(real))
    model = LogisticRegression(C=1.0, solver="liblinear")
    model.fit(StandardScaler().fit_transform(features), labels)
    found = []
    for index in np.argsort(-np.abs(model.coef_[0]), kind="stable"):
        weight = float(model.coef_[0][index])
        if abs(weight) < MIN_TELLING_WEIGHT or len(found) == TOP_TELLING:
            break
        real_mean, twin_mean = float(real[:, index].mean()), float(twin[:, index].mean())
        p_value = float(
            wilcoxon(twin[:, index], real[:, index], zero_method="zsplit", method="approx").pvalue
        )
        if np.sign(weight) != np.sign(twin_mean - real_mean) or p_value * len(FEATURES) > TELLING_ALPHA:
            continue
        feature = FEATURES[index]
        description = describe(feature, twin_mean, real_mean)
        found.append(TellingFeature(feature.name, description, weight, real_mean, twin_mean, p_value))
    return found


# --- the measurement ----------------------------------------------------------------------------------------


def detect(
    contexts: Sequence[str],
    real: Sequence[str],
    twin: Sequence[str],
    seed: int = 0,
    resamples: int = BOOTSTRAP,
) -> Detection | None:
    """The detector on the replies `real[i]` and `twin[i]` to `contexts[i]`; None under MIN_CONTEXTS."""
    n = len(contexts)
    if n < MIN_CONTEXTS:
        return None
    real_features = np.array(reply_features(real, contexts), dtype=float).reshape(n, len(FEATURES))
    twin_features = np.array(reply_features(twin, contexts), dtype=float).reshape(n, len(FEATURES))
    matrix = design_matrix([*real, *twin], np.vstack([real_features, twin_features]))
    labels, groups = np.repeat([0, 1], n), np.tile(np.arange(n), 2)
    rng = np.random.default_rng(seed)
    scores = out_of_fold_scores(matrix, labels, groups, rng, REPEATS)
    interpretable = out_of_fold_scores(matrix[:, : len(FEATURES)], labels, groups, rng, REPEATS)
    accuracy_spread, auc_spread = bootstrap_spread(matrix, n, rng, resamples)
    auc = roc_auc(scores[:n], scores[n:])
    auc_ci = interval(auc, auc_spread)
    detected = accuracy(scores[:n], scores[n:])
    return Detection(
        contexts=n,
        accuracy=detected,
        accuracy_ci=interval(detected, accuracy_spread),
        auc=auc,
        auc_ci=auc_ci,
        interpretable_auc=roc_auc(interpretable[:n], interpretable[n:]),
        verdict=verdict(n, auc_ci),
        telling=telling_features(real_features, twin_features),
    )
