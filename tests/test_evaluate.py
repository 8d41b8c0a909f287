"""`twinbot eval`: pieces on hand-made inputs, the whole stage on the tiny model, and (slow) the real claim on
the embedded default: a short `fast` training moves the adapter's style closer to the persona than the base
model's."""

from __future__ import annotations

import copy
import json
import math
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

from support.runs import TrainedRun, copy_run
from twinbot.data.records import ChatTurn, Sample
from twinbot.errors import TwinbotError
from twinbot.finetune.steps import perplexity
from twinbot.quality.detector import (
    DISTINGUISHABLE,
    INCONCLUSIVE,
    INDISTINGUISHABLE,
    TOO_FEW,
    Detection,
    TellingFeature,
)
from twinbot.quality.evaluate import (
    EvalOptions,
    last_lines,
    mean_loss,
    pick_contexts,
    resolve_data_dir,
    run_eval,
    write_outputs,
)
from twinbot.quality.report_html import CSS, percent, verdict_sentence
from twinbot.quality.results import EvalResult, ReplyRow, summary_lines
from twinbot.runs import EVAL_DIR, EVAL_FILE, REPORT_FILE, read_summary


def _sample(conversation: str, *turns: tuple[str, str]) -> Sample:
    return Sample(messages=[ChatTurn(role, text) for role, text in turns], conversation_id=conversation)


def test_pick_contexts_is_seeded_and_keeps_replies_to_someone() -> None:
    samples = [
        _sample(str(i), ("system", "s"), ("user", f"Ann: hi {i}"), ("assistant", f"reply {i}"))
        for i in range(20)
    ]
    samples.insert(3, _sample("x", ("system", "s"), ("assistant", "style only")))
    first = pick_contexts(samples, 5, seed=1)
    assert first == pick_contexts(samples, 5, seed=1)
    assert first != pick_contexts(samples, 5, seed=2)
    assert len(first) == 5 and all(s.messages[-2].role == "user" for s in first)
    assert [samples.index(s) for s in first] == sorted(samples.index(s) for s in first)
    assert len(pick_contexts(samples, 100, seed=0)) == 20


def test_last_lines_and_perplexity() -> None:
    assert last_lines("a\n\nb\nc\nd", 2) == "c\nd"
    assert perplexity(0.0) == 1.0 and perplexity(None) is None and perplexity(float("nan")) is None
    assert perplexity(2.0) == pytest.approx(math.e**2)


def test_read_summary_and_data_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match=r"no summary\.json"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(TwinbotError, match="no config"):
        read_summary(tmp_path)
    summary = {"config": {"data_dir": str(tmp_path / "nowhere")}}
    with pytest.raises(TwinbotError, match=r"no train\.jsonl here"):
        resolve_data_dir(EvalOptions(run_dir=tmp_path), summary)
    with pytest.raises(TwinbotError, match="pass --data"):
        resolve_data_dir(EvalOptions(run_dir=tmp_path), {"config": {}})


def test_mean_loss_is_the_supervised_token_cross_entropy(tiny_model_dir: Path) -> None:
    from twinbot.finetune.rows import IGNORE_INDEX, one_sample_rows, tokenize_samples
    from twinbot.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir)).eval()
    samples = [
        _sample("a", ("system", "be Juno"), ("user", "Ann: hi"), ("assistant", "heyyy 💀")),
        _sample("b", ("system", "be Juno"), ("user", "Bo: lunch?"), ("assistant", "ok but where\nfr")),
    ]
    rows = one_sample_rows(tokenize_samples(samples, tokenizer, 256))
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row.input_ids])).logits[0].float()
            targets = torch.tensor(row.target_ids)
            keep = targets != IGNORE_INDEX
            total += float(torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum"))
            count += int(keep.sum())
    assert mean_loss(model, rows, tokenizer.pad_token_id, torch.device("cpu")) == pytest.approx(
        total / count, rel=1e-4
    )


@pytest.fixture(scope="module")
def evaluated_run(tiny_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared tiny RUN (conftest.tiny_run) for `twinbot eval` to write into."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("eval-tiny") / "run")


# The detector's interval needs no 200 bootstrap resamples to show that eval wires it in (test_detector.py
# checks the interval itself).
TINY_OPTIONS = dict(
    samples=3, max_new_tokens=4, loss_samples=6, canaries=("zz-canary",), detector_resamples=20
)


@pytest.fixture(scope="module")
def tiny_result(evaluated_run: Path) -> EvalResult:
    return run_eval(EvalOptions(run_dir=evaluated_run, **TINY_OPTIONS), quiet=True)


def test_eval_on_tiny_model_writes_json_and_report(evaluated_run: Path, tiny_result: EvalResult) -> None:
    out = evaluated_run / EVAL_DIR
    saved = json.loads((out / EVAL_FILE).read_text(encoding="utf-8"))
    assert saved["twinbot_eval"] == 1 and len(saved["rows"]) == 3 and saved["loss_samples"] == 6
    for name in ("base", "adapter"):
        model = saved[name]
        assert math.isfinite(model["eval_loss"])
        assert model["perplexity"] == pytest.approx(math.exp(model["eval_loss"]))
        assert 0 <= model["style_distance"]["score"] <= 1
        assert model["memorisation"]["replies"] == 3
    assert saved["canaries_checked"] == 1
    for name in ("base", "adapter"):  # 3 contexts: measured, but too few for a verdict
        detection = saved[name]["detection"]
        assert detection["contexts"] == 3 and detection["verdict"] == "too_few"
        assert 0 <= detection["auc_ci"][0] <= detection["auc"] <= detection["auc_ci"][1] <= 1
    assert {"duplicate_reply_rate", "longest_line_run", "reply_distinct_1"} <= set(saved["adapter"]["style"])
    # the adapter changed something: its loss differs from the base model's
    assert saved["base"]["eval_loss"] != saved["adapter"]["eval_loss"]
    eval_rows = (Path(saved["data_dir"]) / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    real = {json.loads(line)["messages"][-1]["content"] for line in eval_rows}
    assert all(row["real"] in real for row in saved["rows"])

    report = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert report.count("data:image/png;base64,") == 3
    assert "<script" not in report and 'src="http' not in report
    if sys.platform != "win32":
        for path in (out / EVAL_FILE, out / REPORT_FILE):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert "Would your friends notice?" in report and "too few for a verdict" in report

    lines = "\n".join(summary_lines(tiny_result))
    assert "style dist" in lines and all(r.real not in lines for r in tiny_result.rows if len(r.real) > 3)
    assert "detector AUC" in lines and "3 contexts are too few for a confident verdict" in lines


def test_eval_is_reproducible(evaluated_run: Path, tiny_result: EvalResult) -> None:
    again = run_eval(EvalOptions(run_dir=evaluated_run, **TINY_OPTIONS), quiet=True)  # fixed seeds
    assert [(r.real, r.base, r.adapter) for r in again.rows] == [
        (r.real, r.base, r.adapter) for r in tiny_result.rows
    ]
    assert again.adapter.eval_loss == tiny_result.adapter.eval_loss


def test_report_escapes_message_text(tmp_path: Path, tiny_result: EvalResult) -> None:
    result = copy.deepcopy(tiny_result)
    result.rows = [ReplyRow("<script>alert(1)</script>", "a & b", "<b>bold</b>", "ok")]
    write_outputs(tmp_path, result)
    report = (tmp_path / REPORT_FILE).read_text(encoding="utf-8")
    assert "<script>" not in report and "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "a &amp; b" in report and "&lt;b&gt;bold&lt;/b&gt;" in report


def test_report_rounds_to_what_matters_and_shows_emoji(tmp_path: Path, tiny_result: EvalResult) -> None:
    result = copy.deepcopy(tiny_result)
    result.real_style.update(mean_chars=28.571428571428573, lowercase_rate=0.6666666666666666)
    result.real_style.update(punctuation_rate=0.03448275862068966, distinct_1=0.8123456789)
    result.rows = [ReplyRow("hi", "ok 💀", "sure", "fr ✨")]
    write_outputs(tmp_path, result)
    report = (tmp_path / REPORT_FILE).read_text(encoding="utf-8")
    assert "28.571" not in report and "0.666" not in report and "0.8123" not in report
    assert '<td class="num">28.6</td>' in report and '<td class="num">67%</td>' in report
    assert "3.4%" in report and "0.81" in report
    assert "ok 💀" in report and "Noto Color Emoji" in CSS and "Segoe UI Emoji" in CSS
    assert percent(0.0) == "0%" and percent(0.05) == "5.0%" and percent(0.5) == "50%" and percent(1) == "100%"


def _detection(auc: float, ci: tuple[float, float], verdict: str, contexts: int = 128) -> Detection:
    telling = [
        TellingFeature("reply_length", "shorter than yours", -1.2, 60.0, 20.0, 1e-6),
        TellingFeature("reused_reply", "gives the same reply to different messages", 0.8, 0.0, 0.3, 1e-4),
    ]
    return Detection(contexts, 0.74, (0.66, 0.82), auc, ci, 0.7, verdict, telling)


def test_verdict_sentence_reads_like_a_report(tiny_result: EvalResult) -> None:
    result = copy.deepcopy(tiny_result)
    result.base.detection = _detection(0.934, (0.9, 0.97), DISTINGUISHABLE)
    result.adapter.detection = _detection(0.812, (0.70, 0.90), DISTINGUISHABLE)
    assert verdict_sentence(result) == (
        "A classifier tells the twin's replies from yours 74% of the time (AUC 0.81, 95% CI 0.70–0.90); "
        "the base model's: AUC 0.93. Most telling: shorter than yours, gives the same reply to different "
        "messages."
    )
    result.adapter.detection = _detection(0.52, (0.41, 0.63), INDISTINGUISHABLE)
    assert verdict_sentence(result).startswith("A classifier does no better than chance")
    result.adapter.detection = _detection(0.6, (0.42, 0.78), INCONCLUSIVE, contexts=40)
    sentence = verdict_sentence(result)
    assert sentence.startswith("Inconclusive") and "40 contexts are too few" in sentence
    assert "--samples" in sentence
    result.adapter.detection = _detection(0.9, (0.8, 1.0), TOO_FEW, contexts=8)
    assert verdict_sentence(result).startswith("Only 8 contexts")
    result.adapter.detection = None
    assert verdict_sentence(result).startswith("Too few contexts")


def test_eval_cli_errors_are_one_line(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "twinbot", "eval", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "no summary.json" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# --- the real test -------------------------------------------------------------------------------------------

# The shared embedded run (conftest.embedded_run): the `fast` preset on the bundled sample for
# support.runs.EMBEDDED_STEPS short steps of 2 rows, which reliably moves the style. Measured (seed 0): style
# distance base 0.374, adapter 0.283 (0.235 with 1 row a step; 16 steps and 12 contexts gave 0.340 vs 0.330:
# too close to rely on).


@pytest.mark.slow
def test_fast_training_moves_style_towards_the_persona(embedded_run: TrainedRun, tmp_path: Path) -> None:
    """Bundled sample (persona Juno), embedded SmolLM2-135M, a short `fast` training, then eval on 12 seeded
    held-out contexts: the adapter's style distance must be below the base model's."""
    started = time.monotonic()
    run = copy_run(embedded_run, tmp_path / "run")
    options = EvalOptions(run_dir=run, samples=12, max_new_tokens=24, loss_samples=8, detector_resamples=20)
    result = run_eval(options, quiet=True)
    base, adapter = result.base.style_distance.score, result.adapter.style_distance.score
    print(f"style distance base {base:.3f} adapter {adapter:.3f}; eval {time.monotonic() - started:.0f} s")
    assert adapter < base
    assert result.adapter.eval_loss is not None and result.base.eval_loss is not None
    assert result.adapter.eval_loss < result.base.eval_loss
