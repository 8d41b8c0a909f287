"""`twinbot eval RUN`: measure a trained run against the persona's held-out replies (eval.jsonl).

1. loss and perplexity of the base model and of the adapter on the real replies (supervised tokens only,
   tokenized exactly as for training: `finetune.rows.tokenize_samples` + `finetune.steps.forward_loss`);
2. replies of both models to the same held-out contexts, sampled with fixed seeds;
3. style fingerprints of real vs generated replies and one style distance per model (`twinbot.quality.style`);
4. memorisation: generated replies that copy training replies, scrubbed-PII placeholders, planted canaries;
5. the twin detector: how well a classifier tells each model's replies from the real ones
   (`twinbot.quality.detector`).

Writes RUN/eval/eval.json and RUN/eval/report.html (user-only: both hold message text). docs/eval.md.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from twinbot.bot import sampling_defaults
from twinbot.bot.backends import Backend, TorchBackend, load_backend
from twinbot.bot.generate import GenerationSettings
from twinbot.bot.loading import LoadedModel, load_for_inference
from twinbot.console import say
from twinbot.data import prepared
from twinbot.data.records import ChatTurn, Sample
from twinbot.errors import TwinbotError
from twinbot.fileio import atomic_file, make_user_only, write_json
from twinbot.finetune.rows import IGNORE_INDEX, Row, collate, one_sample_rows, tokenize_samples
from twinbot.finetune.steps import forward_loss, perplexity
from twinbot.quality.detector import BOOTSTRAP, SUGGESTED_CONTEXTS, detect
from twinbot.quality.report_html import eval_report
from twinbot.quality.results import EvalResult, ModelEval, ReplyRow
from twinbot.quality.style import (
    TrainingIndex,
    find_canaries,
    fingerprint,
    memorisation,
    style_distance,
)
from twinbot.runs import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    EVAL_DIR,
    EVAL_FILE,
    REPORT_FILE,
    file_sha256,
    read_summary,
)

DEFAULT_SAMPLES = SUGGESTED_CONTEXTS  # the detector's interval needs about this many for a verdict
DEFAULT_MAX_NEW_TOKENS = sampling_defaults.EVAL_MAX_NEW_TOKENS  # shorter than chat's, see there
DEFAULT_LOSS_SAMPLES = 256
LOSS_BATCH = 8


@dataclass(frozen=True)
class EvalOptions:
    run_dir: Path
    data_dir: Path | None = None  # default: the data the run was trained on (summary.json config)
    samples: int = DEFAULT_SAMPLES  # held-out contexts to generate replies for
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = sampling_defaults.TEMPERATURE
    top_p: float = sampling_defaults.TOP_P
    repetition_penalty: float = sampling_defaults.REPETITION_PENALTY
    loss_samples: int = DEFAULT_LOSS_SAMPLES  # held-out samples in the loss (0 = all)
    canaries: tuple[str, ...] = ()
    device: str = "auto"
    detector_resamples: int = BOOTSTRAP  # bootstrap resamples behind the detector's confidence interval
    backend: str = "torch"  # what generates the adapter's replies (the base model's: always torch)
    gguf_type: str | None = None  # llamacpp: the type of the run's GGUF export (None: the backend's default)


# --- run / data ---------------------------------------------------------------------------------------------


def resolve_data_dir(options: EvalOptions, summary: dict[str, Any]) -> Path:
    data = options.data_dir or summary["config"].get("data_dir")
    if not data:
        raise TwinbotError("the run does not name its data folder; pass --data DIR", options.run_dir)
    data_dir = Path(data).expanduser()
    for name in (prepared.TRAIN_FILE, prepared.EVAL_FILE):
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


# --- loss ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def mean_loss(model: Any, rows: Sequence[Row], pad_id: int, device: torch.device) -> float | None:
    """Mean cross-entropy per supervised token (the training loss: `finetune.steps.forward_loss`)."""
    total, count = 0.0, 0
    for start in range(0, len(rows), LOSS_BATCH):
        batch = collate(rows[start : start + LOSS_BATCH], pad_id).to(device)
        total += float(forward_loss(model, batch).double())
        count += batch.num_supervised
    return total / count if count else None


# --- generation ---------------------------------------------------------------------------------------------


def replies_to(backend: Backend, contexts: Sequence[Sequence[ChatTurn]], options: EvalOptions) -> list[str]:
    """Replies to every context by `backend` (the sampling and reply ends of chat and serve; torch batches
    the contexts); context i is sampled with seed `options.seed + i`, for every model alike, so base and
    adapter get the same draws."""
    settings = GenerationSettings(
        temperature=options.temperature,
        top_p=options.top_p,
        max_new_tokens=options.max_new_tokens,
        repetition_penalty=options.repetition_penalty,
    )
    seeded = [replace(settings, seed=options.seed + number) for number in range(len(contexts))]
    return backend.generate_many(contexts, seeded)


# --- the stage ----------------------------------------------------------------------------------------------


@dataclass
class _Measured:
    """Loss and replies of one model (base or adapter) on the held-out data."""

    loss: float | None
    replies: list[str]


def run_eval(options: EvalOptions, quiet: bool = False) -> EvalResult:
    run_dir = Path(options.run_dir).expanduser()
    if options.samples < 1:
        raise TwinbotError("--samples must be at least 1")
    summary = read_summary(run_dir)
    if not (run_dir / ADAPTER_DIR / ADAPTER_CONFIG).is_file():
        raise TwinbotError("no adapter in this run (RUN/adapter); train it to the end first", run_dir)
    data_dir = resolve_data_dir(options, summary)
    config = summary["config"]
    base_spec = summary.get("base_model") or config.get("base_model")
    max_seq_len = int(config.get("max_seq_len") or 1024)

    eval_samples = prepared.load_samples(data_dir / prepared.EVAL_FILE)
    train_samples = prepared.load_samples(data_dir / prepared.TRAIN_FILE)
    contexts = pick_contexts(eval_samples, options.samples, options.seed)
    if not contexts:
        raise TwinbotError("no held-out sample answers someone else's turn; prepare more data", data_dir)

    lm = load_for_inference(run_dir, device=options.device)
    # llama.cpp and vllm run the merged twin only: the base model's replies come from torch, the adapter's
    # from --backend.
    twin = load_backend(
        options.backend, run_dir, device=options.device, gguf_type=options.gguf_type, loaded=lm
    )
    loss_pool = eval_samples if options.loss_samples <= 0 else eval_samples[: options.loss_samples]
    rows = one_sample_rows(tokenize_samples(loss_pool, lm.tokenizer, max_seq_len))
    base, adapter = _measure_both(lm, twin, rows, [s.messages[:-1] for s in contexts], options, quiet)

    real_replies = [s.messages[-1].content for s in contexts]
    real_style = fingerprint(real_replies)
    training_replies = [s.messages[-1].content for s in train_samples]
    index = TrainingIndex(training_replies)
    canaries = set(options.canaries) | find_canaries(training_replies)
    answered = [s.messages[-2].content for s in contexts]

    def model_eval(name: str, measured: _Measured) -> ModelEval:
        style = fingerprint(measured.replies)
        if not quiet:
            say(f"eval: detector, real vs {name} replies")
        return ModelEval(
            name=name,
            eval_loss=measured.loss,
            perplexity=perplexity(measured.loss),
            style=style.to_json(),
            style_distance=style_distance(real_style, style),
            memorisation=memorisation(measured.replies, index, canaries),
            detection=detect(
                answered,
                real_replies,
                measured.replies,
                seed=options.seed,
                resamples=options.detector_resamples,
            ),
        )

    result = EvalResult(
        run_dir=str(run_dir),
        data_dir=str(data_dir),
        base_model=str(base_spec),
        train_sha256=file_sha256(data_dir / prepared.TRAIN_FILE),
        preset=config.get("preset"),
        loss_samples=len(rows),
        supervised_tokens=sum(sum(1 for t in r.target_ids if t != IGNORE_INDEX) for r in rows),
        generation=_generation_record(options, len(contexts), twin.backend),
        real_style=real_style.to_json(),
        base=model_eval("base", base),
        adapter=model_eval("adapter", adapter),
        canaries_checked=len(canaries),
        rows=_reply_rows(contexts, real_replies, base.replies, adapter.replies),
    )
    write_outputs(run_dir / EVAL_DIR, result)
    return result


def _measure_both(
    lm: LoadedModel,
    twin: Backend,
    rows: Sequence[Row],
    contexts: Sequence[Sequence[ChatTurn]],
    options: EvalOptions,
    quiet: bool,
) -> tuple[_Measured, _Measured]:
    """Held-out loss and replies of the base model (adapter disabled), then of the adapter."""
    model, tokenizer = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if not quiet:
        say(
            f"eval: loss on {len(rows)} held-out replies, generation for {len(contexts)} contexts, base model"
        )
    with model.disable_adapter():
        base = _Measured(
            mean_loss(model, rows, pad_id, device), replies_to(TorchBackend(lm), contexts, options)
        )
    if not quiet:
        say("eval: the same with the adapter")
    adapter = _Measured(mean_loss(model, rows, pad_id, device), replies_to(twin, contexts, options))
    return base, adapter


def _generation_record(options: EvalOptions, contexts: int, backend: str) -> dict[str, Any]:
    from twinbot.bot.backends.llamacpp import DEFAULT_GGUF_TYPE

    return {
        "contexts": contexts,
        "backend": backend,
        "gguf_type": (options.gguf_type or DEFAULT_GGUF_TYPE) if backend == "llamacpp" else None,
        "seed": options.seed,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "repetition_penalty": options.repetition_penalty,
        "max_new_tokens": options.max_new_tokens,
    }


def _reply_rows(
    contexts: Sequence[Sample], real: Sequence[str], base: Sequence[str], adapter: Sequence[str]
) -> list[ReplyRow]:
    return [
        ReplyRow(last_lines(sample.messages[-2].content), real_reply, base_reply, adapter_reply)
        for sample, real_reply, base_reply, adapter_reply in zip(contexts, real, base, adapter, strict=True)
    ]


def write_outputs(out_dir: Path, result: EvalResult) -> None:
    """eval.json and report.html in `out_dir`, both user-only (they hold message text)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    make_user_only(out_dir)
    write_json(out_dir / EVAL_FILE, asdict(result))
    html = eval_report(result)
    with atomic_file(out_dir / REPORT_FILE) as fh:
        fh.write(html)
    make_user_only(out_dir / REPORT_FILE)
