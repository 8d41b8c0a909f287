"""Data-side benchmark: `twinbot parse` and `twinbot prepare` on big synthetic exports.

Writes a DiscordChatExporter JSON export and a WhatsApp Android .txt export of N messages each (default
1,000,000; the phrase banks of examples/generate_sample.py, scaled up), then measures, each in a fresh
Python process so the peak RSS belongs to that run alone:

  parse    every record of `twinbot.data.sources.parse_path(file)` consumed (what `twinbot parse` reads)
  prepare  `twinbot.data.prepare.run_prepare` for the persona Juno (what `twinbot prepare --me Juno` does),
           outputs written to a scratch folder and removed afterwards
  salted   prepare again on a copy of each export where `--salt` messages (default 1,000, spread evenly)
           carry adversarial text: the inputs that made the link filter backtrack exponentially, the
           WhatsApp notice and edited-marker checks quadratic, and scrub's overlap resolution quadratic

and prints a table (plus `--json PATH`) next to the targets: parse >= 100,000 messages/s, a full prepare
of 1,000,000 messages in <= 30 s (the same rate, >= 33,333 messages/s, at other sizes; timed from the
call, without the interpreter start, which the `wall s` column includes), peak RSS <= 1.5 GB, and a
salted prepare no slower than 1.2x the unsalted one.

    python bench/prepare.py --messages 20000          # quick check (seconds)
    python bench/prepare.py --json bench-prepare.json # the real thing (minutes; ~1 GB of scratch files)
    python bench/prepare.py --data /tmp/tb-bench --keep   # keep the exports to rerun without generating

Standard library only (plus twinbot itself). Peak RSS comes from `resource` (Linux, macOS); on Windows it
is reported as unavailable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "examples" / "generate_sample.py"
ME = ("Juno", "junebug")

PARSE_TARGET_RATE = 100_000  # messages/s
PREPARE_TARGET_SECONDS_PER_MILLION = 30.0
RSS_TARGET_BYTES = int(1.5 * 1024**3)
SALTED_TARGET_RATIO = 1.2
DEFAULT_MESSAGES = 1_000_000
DEFAULT_SALT = 1_000
KINDS = ("parse", "prepare", "salted")
SEED = 7


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("twinbot_examples_generator", GENERATOR)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the sample generator at {GENERATOR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


# --- the exports -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Export:
    name: str  # the format, as `twinbot --format` names it
    path: Path
    messages: int
    bytes: int


def export_paths(folder: Path) -> dict[str, Path]:
    return {"discord-json": folder / "bench-discord.json", "whatsapp": folder / "bench-whatsapp.txt"}


def generate_exports(folder: Path, messages: int) -> tuple[list[Export], float]:
    """Write both exports into `folder` (reusing them when a previous run wrote the same size)."""
    generator = load_generator()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "bench-exports.json"
    paths = export_paths(folder)
    generator_mtime = GENERATOR.stat().st_mtime_ns
    wanted = {"messages": messages, "seed": SEED, "generator_mtime_ns": generator_mtime}
    started = time.perf_counter()
    fresh = not (
        stamp.exists() and json.loads(stamp.read_text()) == wanted and all(p.exists() for p in paths.values())
    )
    if fresh:
        stamp.unlink(missing_ok=True)
        # About eleven years (a million messages) of a busy group from mid-2015 (Discord ids start in 2015): long sessions, short gaps.
        discord = generator.SimConfig(
            "discord",
            messages,
            SEED,
            datetime(2015, 6, 1, 18, 0),
            threads_per_session=(5, 12),
            mean_session_gap_hours=0.4,
        )
        whatsapp = generator.SimConfig(
            "whatsapp",
            messages,
            SEED + 1,
            datetime(2015, 6, 1, 19, 30),
            threads_per_session=(5, 12),
            mean_session_gap_hours=0.4,
        )
        for config, path, write in (
            (discord, paths["discord-json"], generator.write_discord),
            (whatsapp, paths["whatsapp"], generator.write_whatsapp),
        ):
            print(f"generating {path.name}: {messages:,} messages ...", flush=True)
            with path.open("w", encoding="utf-8", newline="\n") as out:
                written = write(config, out)
            if written != messages:
                raise SystemExit(f"generator wrote {written} messages instead of {messages}")
        stamp.write_text(json.dumps(wanted))
    seconds = time.perf_counter() - started
    exports = [Export(name, path, messages, path.stat().st_size) for name, path in paths.items()]
    return exports, seconds if fresh else 0.0


# --- salting: adversarial messages ----------------------------------------------------------------

# Each one made some step of prepare slow before it was made linear; sizes a chat could hold. The ones aimed
# at scrub stay under prepare's default --max-chars (2,000) so that they are kept and scrubbed.
ADVERSARIAL_TEXTS: tuple[str, ...] = (
    "www." * 2_000,  # link-only filter: exponential backtracking under fullmatch
    "<https://x> " * 700 + "?",
    "www." * 40 + "!",
    "x" + " " * 8_000 + "<This message was edited>",  # WhatsApp edited marker: quadratic
    "<" * 8_000 + ">",
    "changed " * 1_000 + "x",  # WhatsApp notice names: quadratic
    '"' + "hat " * 2_000,
    "203.0.113.7 " * 160,  # scrub: hundreds of matches in one message
    "+44 20 7946 0958, " * 100,
    "4111 1111 1111 1111; " * 90,
    "a@b.co " * 280,
    "Ab1" * 650,
    "1." * 990,
    "::" * 990,
    "0" * 1_990,
    "http://" + "a" * 1_990,
)


def salted_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-salted{path.suffix}")


def message_lines(fmt: str, lines: Iterator[str]) -> Iterator[tuple[str, str | None]]:
    """Each line with, for a line holding a text message's body, the part before the body (else None).
    The generator writes one JSON field per line, and every WhatsApp message starts a line."""
    discord_text = False  # the current Discord message is a plain or reply message, not a notice
    for line in lines:
        prefix = None
        if fmt == "discord-json":
            if line.startswith('      "type": '):
                discord_text = line.strip() in ('"type": "Default",', '"type": "Reply",')
            if discord_text and line.startswith('      "content": '):
                prefix = line[: len('      "content": ')]
        else:
            head, sep, _ = line.partition(" - ")
            author_end = line.find(": ", len(head) + len(sep))
            if sep and head[:1].isdigit() and author_end > 0:
                prefix = line[: author_end + 2]
        yield line, prefix


def salt_export(fmt: str, source: Path, target: Path, salt: int) -> int:
    """Copy `source` to `target` with `salt` text messages, spread evenly, replaced by adversarial ones
    (cycling through ADVERSARIAL_TEXTS); returns how many were replaced."""
    with source.open(encoding="utf-8") as src:
        texts = sum(1 for _, prefix in message_lines(fmt, src) if prefix is not None)
    every = max(1, texts // salt)
    seen = replaced = 0
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8", newline="\n") as out:
        for line, prefix in message_lines(fmt, src):
            if prefix is not None:
                seen += 1
                if seen % every == 0 and replaced < salt:
                    text = ADVERSARIAL_TEXTS[replaced % len(ADVERSARIAL_TEXTS)]
                    body = json.dumps(text) + "," if fmt == "discord-json" else text
                    line = f"{prefix}{body}\n"
                    replaced += 1
            out.write(line)
    return replaced


# --- one measured run (the worker, in its own process) ------------------------------------------------


def peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def worker(kind: str, fmt: str, path: Path, scratch: Path, result: Path) -> None:
    if importlib.util.find_spec("twinbot") is None:  # a checkout without `pip install -e .`
        sys.path.insert(0, str(ROOT / "src"))
    if kind == "parse":
        from twinbot.data.sources import parse_path

        started = time.perf_counter()
        records = sum(1 for _ in parse_path(path))
        seconds = time.perf_counter() - started
    else:  # prepare, on the export or its salted copy
        from twinbot.data.prepare import PrepareOptions, run_prepare

        out = scratch / f"{kind}-{fmt}"
        started = time.perf_counter()
        report = run_prepare(PrepareOptions(paths=[path], me=list(ME), out=out, overwrite=True))
        seconds = time.perf_counter() - started
        records = _messages_read(report)
        shutil.rmtree(out, ignore_errors=True)
    result.write_text(
        json.dumps({"records": records, "seconds": seconds, "peak_rss_bytes": peak_rss_bytes()})
    )


def _messages_read(report: object) -> int | None:
    """Messages prepare read, from its report (None when the report shape is not the expected one)."""
    stats = getattr(report, "stats", None)
    value = getattr(stats, "messages_read", None) if stats is not None else None
    return value if isinstance(value, int) else None


# --- the parent: run, compare with the targets, report ---------------------------------------------


@dataclass(slots=True)
class Run:
    benchmark: str  # "parse" | "prepare" | "salted"
    format: str
    file: str
    file_bytes: int
    messages: int  # messages in the export
    records: int | None  # what the parser yielded / prepare read
    seconds: float  # the work itself (after imports)
    wall_seconds: float  # the whole process, interpreter start and imports included
    messages_per_s: float
    megabytes_per_s: float
    peak_rss_bytes: int | None
    targets: dict[str, str] = field(default_factory=dict)
    ok: bool = True
    error: str | None = None


def measure(kind: str, export: Export, scratch: Path, verbose: bool) -> Run:
    result = scratch / f"result-{kind}-{export.name}.json"
    result.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--format",
        export.name,
        "--scratch",
        str(scratch),
        "--result",
        str(result),
        str(export.path),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=not verbose, text=True, check=False)
    wall = time.perf_counter() - started
    run = Run(
        kind, export.name, export.path.name, export.bytes, export.messages, None, 0.0, wall, 0.0, 0.0, None
    )
    if done.returncode != 0 or not result.exists():
        tail = (done.stderr or "").strip().splitlines()[-1:] if not verbose else []
        run.ok = False
        run.error = f"exit code {done.returncode}" + (f": {tail[0]}" if tail else "")
        return run
    data = json.loads(result.read_text())
    run.records = data["records"]
    run.seconds = data["seconds"]
    run.peak_rss_bytes = data["peak_rss_bytes"]
    run.messages_per_s = export.messages / run.seconds if run.seconds else 0.0
    run.megabytes_per_s = export.bytes / 1e6 / run.seconds if run.seconds else 0.0
    check_targets(run)
    return run


def check_targets(run: Run) -> None:
    checks: list[tuple[str, bool]] = []
    if run.benchmark == "parse":
        checks.append((f"rate >= {PARSE_TARGET_RATE:,}/s", run.messages_per_s >= PARSE_TARGET_RATE))
    else:
        # The work time: at small --messages the interpreter start (in wall_seconds) would dominate.
        limit = PREPARE_TARGET_SECONDS_PER_MILLION * run.messages / 1_000_000
        checks.append((f"time <= {limit:.3g} s", run.seconds <= limit))
    if run.peak_rss_bytes is not None:
        checks.append(("RSS <= 1.5 GB", run.peak_rss_bytes <= RSS_TARGET_BYTES))
    run.targets = {name: "ok" if passed else "MISSED" for name, passed in checks}
    run.ok = all(passed for _, passed in checks)


def salted_exports(exports: list[Export], salt: int) -> list[Export]:
    """The exports with `salt` adversarial messages each (written beside them, reused when present)."""
    salted = []
    for export in exports:
        target = salted_path(export.path)
        stamp = target.with_suffix(".salt.json")
        wanted = {
            "salt": salt,
            "source_bytes": export.bytes,
            "source_mtime_ns": export.path.stat().st_mtime_ns,
        }
        if not (target.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted):
            replaced = salt_export(export.name, export.path, target, salt)
            if replaced != salt:
                raise SystemExit(f"salted {replaced} messages of {export.path.name} instead of {salt}")
            stamp.write_text(json.dumps(wanted))
        salted.append(Export(export.name, target, export.messages, target.stat().st_size))
    return salted


def compare_salted(runs: list[Run]) -> None:
    """Adds the salted/plain time ratio to each salted run's targets."""
    plain = {r.format: r for r in runs if r.benchmark == "prepare" and r.error is None}
    for run in runs:
        base = plain.get(run.format)
        if run.benchmark != "salted" or run.error is not None or base is None or not base.seconds:
            continue
        ratio = run.seconds / base.seconds
        passed = ratio <= SALTED_TARGET_RATIO
        run.targets[f"{ratio:.2f}x plain <= {SALTED_TARGET_RATIO}x"] = "ok" if passed else "MISSED"
        run.ok = run.ok and passed


def render_table(runs: list[Run]) -> str:
    header = (
        "benchmark",
        "format",
        "messages",
        "records",
        "MB",
        "work s",
        "wall s",
        "msg/s",
        "MB/s",
        "peak RSS",
    )
    rows = [header]
    for r in runs:
        rss = f"{r.peak_rss_bytes / 1024**2:,.0f} MiB" if r.peak_rss_bytes is not None else "n/a"
        rows.append(
            (
                r.benchmark,
                r.format,
                f"{r.messages:,}",
                "?" if r.records is None else f"{r.records:,}",
                f"{r.file_bytes / 1e6:,.1f}",
                f"{r.seconds:.2f}",
                f"{r.wall_seconds:.2f}",
                f"{r.messages_per_s:,.0f}",
                f"{r.megabytes_per_s:,.1f}",
                rss,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        line = "  ".join(cells)
        if n == 0:
            line += "  targets"
        else:
            r = runs[n - 1]
            line += "  " + (r.error or ", ".join(f"{name}: {verdict}" for name, verdict in r.targets.items()))
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="messages per export")
    parser.add_argument("--data", type=Path, help="folder for the exports (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the exports (reused by the next run)")
    parser.add_argument("--only", choices=KINDS, help="run one benchmark only")
    parser.add_argument(
        "--salt", type=int, default=DEFAULT_SALT, help="adversarial messages in the salted copies (0: none)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="show the workers' own output")
    # internal: one measured run in a fresh process
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker, args.format, args.path, args.scratch, args.result)
        return 0
    if args.messages < 1000:
        parser.error("--messages must be at least 1000")

    folder = args.data or Path(tempfile.mkdtemp(prefix="twinbot-bench-"))
    keep = args.keep or args.data is not None
    try:
        exports, generate_seconds = generate_exports(folder, args.messages)
        if generate_seconds:
            print(f"generated {len(exports)} exports in {generate_seconds:.1f} s into {folder}")
        kinds = [k for k in KINDS if args.only in (None, k) and (k != "salted" or args.salt > 0)]
        if "salted" in kinds and "prepare" not in kinds:
            kinds.insert(0, "prepare")  # the salted run is measured against the plain one
        runs: list[Run] = []
        for kind in kinds:
            for export in exports if kind != "salted" else salted_exports(exports, args.salt):
                print(f"{kind} {export.path.name} ...", flush=True)
                runs.append(measure(kind, export, folder, args.verbose))
        compare_salted(runs)
    finally:
        for leftover in folder.glob("result-*.json"):
            leftover.unlink()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

    print()
    print(render_table(runs))
    print(
        f"\ntargets: parse >= {PARSE_TARGET_RATE:,} messages/s; prepare of 1,000,000 messages <= "
        f"{PREPARE_TARGET_SECONDS_PER_MILLION:.0f} s (scaled to --messages); peak RSS <= 1.5 GB; "
        f"salted prepare <= {SALTED_TARGET_RATIO}x the plain one ({args.salt:,} adversarial messages)"
    )
    if args.messages < DEFAULT_MESSAGES and any(r.benchmark == "prepare" for r in runs):
        print(f"note: at {args.messages:,} messages fixed costs (imports, the plot) weigh on prepare's time")
    if args.json:
        payload = {
            "benchmark": "bench/prepare.py",
            "messages_per_export": args.messages,
            "generated_seconds": generate_seconds,
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "targets": {
                "parse_messages_per_s": PARSE_TARGET_RATE,
                "prepare_seconds_per_million": PREPARE_TARGET_SECONDS_PER_MILLION,
                "peak_rss_bytes": RSS_TARGET_BYTES,
                "salted_ratio": SALTED_TARGET_RATIO,
            },
            "salt_messages": args.salt,
            "runs": [asdict(r) for r in runs],
            "ok": all(r.ok for r in runs),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
