"""`twinbot demo`: the whole loop on the bundled synthetic sample, in a few minutes on a laptop CPU.

prepare examples/ -> OUT/data, train the `fast` preset for a fixed number of steps -> OUT/run, then show
replies of the base model and of the trained adapter to held-out prompts side by side.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbot.console import quiet_transformers
from twinbot.data.records import Sample
from twinbot.errors import TwinbotError
from twinbot.fileio import make_user_only, read_jsonl, write_json

if TYPE_CHECKING:
    from rich.console import Console

    from twinbot.finetune.recipe import TrainSummary

SAMPLE_FILES = ("sample-discord.json", "sample-whatsapp.txt")
SAMPLE_ME = ("junebug", "Juno")  # the persona of the bundled sample, Juno (examples/README.md)
DEMO_MARKER = ".twinbot-demo"
# Measured on 2 CPU cores shared with other jobs (embedded model, packed 1024-token rows, bf16): ~200 tokens/s
# in the quietest steps, 10-40 tokens/s under heavy load. 32 one-row steps = ~32k tokens: ~3 minutes on two
# free cores (plus ~1 minute of loading and generation); proportionally longer on a busy machine.
# One row per step (instead of the fast preset's 4) and a higher learning rate give a few minutes of training
# enough optimizer updates for the persona's style to show; a run this short does not earn back the ~25 s
# that torch.compile costs at the first step. Everything else is the fast preset.
DEMO_MAX_STEPS = 32
DEMO_OVERRIDES = ("BATCH_SIZE=1", "LEARNING_RATE=1e-3", "TORCH_COMPILE=false")
DEMO_PROMPTS = 6
MAX_NEW_TOKENS = 40


@dataclass
class DemoReply:
    context: str  # last line of the last message before the reply
    real: str
    base: str
    adapter: str


@dataclass
class DemoResult:
    data_dir: Path
    run_dir: Path
    replies_path: Path
    replies: list[DemoReply]
    summary: TrainSummary


def examples_dir() -> Path:
    """The bundled sample: `examples/` of the checkout this package runs from, else of the current folder."""
    for candidate in (Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"):
        if all((candidate / name).is_file() for name in SAMPLE_FILES):
            return candidate
    raise TwinbotError(
        "bundled sample not found (examples/sample-discord.json, examples/sample-whatsapp.txt); "
        "run the demo from a twinbot checkout"
    )


def run_demo(
    out: Path,
    model: str | None = None,
    max_steps: int = DEMO_MAX_STEPS,
    prompts: int = DEMO_PROMPTS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    console: Console | None = None,
) -> DemoResult:
    """Prepare, train and compare. Re-running replaces this demo's own earlier outputs in `out`."""
    from rich.console import Console

    console = console or Console()
    out = Path(out)
    claim_demo_dir(out)
    data_dir, run_dir = out / "data", out / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecation notices from transformers/peft internals
        quiet_transformers()

        console.print(f"[bold]1/3 prepare[/] the bundled sample (persona Juno) -> {data_dir}")
        prepare_sample(data_dir)

        console.print(f"[bold]2/3 train[/] preset fast, {max_steps} steps -> {run_dir}")
        summary = train_demo(data_dir, run_dir, model, max_steps)
        console.print(
            f"    {summary.steps} steps, {summary.tokens_seen:,} tokens in {summary.wall_seconds:.0f} s "
            f"({summary.tokens_per_second:.0f} tokens/s, {summary.precision}); "
            f"eval loss {_loss(summary.final_eval_loss)}"
        )

        console.print(
            f"[bold]3/3 compare[/] base model vs adapter on {prompts} held-out prompts (fixed-seed sampling)"
        )
        samples = pick_prompts(data_dir / "eval.jsonl", prompts)
        replies = compare_replies(samples, run_dir, max_new_tokens)
    replies_path = out / "replies.json"
    write_json(replies_path, [asdict(reply) for reply in replies])
    console.print(replies_table(replies))
    console.print(f"adapter: {summary.adapter_dir}   replies: {replies_path}")
    return DemoResult(data_dir, run_dir, replies_path, replies, summary)


def claim_demo_dir(out: Path) -> None:
    """Mark `out` as a demo folder; refuse a non-empty folder that is not one (never delete user data)."""
    marker = out / DEMO_MARKER
    if out.exists() and not marker.is_file() and (not out.is_dir() or any(out.iterdir())):
        raise TwinbotError("exists and is not a folder made by `twinbot demo`; pick another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    make_user_only(out)
    write_json(marker, {"made_by": "twinbot demo"})


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def prepare_sample(data_dir: Path) -> None:
    """The bundled sample -> `data_dir` (replaced), as `twinbot prepare ... --me junebug --me Juno`."""
    from twinbot.data.prepare import PrepareOptions, run_prepare

    sample = examples_dir()
    run_prepare(
        PrepareOptions(
            paths=[sample / name for name in SAMPLE_FILES],
            me=list(SAMPLE_ME),
            out=data_dir,
            overwrite=True,
        )
    )


def train_demo(data_dir: Path, run_dir: Path, model: str | None, max_steps: int) -> TrainSummary:
    from twinbot.finetune.config import resolve_train_config
    from twinbot.finetune.recipe import main as train_main

    # The demo ignores the user's environment and .env: same settings on every machine.
    resolved = resolve_train_config(
        cli={
            "preset": "fast",
            "base_model": model,
            "data_dir": data_dir,
            "output_dir": run_dir,
            "max_steps": max_steps,
        },
        # One small evaluation at the end and one checkpoint: the few minutes go to training.
        overrides=[
            f"EVAL_EVERY={max_steps}",
            "EVAL_MAX_SAMPLES=16",
            f"SAVE_EVERY={max_steps}",
            *DEMO_OVERRIDES,
        ],
        environ={},
        dotenv_path=None,
    )
    return train_main(resolved.config, overwrite=True, sources=resolved.sources)


def pick_prompts(eval_path: Path, count: int) -> list[Sample]:
    """Up to `count` held-out samples, one per conversation, that reply to someone else's message."""
    picked: list[Sample] = []
    seen: set[str] = set()
    for _, row in read_jsonl(eval_path):
        sample = Sample.from_json(row)
        if len(sample.messages) < 2 or sample.conversation_id in seen:
            continue
        if sample.messages[-1].role == "assistant" and sample.messages[-2].role == "user":
            picked.append(sample)
            seen.add(sample.conversation_id)
        if len(picked) >= count:
            break
    if not picked:
        raise TwinbotError("no held-out prompts with context in eval.jsonl; prepare more data", eval_path)
    return picked


def compare_replies(samples: list[Sample], run_dir: Path, max_new_tokens: int) -> list[DemoReply]:
    """The base model's and the adapter's replies to each sample's context, made as `twinbot eval` makes
    them: chat's sampling settings and reply ends, sample i drawn with seed i for both models."""
    from twinbot.bot.generate import GenerationSettings, generate_replies
    from twinbot.bot.loading import load_for_inference

    lm = load_for_inference(run_dir)
    contexts = [sample.messages[:-1] for sample in samples]
    settings = [GenerationSettings(max_new_tokens=max_new_tokens, seed=seed) for seed in range(len(samples))]
    with lm.model.disable_adapter():
        base = generate_replies(lm, contexts, settings)
    tuned = generate_replies(lm, contexts, settings)
    return [
        DemoReply(
            context=_last_line(sample.messages[-2].content),
            real=sample.messages[-1].content,
            base=base_reply,
            adapter=tuned_reply,
        )
        for sample, base_reply, tuned_reply in zip(samples, base, tuned, strict=True)
    ]


def replies_table(replies: list[DemoReply]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="held-out prompts: base model vs trained adapter", show_lines=True)
    for header in ("context (last line)", "real reply", "base model", "adapter"):
        table.add_column(header, overflow="fold", ratio=1)
    for reply in replies:  # Text, not markup: chat text may contain [brackets]
        table.add_row(*(Text(cell) for cell in (reply.context, reply.real, reply.base, reply.adapter)))
    return table


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
