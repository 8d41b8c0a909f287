"""RUN/eval/report.html for `twinbot eval`: one self-contained page (inline CSS, matplotlib plots as base64
PNG data URIs, every text escaped) comparing the real replies with the base model's and the adapter's."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from typing import Any

from twinbot.quality.detector import (
    DISTINGUISHABLE,
    INDISTINGUISHABLE,
    METHOD,
    MIN_VERDICT_CONTEXTS,
    SUGGESTED_CONTEXTS,
    TOO_FEW,
    Detection,
)
from twinbot.quality.detector_features import FEATURES
from twinbot.quality.results import EvalResult, ModelEval
from twinbot.quality.style import CHAR_BINS, RATE_FEATURES

# Colour emoji fonts after the text fonts, so that emoji in replies show as emoji on every system.
FONTS = (
    'system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif,'
    '"Apple Color Emoji","Segoe UI Emoji","Noto Color Emoji","Segoe UI Symbol","Twemoji Mozilla"'
)
CSS = f"""
body{{font-family:{FONTS};margin:2em;max-width:1200px;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}
th{{background:#f3f3f3}}td.text{{white-space:pre-wrap;max-width:280px}}img{{max-width:100%}}
td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.note{{color:#666;font-size:90%}}.verdict{{font-size:115%;border-left:4px solid #1f77b4;padding:.5em 1em}}
"""
COLORS = {"real": "#444444", "base": "#d62728", "adapter": "#1f77b4"}


def png_data_uri(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], ylabel: str) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        axes.bar(positions, values, width, label=name, color=COLORS.get(name))
    axes.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    return png_data_uri(figure)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], text_columns: Sequence[int] = ()) -> str:
    """Text columns keep their line breaks; the other columns after the first are numbers, right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(_cell(i, c, i in text_columns) for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _cell(column: int, value: object, text: bool) -> str:
    if text:
        return f'<td class="text">{html.escape(str(value))}</td>'
    kind = ' class="num"' if column else ""
    return f"<td{kind}>{html.escape(_fmt(value))}</td>"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def percent(share: float) -> str:
    """A share as a percentage: whole percents, one decimal under 10% (a 3.4% punctuation rate matters)."""
    return f"{share:.1%}" if 0 < abs(share) < 0.1 else f"{share:.0%}"


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


# Fingerprint features shown in the report's table (the rates are also plotted): key, label, format.
TABLE_FEATURES: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("mean_chars", "characters per message", lambda v: f"{v:.1f}"),
    ("mean_words", "words per message", lambda v: f"{v:.1f}"),
    ("mean_messages", "messages per reply", lambda v: f"{v:.1f}"),
    ("lowercase_rate", "messages all in lowercase", percent),
    ("period_end_rate", "messages ending with a full stop", percent),
    ("question_rate", "messages with a question mark", percent),
    ("exclamation_rate", "messages with an exclamation mark", percent),
    ("emoji_rate", "messages with an emoji", percent),
    ("punctuation_rate", "punctuation per character", percent),
    ("distinct_1", "distinct words (all replies)", lambda v: f"{v:.2f}"),
    ("distinct_2", "distinct word pairs (all replies)", lambda v: f"{v:.2f}"),
    ("reply_distinct_1", "distinct words within a reply", lambda v: f"{v:.2f}"),
    ("reply_distinct_2", "distinct word pairs within a reply", lambda v: f"{v:.2f}"),
    ("duplicate_reply_rate", "replies identical to another reply", percent),
    ("longest_line_run", "longest run of the same line", lambda v: f"{v:.0f}"),
    ("vocabulary_size", "distinct words used", lambda v: f"{v:.0f}"),
)


def eval_report(result: EvalResult) -> str:
    rates, lengths, gaps = _style_plots(result)
    replies = table(
        ["context (last lines)", "real reply", "base reply", "adapter reply"],
        [[r.context, r.real, r.base, r.adapter] for r in result.rows],
        text_columns=(0, 1, 2, 3),
    )
    g = result.generation
    body = (
        f'<p class="note">run {html.escape(result.run_dir)}; data {html.escape(result.data_dir)}; base model '
        f"{html.escape(result.base_model)}; loss on {result.loss_samples} held-out replies "
        f"({result.supervised_tokens} supervised tokens); {g['contexts']} contexts, seed {g['seed']}, "
        f"temperature {g['temperature']}, top-p {g['top_p']}, up to {g['max_new_tokens']} new tokens. "
        "This file contains message text: keep it private.</p>"
        f'<p class="verdict">{html.escape(verdict_sentence(result))}</p>'
        f"<h2>Summary</h2>{_summary_table(result.models)}"
        f'<p class="note">Style distance: mean of per-feature gaps in [0, 1], lower = closer to the person '
        f'(docs/eval.md).</p><img src="{gaps}" alt="style gaps">'
        f'<h2>Style fingerprint</h2>{_fingerprint_table(result)}<img src="{rates}" alt="rates">'
        f'<img src="{lengths}" alt="lengths">'
        f"<h2>Would your friends notice?</h2>{_detector_section(result.models)}"
        f"<h2>Replies to held-out contexts</h2>{replies}"
    )
    return page("twinbot eval", body)


def _style_plots(result: EvalResult) -> tuple[str, str, str]:
    """Data URIs of three plots: style rates, message lengths (real vs each model), per-feature gaps."""
    real = result.real_style
    models = result.models
    rates = grouped_bars(
        "style rates: real vs generated",
        RATE_FEATURES,
        {
            "real": [real[f] for f in RATE_FEATURES],
            **{m.name: [m.style[f] for f in RATE_FEATURES] for m in models},
        },
        "share",
    )
    bins = [f"<={b}" for b in CHAR_BINS] + [f">{CHAR_BINS[-1]}"]
    lengths = grouped_bars(
        "characters per message",
        bins,
        {"real": real["char_histogram"], **{m.name: m.style["char_histogram"] for m in models}},
        "share of messages",
    )
    gaps = grouped_bars(
        "style distance per feature (0 = same as the person)",
        [g.feature for g in result.base.style_distance.gaps],
        {m.name: [g.gap for g in m.style_distance.gaps] for m in models},
        "gap",
    )
    return rates, lengths, gaps


def _summary_table(models: Sequence[ModelEval]) -> str:
    return table(
        [
            "model",
            "eval loss",
            "perplexity",
            "style distance",
            "detector AUC (95% CI)",
            "vocabulary overlap",
            "memorised",
            "verbatim",
            "long n-gram overlap",
            "PII placeholders",
            "canaries back",
        ],
        [
            [
                m.name,
                m.eval_loss,
                None if m.perplexity is None else f"{m.perplexity:.1f}",
                m.style_distance.score,
                _auc(m.detection),
                percent(m.style_distance.vocabulary_overlap),
                percent(m.memorisation.memorised_share),
                m.memorisation.verbatim,
                m.memorisation.long_overlap,
                m.memorisation.placeholders,
                ", ".join(m.memorisation.canaries_found) or "none",
            ]
            for m in models
        ],
    )


def _fingerprint_table(result: EvalResult) -> str:
    real, models = result.real_style, result.models
    headers = ["feature", "real", *[m.name for m in models]]
    measured = table(
        headers,
        [
            [label, show(real[key]), *[show(m.style[key]) for m in models]]
            for key, label, show in TABLE_FEATURES
            if key in real
        ],
    )
    favourites = table(
        headers,
        [
            ["top emoji", _top(real["top_emoji"]), *[_top(m.style["top_emoji"]) for m in models]],
            ["top phrases", _top(real["top_phrases"]), *[_top(m.style["top_phrases"]) for m in models]],
        ],
        text_columns=(1, 2, 3),
    )
    return measured + favourites


def _top(items: Sequence[Sequence[object]]) -> str:
    return " ".join(f"{item[0]} ({item[1]})" for item in items[:5]) or "-"


# --- the detector -------------------------------------------------------------------------------------------


def _interval(low: float, high: float) -> str:
    return f"{low:.2f}–{high:.2f}"


def _auc(detection: Detection | None) -> str | None:
    return None if detection is None else f"{detection.auc:.2f} ({_interval(*detection.auc_ci)})"


def verdict_sentence(result: EvalResult) -> str:
    """The detector's verdict on the adapter, with the base model's AUC for scale, in a sentence or two."""
    twin, base = result.adapter.detection, result.base.detection
    if twin is None:
        return "Too few contexts to measure whether the twin's replies can be told from yours (3 needed)."
    measured = f"AUC {twin.auc:.2f}, 95% CI {_interval(*twin.auc_ci)}"
    base_part = "" if base is None else f"; the base model's: AUC {base.auc:.2f}"
    more = f"evaluate {SUGGESTED_CONTEXTS} or more (--samples) for a verdict"
    if twin.verdict == DISTINGUISHABLE:
        telling = ", ".join(t.description for t in twin.telling)
        sentence = (
            f"A classifier tells the twin's replies from yours {twin.accuracy:.0%} of the time "
            f"({measured}){base_part}."
        )
        return sentence + (f" Most telling: {telling}." if telling else "")
    if twin.verdict == INDISTINGUISHABLE:
        return (
            f"A classifier does no better than chance at telling the twin's replies from yours "
            f"({measured}){base_part}."
        )
    if twin.verdict == TOO_FEW:
        return (
            f"Only {twin.contexts} contexts, fewer than {MIN_VERDICT_CONTEXTS}: too few for a verdict "
            f"({measured}){base_part}; {more}."
        )
    return (
        f"Inconclusive: a classifier told the twin's replies from yours {twin.accuracy:.0%} of the time "
        f"({measured}, which includes 0.5 = chance){base_part}; {twin.contexts} contexts are too few for a "
        f"confident verdict: {more}."
    )


def _detector_section(models: Sequence[ModelEval]) -> str:
    measured = [(m.name, m.detection) for m in models if m.detection is not None]
    if not measured:
        return '<p class="note">Not measured: fewer than 3 contexts.</p>'
    summary = table(
        [
            "model",
            "contexts",
            "told apart (95% CI)",
            "AUC (95% CI)",
            "AUC, interpretable features only",
            "verdict",
        ],
        [
            [
                name,
                d.contexts,
                f"{d.accuracy:.0%} ({d.accuracy_ci[0]:.0%}–{d.accuracy_ci[1]:.0%})",
                _auc(d),
                f"{d.interpretable_auc:.2f}",
                d.verdict.replace("_", " "),
            ]
            for name, d in measured
        ],
    )
    labels = {feature.name: feature.label for feature in FEATURES}
    rows = [
        [
            name,
            t.description,
            labels.get(t.feature, t.feature),
            f"{t.real_mean:.2f}",
            f"{t.twin_mean:.2f}",
            f"{t.weight:+.2f}",
        ]
        for name, d in measured
        for t in d.telling
    ]
    headers = ["model", "gives the model away", "measure", "yours", "the model's", "weight"]
    telling = (
        table(headers, rows, text_columns=(1, 2))
        if rows
        else '<p class="note">No interpretable feature stands out.</p>'
    )
    return (
        '<p class="note">Each model\'s reply and your real reply to the same held-out context, told apart by a '
        "classifier that never saw that context: AUC 0.5 = it cannot tell them apart, 1 = it always can. "
        f"{html.escape(METHOD)}. What gives a model away: the largest standardized weights of a logistic "
        "regression on the interpretable features (positive: more of it looks like the model), where the "
        "model's replies differ from yours (paired Wilcoxon test, Bonferroni-corrected).</p>"
        f"{summary}{telling}"
    )
