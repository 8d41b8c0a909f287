"""The `twinbot` command line. Each command is a thin shell around one stage module."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer._click import exceptions as click_exceptions  # typer vendors click
from typer.core import TyperCommand

from twinbot import __version__
from twinbot.bot import sampling_defaults
from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from twinbot.bot.generate import GenerationSettings
    from twinbot.data.sources import DateOrder

app = typer.Typer(
    name="twinbot",
    help="Turn your own chat history into a chat model that talks like you.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"twinbot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    global _debug
    _debug = debug or os.environ.get("TWINBOT_DEBUG") == "1"


def _date_order(value: str | None) -> DateOrder | None:
    from twinbot.data.sources import DATE_ORDERS

    if value is None:
        return None
    order = value.strip().lower()
    if order not in DATE_ORDERS:
        raise TwinbotError(
            f"--date-order must be one of {', '.join(DATE_ORDERS)} (day, month, year), not {value!r}"
        )
    return order  # type: ignore[return-value]


@app.command()
def parse(
    paths: Annotated[list[Path], typer.Argument(help="Export files or folders.", show_default=False)],
    format: Annotated[
        str | None, typer.Option("--format", "-f", help="Skip detection: discord-json, whatsapp, ...")
    ] = None,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Write one normalized record per line to stdout.")
    ] = False,
    dayfirst: Annotated[
        bool | None, typer.Option("--dayfirst/--monthfirst", help="Same as --date-order dmy / mdy.")
    ] = None,
    date_order: Annotated[
        str | None,
        typer.Option(
            "--date-order", help="WhatsApp date order: dmy, mdy or ymd (default: inferred, and said)."
        ),
    ] = None,
) -> None:
    """Read chat exports and show what is in them (or stream normalized records with --jsonl)."""
    from twinbot.data.parse import run_parse

    run_parse(paths, fmt=format, jsonl=jsonl, dayfirst=dayfirst, date_order=_date_order(date_order))


@app.command()
def prepare(
    paths: Annotated[list[Path], typer.Argument(help="Export files or folders.", show_default=False)],
    me: Annotated[
        list[str] | None, typer.Option("--me", help="Your author id or name; repeat for several accounts.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for train/eval data.")] = Path(
        "data"
    ),
    model: Annotated[
        str | None, typer.Option("--model", help="Tokenizer for token-length stats (id, folder or .gguf).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the train/eval split.")] = 0,
    format: Annotated[str | None, typer.Option("--format", "-f", help="Skip format detection.")] = None,
    dayfirst: Annotated[
        bool | None, typer.Option("--dayfirst/--monthfirst", help="Same as --date-order dmy / mdy.")
    ] = None,
    date_order: Annotated[
        str | None,
        typer.Option(
            "--date-order", help="WhatsApp date order: dmy, mdy or ymd (default: inferred, and said)."
        ),
    ] = None,
    scrub: Annotated[bool, typer.Option("--scrub/--no-scrub", help="Replace PII with placeholders.")] = True,
    split: Annotated[
        str, typer.Option("--split", help="'conversation' (random) or 'time'.")
    ] = "conversation",
    eval_fraction: Annotated[
        float, typer.Option("--eval-fraction", help="Share of conversations for eval.")
    ] = 0.1,
    session_gap: Annotated[
        float, typer.Option("--session-gap", help="Minutes of silence that start a new conversation.")
    ] = 30.0,
    context_turns: Annotated[
        int, typer.Option("--context-turns", help="Previous turns kept as context.")
    ] = 8,
    min_chars: Annotated[int, typer.Option("--min-chars", help="Drop messages shorter than this.")] = 1,
    max_chars: Annotated[int, typer.Option("--max-chars", help="Drop messages longer than this.")] = 2000,
    persona: Annotated[
        str | None, typer.Option("--persona", help="Name used in the system prompt (default: your name).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output folder.")
    ] = False,
    context_chars: Annotated[
        int, typer.Option("--context-chars", help="Context budget in characters (without --model).")
    ] = 2000,
    context_tokens: Annotated[
        int, typer.Option("--context-tokens", help="Context budget in tokens (with --model).")
    ] = 1024,
    bot: Annotated[
        list[str] | None, typer.Option("--bot", help="Another bot name or id to drop; repeatable.")
    ] = None,
    redact: Annotated[
        list[str] | None,
        typer.Option("--redact", help="A name, address or word to replace by <REDACTED>; repeatable."),
    ] = None,
    redact_file: Annotated[
        list[Path] | None,
        typer.Option("--redact-file", help="A UTF-8 file of names/addresses to redact, one per line."),
    ] = None,
) -> None:
    """Turn exports into train.jsonl / eval.jsonl for the persona given by --me."""
    from twinbot.data.prepare import PrepareOptions, run_prepare

    run_prepare(
        PrepareOptions(
            paths=list(paths),
            me=list(me or []),
            out=out,
            model=model,
            seed=seed,
            fmt=format,
            dayfirst=dayfirst,
            date_order=_date_order(date_order),
            scrub=scrub,
            split=split,
            eval_fraction=eval_fraction,
            session_gap_minutes=session_gap,
            context_turns=context_turns,
            min_chars=min_chars,
            max_chars=max_chars,
            persona=persona,
            overwrite=overwrite,
            context_chars=context_chars,
            context_tokens=context_tokens,
            bot_names=list(bot or []),
            redact=list(redact or []),
            redact_files=list(redact_file or []),
        )
    )


# Options that `train` and `plan` share.
_DataOption = Annotated[Path | None, typer.Option("--data", help="Folder made by `twinbot prepare`.")]
_BaseModelOption = Annotated[str | None, typer.Option("--model", help="Base model: HF id, folder or .gguf.")]
_EpochsOption = Annotated[float | None, typer.Option("--epochs", help="Passes over the training data.")]
_ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML file with training settings.")]
_SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override any setting: KEY=VALUE (repeatable).")
]
# Options of an unattended run (twinbot.finetune.overnight); unset, they come from the environment or .env.
_AllowSleepOption = Annotated[
    bool | None,
    typer.Option(
        "--allow-sleep/--stay-awake",
        show_default=False,
        help="Let the machine sleep while it trains (default: kept awake; ALLOW_SLEEP=true).",
    ),
]
_NotifyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        metavar="URL",
        help="Webhook to tell when the run ends (Discord, Slack, ntfy, or any URL for a JSON POST); "
        "repeatable. Other users can read command lines: prefer NOTIFY_URL (comma-separated).",
    ),
]
_DesktopNotifyOption = Annotated[
    bool | None,
    typer.Option(
        "--desktop-notify/--no-desktop-notify",
        show_default=False,
        help="A desktop notification when the run ends (default: on where the desktop has one; DESKTOP_NOTIFY).",
    ),
]


def option_value_given(args: list[str], option: str, default: str, values: tuple[str, ...] = ()) -> list[str]:
    """`args` with `default` after each `option` that no value follows: typer has no options whose value is
    optional. A value is the next word unless it is another option; with `values`, only one of those (the
    command has arguments too, which may follow the option)."""
    given: list[str] = []
    for index, arg in enumerate(args):
        given.append(arg)
        following = args[index + 1] if index + 1 < len(args) else None
        missing = following is None or following.startswith("-") or bool(values and following not in values)
        if arg == option and missing:
            given.append(default)
    return given


def _with_optional_value(option: str, default: str, values: tuple[str, ...] = ()) -> type[TyperCommand]:
    class Command(TyperCommand):
        def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
            return super().parse_args(ctx, option_value_given(args, option, default, values))

    return Command


_TrainCommand = _with_optional_value("--resume", "yes")  # `--resume` alone, as before it took a value


@app.command(cls=_TrainCommand, context_settings={"allow_extra_args": False})
def train(
    data: _DataOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder (adapter, checkpoints, logs).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="baseline | optimized | aggressive | fast")
    ] = None,
    model: _BaseModelOption = None,
    epochs: _EpochsOption = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after N optimizer steps.")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="[yes|auto|no]",
            show_default=False,
            help="A run already in --out: yes (--resume alone) = continue from its last checkpoint; auto = "
            "continue it when unfinished, leave it when finished, start one where there is none "
            "(for scheduled starts); no = refuse it. Default: RESUME, else no.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
    config: _ConfigOption = None,
    set_: _SetOption = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Show the resolved settings and where each came from.")
    ] = False,
    allow_sleep: _AllowSleepOption = None,
    notify: _NotifyOption = None,
    desktop_notify: _DesktopNotifyOption = None,
) -> None:
    """LoRA fine-tune the base model on prepared data."""
    from twinbot.finetune.config import resolve_train_config
    from twinbot.finetune.overnight import resolve_overnight
    from twinbot.finetune.recipe import main as train_main

    resolved = resolve_train_config(
        cli={
            "data_dir": data,
            "output_dir": out,
            "preset": preset,
            "base_model": model,
            "epochs": epochs,
            "max_steps": max_steps,
            "resume": resume,
        },
        yaml_path=config,
        overrides=list(set_ or []),
    )
    if print_config:
        typer.echo(resolved.describe())
        return
    overnight = resolve_overnight(allow_sleep, notify, desktop_notify)
    train_main(
        resolved.config, resume=resume, overwrite=overwrite, sources=resolved.sources, overnight=overnight
    )


@app.command()
def plan(
    data: _DataOption = None,
    model: _BaseModelOption = None,
    presets: Annotated[
        str, typer.Option("--presets", help="Comma-separated presets to plan.")
    ] = "baseline,optimized,aggressive,fast",
    epochs: _EpochsOption = None,
    start: Annotated[
        str, typer.Option("--start", help="When training starts: now, 'fri 18:00', 'tomorrow 07:30', ISO.")
    ] = "now",
    calibrate_seconds: Annotated[
        float, typer.Option("--calibrate-seconds", help="Real training per preset to measure its speed.")
    ] = 60.0,
    no_calibrate: Annotated[
        bool, typer.Option("--no-calibrate", help="Rough analytic estimate instead (FLOPs / matmul speed).")
    ] = False,
    target_gpu: Annotated[
        str | None,
        typer.Option(
            "--target-gpu",
            help="Extrapolate to a GPU (rtx3060 ... h200) and predict its peak memory; without --data, "
            "memory only (--model: HF id, folder or a size: 7b, 8b, ...).",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    config: _ConfigOption = None,
    set_: _SetOption = None,
) -> None:
    """How long training takes on this machine, per preset: measured, with a schedule and a recommendation."""
    from twinbot.finetune.plan.planner import run_plan

    run_plan(
        data,
        model=model,
        presets=presets,
        epochs=epochs,
        start=start,
        calibrate_seconds=calibrate_seconds,
        no_calibrate=no_calibrate,
        target=target_gpu,
        as_json=json_output,
        yaml_path=config,
        overrides=list(set_ or []),
    )


@app.command(context_settings={"allow_extra_args": True})
def schedule(
    ctx: typer.Context,
    at: Annotated[
        str, typer.Option("--at", metavar="HH:MM", help="Time of day to start training.")
    ] = "23:00",
    days: Annotated[
        str, typer.Option("--days", help="'daily', or the days to start on: mon,tue,wed,thu,fri,sat,sun.")
    ] = "daily",
    data: _DataOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder, as for `train`.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Preset, as for `train`.")] = None,
    model: _BaseModelOption = None,
    config: _ConfigOption = None,
    set_: _SetOption = None,
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="Show the job for windows, macos, linux (systemd) or cron instead."),
    ] = None,
    install: Annotated[
        bool, typer.Option("--install", help="Install the job for this user (never system-wide).")
    ] = False,
    uninstall: Annotated[bool, typer.Option("--uninstall", help="Remove the job installed before.")] = False,
    name: Annotated[
        str, typer.Option("--name", help="The job's name (twinbot-NAME): one job per name.")
    ] = "overnight",
) -> None:
    """Start `twinbot train` at a time of day, and again at login after an interruption (--resume auto).

    More `train` options go after `--`: twinbot schedule --at 23:00 --data data --out runs/me -- --epochs 2
    """
    from twinbot.finetune.autostart import make_job, option_arguments, run_schedule

    named = {"--data": data, "--out": out, "--preset": preset, "--model": model, "--config": config}
    job = make_job(name, at, days, [*option_arguments(named, set_ or []), *ctx.args])
    # the job's arguments must be ones `twinbot train` takes: checked now, not at 23:00
    train_command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    train_command.make_context("twinbot train", list(job.command[4:]))
    typer.echo(run_schedule(job, platform, install_job=install, uninstall_job=uninstall))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's data and run.")] = Path(
        "demo"
    ),
) -> None:
    """Run the whole loop on the bundled sample with the embedded default model."""
    from twinbot.demo import run_demo

    run_demo(out)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="RUN folder from `twinbot train`.", show_default=False)],
    out: Annotated[
        Path,
        typer.Argument(help="Output: a folder (merged, ollama) or a .gguf file (gguf).", show_default=False),
    ],
    to: Annotated[str, typer.Option("--to", help="merged | gguf | ollama", show_default=False)],
    dtype: Annotated[str, typer.Option("--dtype", help="Merged weights: bf16 | fp16 | fp32.")] = "bf16",
    gguf_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="GGUF weights: f32 | f16 | q8_0 | q6_k | q5_k_m | q4_k_m (k-quants need llama-cpp-python; default f16).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Export the fine-tuned model (adapter merged in) for transformers, llama.cpp/GGUF or Ollama."""
    from twinbot.export.exporter import run_export

    run_export(run, to, out, dtype=dtype, gguf_type=gguf_type, overwrite=overwrite)


_ModelArg = Annotated[
    str, typer.Argument(help="RUN folder from `twinbot train` (or adapter / merged folder / .gguf).")
]
_Temperature = Annotated[float, typer.Option("--temperature", help="0 = greedy (always the likeliest).")]
_TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling: keep this share of probability.")]
_MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Longest reply, in tokens.")]
_Seed = Annotated[int | None, typer.Option("--seed", help="Fixed seed: reproducible sampling.")]
_RepetitionPenalty = Annotated[float, typer.Option("--repetition-penalty", help="1 = off.")]
_Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps.")]
_Backend = Annotated[
    str,
    typer.Option("--backend", help="auto | torch | llamacpp | vllm (auto: llama.cpp on CPU, vllm on CUDA)."),
]
_GgufType = Annotated[
    str | None,
    typer.Option(
        "--gguf-type",
        help="llamacpp: the type of the RUN's GGUF export, f32 | f16 | q8_0 | q6_k | q5_k_m | q4_k_m "
        "(default q8_0; exported once into RUN/export/).",
        show_default=False,
    ),
]


def _generation_settings(
    temperature: float, top_p: float, max_new_tokens: int, seed: int | None, repetition_penalty: float
) -> GenerationSettings:
    from twinbot.bot.generate import GenerationSettings

    return GenerationSettings(
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        repetition_penalty=repetition_penalty,
    )


@app.command()
def chat(
    run: _ModelArg,
    temperature: _Temperature = sampling_defaults.TEMPERATURE,
    top_p: _TopP = sampling_defaults.TOP_P,
    max_new_tokens: _MaxNewTokens = sampling_defaults.MAX_NEW_TOKENS,
    seed: _Seed = None,
    repetition_penalty: _RepetitionPenalty = sampling_defaults.REPETITION_PENALTY,
    system: Annotated[
        str | None, typer.Option("--system", help="System prompt (default: the one used in training).")
    ] = None,
    device: _Device = "auto",
    backend: _Backend = "auto",
    gguf_type: _GgufType = None,
) -> None:
    """Chat with the trained persona in the terminal (/reset, /system TEXT, /quit)."""
    from twinbot.bot.chat import run_chat

    settings = _generation_settings(temperature, top_p, max_new_tokens, seed, repetition_penalty)
    run_chat(run, settings, device=device, system=system, backend=backend, gguf_type=gguf_type)


@app.command()
def discord(
    run: _ModelArg,
    channel: Annotated[
        list[int] | None,
        typer.Option("--channel", help="Channel id where the bot answers every message; repeatable."),
    ] = None,
    history: Annotated[int, typer.Option("--history", help="Recent messages per channel the bot sees.")] = 10,
    rate_limit: Annotated[
        float, typer.Option("--rate-limit", help="Seconds between two replies to the same user.")
    ] = 5.0,
    allow_user: Annotated[
        list[int] | None,
        typer.Option(
            "--allow-user",
            metavar="ID",
            help="Answer only this user id (in servers and DMs); repeatable. Default: "
            "DISCORD_ALLOW_USERS (ids separated by commas), else anyone.",
        ),
    ] = None,
    allow_guild: Annotated[
        list[int] | None,
        typer.Option(
            "--allow-guild",
            metavar="ID",
            help="Ignore messages in servers other than this server id; repeatable. Default: "
            "DISCORD_ALLOW_GUILDS (ids separated by commas), else any server the bot is in.",
        ),
    ] = None,
    dms: Annotated[
        bool, typer.Option("--dms", help="Also answer direct messages (without it DMs get no reply at all).")
    ] = False,
    max_pending: Annotated[
        int,
        typer.Option("--max-pending", help="Messages waiting for a reply; more get a short busy answer."),
    ] = 8,
    max_messages_per_reply: Annotated[
        int,
        typer.Option(
            "--max-messages-per-reply", help="Messages one reply may send; later lines join the last one."
        ),
    ] = 5,
    temperature: _Temperature = sampling_defaults.TEMPERATURE,
    top_p: _TopP = sampling_defaults.TOP_P,
    max_new_tokens: _MaxNewTokens = sampling_defaults.MAX_NEW_TOKENS,
    seed: _Seed = None,
    repetition_penalty: _RepetitionPenalty = sampling_defaults.REPETITION_PENALTY,
    device: _Device = "auto",
    backend: _Backend = "auto",
    gguf_type: _GgufType = None,
) -> None:
    """Run the persona as a Discord bot (token from the DISCORD_TOKEN environment variable)."""
    from twinbot.bot.discord_bot import DiscordOptions, run_discord

    settings = _generation_settings(temperature, top_p, max_new_tokens, seed, repetition_penalty)
    options = DiscordOptions(
        channels=frozenset(channel or []),
        history=history,
        rate_limit_seconds=rate_limit,
        settings=settings,
        allowed_users=frozenset(allow_user or []),
        allowed_guilds=frozenset(allow_guild or []),
        dms=dms,
        max_pending=max_pending,
        max_messages_per_reply=max_messages_per_reply,
    )
    run_discord(run, options, device=device, backend=backend, gguf_type=gguf_type)


_EvalCommand = _with_optional_value("--blind", "pair", ("pair", "single"))


@app.command(name="eval", cls=_EvalCommand)
def eval_(
    run: Annotated[Path, typer.Argument(help="RUN folder made by `twinbot train`.", show_default=False)],
    data: Annotated[
        Path | None, typer.Option("--data", help="Prepared data (default: the run's training data).")
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", help="Held-out contexts to reply to (~128 for a detector verdict).")
    ] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Seed for picking contexts and sampling.")] = 0,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Tokens per generated reply.")
    ] = sampling_defaults.EVAL_MAX_NEW_TOKENS,
    loss_samples: Annotated[
        int, typer.Option("--loss-samples", help="Held-out replies in the loss (0 = all).")
    ] = 256,
    canary: Annotated[
        list[str] | None,
        typer.Option("--canary", help="A planted string to look for in replies; repeatable."),
    ] = None,
    device: _Device = "auto",
    backend: _Backend = "torch",
    gguf_type: _GgufType = None,
    blind: Annotated[
        str | None,
        typer.Option(
            "--blind",
            metavar="[pair|single]",
            show_default=False,
            help="Instead of measuring, serve a blind test page of RUN/eval/eval.json: pick the real reply "
            "of two (pair, --blind alone) or say real or twin of one (single); answers go to RUN/eval/blind.json.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="With --blind: address to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="With --blind: port to listen on.")] = 8001,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host", metavar="NAME", help="With --blind: also answer this host name (repeatable)."
        ),
    ] = None,
) -> None:
    """Measure a run on held-out replies: loss, style vs the real person, memorisation; RUN/eval/.
    With --blind: a blind test page, can people tell the real replies from the twin's?"""
    if blind is not None:
        from twinbot.quality.blind_server import run_blind

        run_blind(run, blind, host=host, port=port, allow_hosts=allow_host or [])
        return
    from twinbot.quality.evaluate import EvalOptions, run_eval
    from twinbot.quality.results import summary_lines
    from twinbot.runs import EVAL_DIR

    result = run_eval(
        EvalOptions(
            run_dir=run,
            data_dir=data,
            samples=samples,
            seed=seed,
            max_new_tokens=max_new_tokens,
            loss_samples=loss_samples,
            canaries=tuple(canary or ()),
            device=device,
            backend=backend,
            gguf_type=gguf_type,
        )
    )
    typer.echo("\n".join(summary_lines(result)))
    typer.echo(f"results: {run / EVAL_DIR} (eval.json, report.html; they contain message text)")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="RUN folders evaluated with `twinbot eval`.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for the table and plot (default: RUN1's parent)."),
    ] = None,
) -> None:
    """One table and plot across evaluated runs; writes DATA/compare.json for `twinbot plan`."""
    from twinbot.quality.compare import run_compare

    run_compare(list(runs), out)


@app.command()
def runs(
    folder: Annotated[
        Path, typer.Argument(help="Folder holding RUN folders (or one RUN folder).", show_default=True)
    ] = Path("runs"),
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """The training runs in a folder: status, progress, time (or time left) and results."""
    from twinbot.finetune.run_table import run_runs

    run_runs(folder, as_json=json_output)


@app.command()
def serve(
    run: _ModelArg,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            show_default=False,
            help="Require `Authorization: Bearer KEY` on API requests. Other users of this machine can read "
            "command lines: prefer the TWINBOT_API_KEY environment variable or --api-key-file.",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            metavar="PATH",
            show_default=False,
            help="Read the API key from the first line of this file (instead of --api-key).",
        ),
    ] = None,
    max_concurrent: Annotated[int, typer.Option("--max-concurrent", help="Generations running at once.")] = 8,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Requests waiting for a slot before 429.")
    ] = 16,
    device: _Device = "auto",
    backend: _Backend = "auto",
    gguf_type: _GgufType = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            help="Also answer requests addressed to this host name (repeatable); loopback names and --host "
            "always work. Other names are refused, so that web pages cannot reach the server.",
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Serve on an address other than this machine's without an API key (refused otherwise).",
        ),
    ] = False,
    body_timeout: Annotated[
        float,
        typer.Option("--body-timeout", metavar="SECONDS", help="Time to send a request's body, then 408."),
    ] = 30.0,
    queue_timeout: Annotated[
        float,
        typer.Option(
            "--queue-timeout", metavar="SECONDS", help="Time a request may wait for a slot, then 503."
        ),
    ] = 120.0,
    generation_timeout: Annotated[
        float,
        typer.Option(
            "--generation-timeout",
            metavar="SECONDS",
            help='Time one reply may take; it then ends with the text so far (finish_reason "length").',
        ),
    ] = 300.0,
) -> None:
    """Serve the model over an OpenAI-compatible API with a web chat page at /."""
    from twinbot.bot.serve import ServeLimits, run_serve

    run_serve(
        run,
        host=host,
        port=port,
        api_key=api_key,
        api_key_file=api_key_file,
        max_concurrent=max_concurrent,
        max_queue=max_queue,
        device=device,
        backend=backend,
        gguf_type=gguf_type,
        allow_hosts=allow_host or [],
        insecure_no_auth=insecure_no_auth,
        limits=ServeLimits(
            body_timeout_s=body_timeout,
            queue_timeout_s=queue_timeout,
            generation_timeout_s=generation_timeout,
        ),
    )


def main() -> None:
    if hasattr(signal, "SIGPIPE"):  # `twinbot parse --jsonl ... | head` ends quietly, like other Unix tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        rc = app(standalone_mode=False)
    except TwinbotError as exc:
        _fail(exc.render(), exc)
    except click_exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except click_exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "twinbot"
        _fail(f"{exc.format_message().rstrip('.')}; see `{command} --help`", exc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(message: str, exc: BaseException) -> None:
    if _debug or "--debug" in sys.argv:
        traceback.print_exception(exc)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
