"""`twinbot eval RUN`: measure a trained run against the persona's held-out replies (eval.jsonl).

1. loss and perplexity of the base model and of the adapter on the real replies (supervised tokens only,
   tokenized exactly as for training: `tokens.tokenize_samples` + `train.forward_loss`);
2. replies of both models to the same held-out contexts, sampled with fixed seeds;
3. style fingerprints of real vs generated replies and one style distance per model (`twinbot.quality.style`);
4. memorisation: generated replies that copy training replies, scrubbed-PII placeholders, planted canaries.

Writes RUN/eval/eval.json and RUN/eval/report.html (user-only: both hold message text). docs/eval.md.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from twinbot.data.records import ChatTurn, Sample
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_file, make_user_only, write_json
from twinbot.finetune.steps import perplexity
from twinbot.quality.style import (
    Memorisation,
    StyleDistance,
    TrainingIndex,
    find_canaries,
    fingerprint,
    memorisation,
    style_distance,
)
from twinbot.runs import EVAL_DIR, EVAL_FILE, REPORT_FILE, read_summary

DEFAULT_SAMPLES = 32
DEFAULT_MAX_NEW_TOKENS = 48
DEFAULT_LOSS_SAMPLES = 256
LOSS_BATCH = 8


@dataclass(frozen=True)
class EvalOptions:
    run_dir: Path
    data_dir: Path | None = None  # default: the data the run was trained on (summary.json config)
    samples: int = DEFAULT_SAMPLES  # held-out contexts to generate replies for
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    loss_samples: int = DEFAULT_LOSS_SAMPLES  # held-out samples in the loss (0 = all)
    canaries: tuple[str, ...] = ()
    device: str = "auto"


@dataclass
class ModelEval:
    name: str  # "base" | "adapter"
    eval_loss: float | None
    perplexity: float | None
    style: dict[str, Any]  # StyleFingerprint.to_json()
    style_distance: StyleDistance
    memorisation: Memorisation


@dataclass
class ReplyRow:
    context: str  # the last lines of the other side's turn before the reply
    real: str
    base: str
    adapter: str


@dataclass
class EvalResult:
    run_dir: str
    data_dir: str
    base_model: str
    train_sha256: str
    preset: str | None
    loss_samples: int
    supervised_tokens: int
    generation: dict[str, Any]  # the sampling settings and seeds
    real_style: dict[str, Any]
    base: ModelEval
    adapter: ModelEval
    canaries_checked: int
    rows: list[ReplyRow] = field(default_factory=list)
    twinbot_eval: int = 1

    @property
    def models(self) -> tuple[ModelEval, ModelEval]:
        return self.base, self.adapter


# --- run / data ---------------------------------------------------------------------------------------------


def resolve_data_dir(options: EvalOptions, summary: dict[str, Any]) -> Path:
    data = options.data_dir or summary["config"].get("data_dir")
    if not data:
        raise TwinbotError("the run does not name its data folder; pass --data DIR", options.run_dir)
    data_dir = Path(data).expanduser()
    for name in ("train.jsonl", "eval.jsonl"):
        if not (data_dir / name).is_file():
            raise TwinbotError(
                f"no {name} here; pass --data DIR, the folder made by `twinbot prepare` for this run",
                data_dir,
            )
    return data_dir


def pick_contexts(samples: Sequence[Sample], count: int, seed: int) -> list[Sample]:
    """`count` held-out samples (seeded) whose reply answers someone else's turn, in file order."""
    eligible = [
        i
        for i, s in enumerate(samples)
        if len(s.messages) >= 2 and s.messages[-1].role == "assistant" and s.messages[-2].role == "user"
    ]
    chosen = sorted(random.Random(seed).sample(eligible, min(count, len(eligible))))
    return [samples[i] for i in chosen]


def last_lines(text: str, lines: int = 3) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


# --- loss -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def mean_loss(model: Any, rows: Sequence[Any], pad_id: int, device: torch.device) -> float | None:
    """Mean cross-entropy per supervised token (the training loss definition, train.forward_loss)."""
    from twinbot.finetune.rows import collate
    from twinbot.finetune.steps import forward_loss

    total, count = 0.0, 0
    for start in range(0, len(rows), LOSS_BATCH):
        batch = collate(rows[start : start + LOSS_BATCH], pad_id).to(device)
        total += float(forward_loss(model, batch).double())
        count += batch.num_supervised
    return total / count if count else None


# --- generation -------------------------------------------------------------------------------------------------


def generate_replies(lm: Any, contexts: Sequence[Sequence[ChatTurn]], options: EvalOptions) -> list[str]:
    """Replies to every context with `twinbot.bot.generate` (what chat and serve use); context i is sampled with
    seed `options.seed + i`, for every model alike, so base and adapter get the same draws."""
    from twinbot.bot.generate import GenerationSettings, generate_reply

    replies = []
    for number, context in enumerate(contexts):
        settings = GenerationSettings(
            temperature=options.temperature,
            top_p=options.top_p,
            max_new_tokens=options.max_new_tokens,
            repetition_penalty=options.repetition_penalty,
            seed=options.seed + number,
        )
        replies.append(generate_reply(lm, context, settings))
    return replies


# --- the stage ----------------------------------------------------------------------------------------------------


def run_eval(options: EvalOptions, quiet: bool = False) -> EvalResult:
    from twinbot.bot.generate import load_for_inference
    from twinbot.finetune.rows import load_samples, one_sample_rows, tokenize_samples
    from twinbot.runs import file_sha256

    run_dir = Path(options.run_dir).expanduser()
    if options.samples < 1:
        raise TwinbotError("--samples must be at least 1")
    summary = read_summary(run_dir)
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TwinbotError("no adapter in this run (RUN/adapter); train it to the end first", run_dir)
    data_dir = resolve_data_dir(options, summary)
    config = summary["config"]
    base_spec = summary.get("base_model") or config.get("base_model")
    max_seq_len = int(config.get("max_seq_len") or 1024)

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    eval_samples = load_samples(data_dir / "eval.jsonl")
    train_samples = load_samples(data_dir / "train.jsonl")
    contexts = pick_contexts(eval_samples, options.samples, options.seed)
    if not contexts:
        raise TwinbotError("no held-out sample answers someone else's turn; prepare more data", data_dir)

    lm = load_for_inference(run_dir, device=options.device)
    model, tokenizer = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    model.eval()

    loss_pool = eval_samples if options.loss_samples <= 0 else eval_samples[: options.loss_samples]
    rows = one_sample_rows(tokenize_samples(loss_pool, tokenizer, max_seq_len))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    messages = [s.messages[:-1] for s in contexts]

    say(f"eval: loss on {len(rows)} held-out replies, generation for {len(contexts)} contexts, base model")
    with model.disable_adapter():
        base_loss = mean_loss(model, rows, pad_id, device)
        base_replies = generate_replies(lm, messages, options)
    say("eval: the same with the adapter")
    adapter_loss = mean_loss(model, rows, pad_id, device)
    adapter_replies = generate_replies(lm, messages, options)

    real_replies = [s.messages[-1].content for s in contexts]
    real_style = fingerprint(real_replies)
    training_replies = [s.messages[-1].content for s in train_samples]
    index = TrainingIndex(training_replies)
    canaries = set(options.canaries) | find_canaries(training_replies)

    def model_eval(name: str, loss: float | None, replies: list[str]) -> ModelEval:
        style = fingerprint(replies)
        return ModelEval(
            name=name,
            eval_loss=loss,
            perplexity=perplexity(loss),
            style=style.to_json(),
            style_distance=style_distance(real_style, style),
            memorisation=memorisation(replies, index, canaries),
        )

    result = EvalResult(
        run_dir=str(run_dir),
        data_dir=str(data_dir),
        base_model=str(base_spec),
        train_sha256=file_sha256(data_dir / "train.jsonl"),
        preset=config.get("preset"),
        loss_samples=len(rows),
        supervised_tokens=sum(sum(1 for t in r.target_ids if t != -100) for r in rows),
        generation={
            "contexts": len(contexts),
            "seed": options.seed,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "repetition_penalty": options.repetition_penalty,
            "max_new_tokens": options.max_new_tokens,
        },
        real_style=real_style.to_json(),
        base=model_eval("base", base_loss, base_replies),
        adapter=model_eval("adapter", adapter_loss, adapter_replies),
        canaries_checked=len(canaries),
        rows=[
            ReplyRow(last_lines(s.messages[-2].content), real, base, tuned)
            for s, real, base, tuned in zip(
                contexts, real_replies, base_replies, adapter_replies, strict=True
            )
        ],
    )
    write_outputs(run_dir / EVAL_DIR, result)
    return result


def write_outputs(out_dir: Path, result: EvalResult) -> None:
    from twinbot.quality.report_html import eval_report

    out_dir.mkdir(parents=True, exist_ok=True)
    make_user_only(out_dir)
    write_json(out_dir / EVAL_FILE, result_json(result))
    html = eval_report(result)
    with atomic_file(out_dir / REPORT_FILE) as fh:
        fh.write(html)
    make_user_only(out_dir / REPORT_FILE)


def result_json(result: EvalResult) -> dict[str, Any]:
    return asdict(result)


def summary_lines(result: EvalResult) -> list[str]:
    """What the CLI prints: numbers only, never message text."""
    lines = [f"{'':8} {'eval loss':>10} {'ppl':>9} {'style dist':>11} {'memorised':>10} {'canaries':>9}"]
    for m in result.models:
        loss = "-" if m.eval_loss is None else f"{m.eval_loss:.3f}"
        ppl = "-" if m.perplexity is None else f"{m.perplexity:.1f}"
        lines.append(
            f"{m.name:8} {loss:>10} {ppl:>9} {m.style_distance.score:>11.3f} "
            f"{m.memorisation.memorised_share:>10.1%} {len(m.memorisation.canaries_found):>9}"
        )
    return lines
