"""RUN/eval/report.html for `twinbot eval`: one self-contained page (inline CSS, matplotlib plots as base64
PNG data URIs, every text escaped) comparing the real replies with the base model's and the adapter's."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from twinbot.quality.results import EvalResult, ModelEval
from twinbot.quality.style import CHAR_BINS, RATE_FEATURES

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}td.text{white-space:pre-wrap;max-width:280px}img{max-width:100%}
.note{color:#666;font-size:90%}
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
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="text">{html.escape(str(c))}</td>'
            if i in text_columns
            else f"<td>{html.escape(_fmt(c))}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


# Fingerprint features shown in the report's table (the rates are also plotted).
TABLE_FEATURES = (
    "mean_chars",
    "mean_words",
    "mean_messages",
    "lowercase_rate",
    "period_end_rate",
    "emoji_rate",
    "punctuation_rate",
    "distinct_1",
    "distinct_2",
    "vocabulary_size",
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
        f"<h2>Summary</h2>{_summary_table(result.models)}"
        f'<p class="note">Style distance: mean of per-feature gaps in [0, 1], lower = closer to the person '
        f'(docs/eval.md).</p><img src="{gaps}" alt="style gaps">'
        f'<h2>Style fingerprint</h2>{_fingerprint_table(result)}<img src="{rates}" alt="rates">'
        f'<img src="{lengths}" alt="lengths">'
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
                m.perplexity,
                m.style_distance.score,
                m.style_distance.vocabulary_overlap,
                f"{m.memorisation.memorised_share:.1%}",
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
    return table(
        ["feature", "real", *[m.name for m in models]],
        [[f, real[f], *[m.style[f] for m in models]] for f in TABLE_FEATURES]
        + [
            ["top emoji", _top(real["top_emoji"]), *[_top(m.style["top_emoji"]) for m in models]],
            ["top phrases", _top(real["top_phrases"]), *[_top(m.style["top_phrases"]) for m in models]],
        ],
        text_columns=(1, 2, 3),
    )


def _top(items: Sequence[Sequence[object]]) -> str:
    return " ".join(f"{item[0]} ({item[1]})" for item in items[:5]) or "-"
