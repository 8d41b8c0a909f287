"""Would your friends notice? The twin detector, style distance, loss and repetition of trained runs side by
side, and what moves the detector's score.

Two parts, each printing a table:

- side by side (`--runs RUN ...`): `twinbot eval`'s measurement (`twinbot.quality.evaluate.run_eval`) of
  each run, with the base model's row beside them (the base model's replies are the same in every run's eval:
  same contexts, same per-context seeds). With `--reuse`, a run's RUN/eval/eval.json made with the same
  contexts, seed and sampling is read instead of evaluated again.
- sweep (`--sweep RUN --vary KEY=V1,V2 ...`): the run's adapter replies to the same held-out contexts with
  one generation setting changed at a time (temperature, top_p, repetition_penalty, max_new_tokens,
  context_turns: the last N turns before the reply kept in the prompt); each reply set goes through the same
  detector (`twinbot.quality.detector.detect`, same seed) and style fingerprint as eval's. The first row is
  eval's own settings; with `--reuse` its replies come from RUN/eval/eval.json when they were made with them
  on the same backend.

`--backend llamacpp` generates the adapter's replies with llama.cpp on the run's f16 GGUF export (several
times faster on a CPU; the base model's replies in `--runs` stay torch's). Its replies differ slightly from
torch's (f16 weights, another matmul order): compare settings within one backend only.

Where two settings' 95% intervals overlap, the difference between them is not a measured one.

    python bench/detector.py --data DATA --runs RUN_FAST RUN_BASELINE
    python bench/detector.py --data DATA --sweep RUN --backend llamacpp --vary temperature=0.9,1.1 \
        --vary repetition_penalty=1.0,1.2 --vary max_new_tokens=24
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from twinbot.data import prepared  # noqa: E402
from twinbot.data.records import ChatTurn  # noqa: E402
from twinbot.quality.detector import BOOTSTRAP, SUGGESTED_CONTEXTS, detect  # noqa: E402
from twinbot.quality.evaluate import (  # noqa: E402
    DEFAULT_MAX_NEW_TOKENS,
    EvalOptions,
    pick_contexts,
    replies_to,
    run_eval,
)
from twinbot.quality.style import fingerprint, style_distance  # noqa: E402
from twinbot.runs import EVAL_DIR, EVAL_FILE, read_summary  # noqa: E402

SWEEP_KEYS = ("temperature", "top_p", "repetition_penalty", "max_new_tokens", "context_turns")


def stamp() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, load {load:.1f}"


def auc_text(detection: dict[str, Any] | None) -> str:
    if not detection:
        return "-"
    low, high = detection["auc_ci"]
    return f"{detection['auc']:.3f} [{low:.3f}, {high:.3f}]"


def telling_text(detection: dict[str, Any] | None) -> str:
    if not detection or not detection.get("telling"):
        return "-"
    return "; ".join(f"{t['feature']}: {t['description']}" for t in detection["telling"][:2])


def row_figures(style: dict[str, Any], distance: float, detection: dict[str, Any] | None) -> list[str]:
    return [
        auc_text(detection),
        "-" if not detection else f"{detection['accuracy']:.3f}",
        "-" if not detection else detection["verdict"],
        f"{distance:.3f}",
        f"{style['reply_distinct_1']:.3f}",
        f"{style['duplicate_reply_rate']:.3f}",
        str(style["longest_line_run"]),
        f"{style['mean_chars']:.1f}",
    ]


FIGURE_HEADERS = [
    "detector AUC [95% CI]",
    "accuracy",
    "verdict",
    "style dist",
    "distinct-1 in reply",
    "duplicate replies",
    "longest line run",
    "chars/msg",
]


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def generation_matches(record: dict[str, Any], options: EvalOptions, contexts: int) -> bool:
    return (
        record.get("contexts") == contexts
        and record.get("backend", "torch") == options.backend
        and record.get("seed") == options.seed
        and record.get("temperature") == options.temperature
        and record.get("top_p") == options.top_p
        and record.get("repetition_penalty") == options.repetition_penalty
        and record.get("max_new_tokens") == options.max_new_tokens
    )


def read_eval(run: Path) -> dict[str, Any] | None:
    path = run / EVAL_DIR / EVAL_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --- side by side -------------------------------------------------------------------------------------------


def side_by_side(args: argparse.Namespace) -> None:
    rows: list[list[str]] = []
    base_rows: list[list[str]] = []
    for run in args.runs:
        options = EvalOptions(
            run_dir=run,
            data_dir=args.data,
            samples=args.contexts,
            seed=args.seed,
            max_new_tokens=args.max_new_tokens,
            loss_samples=args.loss_samples,
            detector_resamples=args.resamples,
            backend=args.backend,
        )
        existing = read_eval(run) if args.reuse else None
        if (
            existing
            and existing["generation"]["seed"] == args.seed
            and existing["generation"].get("backend", "torch") == args.backend
            and existing["generation"]["contexts"] == min(args.contexts, existing["generation"]["contexts"])
        ):
            source = "eval.json"
            result = existing
        else:
            started = time.perf_counter()
            print(f"# eval {run} ({stamp()})", flush=True)
            result = asdict(run_eval(options, quiet=True))
            source = f"evaluated in {time.perf_counter() - started:.0f} s"
        summary = read_summary(run)
        config = summary.get("config", {})
        generation = result["generation"]
        for name, model in (("base", result["base"]), (run.name, result["adapter"])):
            line = [
                name,
                "-" if name == "base" else str(config.get("preset")),
                "-" if name == "base" else str(summary.get("steps")),
                "-" if name == "base" else f"{summary.get('tokens_seen', 0):,}",
                "-" if model["eval_loss"] is None else f"{model['eval_loss']:.4f}",
                *row_figures(model["style"], model["style_distance"]["score"], model["detection"]),
            ]
            (base_rows if name == "base" else rows).append(line)
        print(
            f"# {run}: {generation['contexts']} contexts, seed {generation['seed']}, temperature "
            f"{generation['temperature']}, top-p {generation['top_p']}, repetition penalty "
            f"{generation['repetition_penalty']}, {generation['max_new_tokens']} new tokens, adapter on "
            f"{generation.get('backend', 'torch')}; {source}; "
            f"adapter telling: {telling_text(result['adapter']['detection'])}; "
            f"base telling: {telling_text(result['base']['detection'])}",
            flush=True,
        )
    distinct_base = {tuple(row) for row in base_rows}
    headers = ["model", "preset", "steps", "training tokens", "eval loss", *FIGURE_HEADERS]
    print_table(
        headers, [*list(distinct_base)[:1], *rows] if len(distinct_base) == 1 else [*base_rows, *rows]
    )
    if len(distinct_base) > 1:
        print("# note: the base model's rows differ between runs (different contexts or settings)")


# --- sweep --------------------------------------------------------------------------------------------------


def parse_vary(values: list[str]) -> list[tuple[str, float]]:
    """(key, value) pairs of `--vary KEY=V1,V2` (max_new_tokens and context_turns are whole numbers)."""
    changes: list[tuple[str, float]] = []
    for item in values:
        key, _, numbers = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in SWEEP_KEYS or not numbers:
            raise SystemExit(f"--vary KEY=V1,V2 with KEY one of {', '.join(SWEEP_KEYS)}: {item!r}")
        changes.extend((key, float(number)) for number in numbers.split(","))
    return changes


def last_turns(messages: list[ChatTurn], turns: int) -> list[ChatTurn]:
    """The system turn (if any) and the last `turns` turns of a context."""
    head = [m for m in messages[:1] if m.role == "system"]
    return [*head, *messages[len(head) :][-turns:]]


def sweep(args: argparse.Namespace) -> None:
    from twinbot.bot.backends import Backend, load_backend

    run: Path = args.sweep
    summary = read_summary(run)
    data = args.data or Path(summary["config"]["data_dir"])
    base_options = EvalOptions(
        run_dir=run,
        data_dir=data,
        samples=args.contexts,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        detector_resamples=args.resamples,
        backend=args.backend,
    )
    contexts = pick_contexts(prepared.load_samples(data / prepared.EVAL_FILE), args.contexts, args.seed)
    real = [s.messages[-1].content for s in contexts]
    answered = [s.messages[-2].content for s in contexts]
    conversations = [list(s.messages[:-1]) for s in contexts]
    real_style = fingerprint(real)
    turns = [sum(1 for m in c if m.role != "system") for c in conversations]
    print(
        f"# sweep {run} on {data}: {len(contexts)} contexts, seed {args.seed}, context turns "
        f"{min(turns)}-{max(turns)} (mean {sum(turns) / len(turns):.1f}); adapter on {args.backend}; "
        f"{platform.machine()}; {stamp()}",
        flush=True,
    )
    twin: Backend | None = None
    rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    settings: list[tuple[str, EvalOptions, int | None]] = [("eval's settings", base_options, None)]
    for key, value in parse_vary(args.vary):
        if key == "context_turns":
            settings.append((f"context_turns={int(value)}", base_options, int(value)))
        elif key == "max_new_tokens":
            settings.append(
                (f"max_new_tokens={int(value)}", replace(base_options, max_new_tokens=int(value)), None)
            )
        else:
            settings.append((f"{key}={value:g}", replace(base_options, **{key: value}), None))
    existing = read_eval(run) if args.reuse else None
    for name, options, keep_turns in settings:
        started = time.perf_counter()
        source = "generated"
        if (
            keep_turns is None
            and options == base_options
            and existing
            and generation_matches(existing["generation"], options, len(contexts))
        ):
            replies = [row["adapter"] for row in existing["rows"]]
            source = "eval.json"
        else:
            if twin is None:
                twin = load_backend(args.backend, run)
            prompts = (
                conversations if keep_turns is None else [last_turns(c, keep_turns) for c in conversations]
            )
            replies = replies_to(twin, prompts, options)
        generated_s = time.perf_counter() - started
        style = fingerprint(replies)
        distance = style_distance(real_style, style).score
        detection = detect(answered, real, replies, seed=args.seed, resamples=args.resamples)
        detection_json = None if detection is None else asdict(detection)
        rows.append([name, *row_figures(style.to_json(), distance, detection_json)])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
        results.append(
            {
                "setting": name,
                "replies": replies,
                "style_distance": distance,
                "style": style.to_json(),
                "detection": detection_json,
            }
        )
        print(
            f"# {name}: {source} in {generated_s:.0f} s, detector {time.perf_counter() - started - generated_s:.0f} s; "
            f"telling: {telling_text(detection_json)}; top phrases: {style.top_phrases[:3]} ({stamp()})",
            flush=True,
        )
    print_table(["setting", *FIGURE_HEADERS], rows)
    if args.json:
        args.json.write_text(json.dumps({"run": str(run), "results": results}, ensure_ascii=False, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="Prepared data (default: each run's training data).")
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="Runs to evaluate side by side.")
    parser.add_argument("--sweep", type=Path, help="Run whose adapter replies the sweep varies.")
    parser.add_argument(
        "--vary", action="append", default=[], help=f"KEY=V1,V2 (KEY: {', '.join(SWEEP_KEYS)}); repeatable."
    )
    parser.add_argument("--contexts", type=int, default=SUGGESTED_CONTEXTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument(
        "--backend",
        choices=("torch", "llamacpp"),
        default="torch",
        help="What generates the adapter's replies (llamacpp: the run's f16 GGUF export, faster on CPUs).",
    )
    parser.add_argument("--loss-samples", type=int, default=256, help="Held-out replies in the loss.")
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP, help="Bootstrap resamples of the CI.")
    parser.add_argument("--reuse", action="store_true", help="Read RUN/eval/eval.json where it matches.")
    parser.add_argument("--json", type=Path, help="Write the sweep's replies and figures here.")
    args = parser.parse_args()
    if not args.runs and not args.sweep:
        parser.error("--runs RUN ... and/or --sweep RUN")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; started {stamp()}")
    started = time.perf_counter()
    if args.runs:
        side_by_side(args)
    if args.sweep:
        sweep(args)
    print(f"# done in {time.perf_counter() - started:.0f} s ({stamp()})")


if __name__ == "__main__":
    main()
