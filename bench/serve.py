"""Serving speed: `twinbot serve`'s app per backend, at 1 / 4 / 8 / 16 concurrent streams.

The app runs in-process (ServerThread) and is questioned through HTTP by the official openai client, one
thread per stream. Each scenario sends N streaming requests at once: greedy (temperature 0, the server's
repetition penalty 1.1), max 128 reply tokens, four prompts of different lengths in turn. Per scenario:

- aggregate tokens/s: all reply tokens (the responses' `usage`) / time until the last stream finished;
- TTFT p50/p95: request sent -> first content piece; latency p50/p95: request sent -> last piece;
- peak RSS: the benchmark process's peak resident memory so far (server, model and clients; each backend
  runs in a process of its own, its scenarios in order 1, 4, 8, 16).

Both torch and llamacpp decode concurrent requests together (continuous batching: bot/batching.py and
backends/llamacpp.py's LlamaDecoder), up to 16 replies at once.

    python bench/serve.py --json bench/out/serve.json            # embedded model: torch, and llamacpp if installed
    python bench/serve.py --model 360m                           # a random-weight SmolLM2-360M-shaped llama
    python bench/serve.py --streams 1,2 --max-tokens 8 --backends torch   # quick check
    python bench/serve.py --model RUN --backends llamacpp --gguf-type f16 --streams 1,8   # a run's export
    python bench/serve.py --backends llamacpp --gguf-type q8_0   # the embedded base weights as q8_0

Where other processes load the CPU, `--threads 1`: torch's threads wait for each other when one of them is
descheduled (on 2 busy cores, 2 threads decoded 1.6 tokens/s and 1 thread 4.1), and so do llama.cpp's, which
take torch's count (load 10.8: one stream 0.4 tokens/s with 2 threads, 17.6 with 1).

`--model 360m` builds the random model once in bench/out/random-360m (the embedded model's tokenizer and chat
template). Random weights rarely sample an end of turn, so its replies run to max tokens: fine for speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from twinbot.errors import TwinbotError  # noqa: E402

PROMPTS = [
    "Tell me a long story about a lighthouse keeper and a lost dog, with lots of detail.",
    "hey, how was your weekend?",
    "I've been thinking about moving to another city for work, but all my friends are here and I'm not "
    "sure the new job is worth it. The pay is better, the team seems nice, the rent would be double. "
    "What would you do, honestly?",
    "what should we cook tonight",
]
# SmolLM2-360M's shape (the embedded model's config otherwise), with random weights.
RANDOM_360M = dict(
    hidden_size=960,
    intermediate_size=2560,
    num_hidden_layers=32,
    num_attention_heads=15,
    num_key_value_heads=5,
)


@dataclass
class Request:
    ttft_s: float  # request sent -> first content piece
    latency_s: float  # request sent -> last piece
    tokens: int


@dataclass
class Scenario:
    backend: str
    streams: int
    requests: list[Request]
    wall_s: float  # first request sent -> last one finished
    peak_rss_mib: float

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def quantile(self, field: str, q: float) -> float:
        ordered = sorted(getattr(r, field) for r in self.requests)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "streams": self.streams,
            "tokens": self.tokens,
            "wall_s": round(self.wall_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "ttft_s_p50": round(self.quantile("ttft_s", 0.5), 3),
            "ttft_s_p95": round(self.quantile("ttft_s", 0.95), 3),
            "latency_s_p50": round(self.quantile("latency_s", 0.5), 3),
            "latency_s_p95": round(self.quantile("latency_s", 0.95), 3),
            "peak_rss_mib": round(self.peak_rss_mib),
            "requests": [asdict(r) for r in self.requests],
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="Model spec (default: embedded), or 360m (random weights)."
    )
    default_backends = "torch,llamacpp" if importlib.util.find_spec("llama_cpp") else "torch"
    parser.add_argument(
        "--backends", default=default_backends, help=f"Comma-separated (default {default_backends})."
    )
    parser.add_argument("--streams", default="1,4,8,16", help="Concurrent streams per scenario.")
    parser.add_argument("--max-tokens", type=int, default=128, help="Reply tokens per request.")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps, auto.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch's threads, also llama.cpp's (default: torch's; 1 on a machine others load).",
    )
    parser.add_argument(
        "--gguf-type",
        default=None,
        help="llamacpp: the RUN's export to run, f32|f16|q8_0|q6_k|q5_k_m|q4_k_m (default: the backend's); for the embedded "
        "model (default: the GGUF it ships, Q4_1) and 360m, their weights written as a GGUF of this type.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one backend, in a child process
    args = parser.parse_args(argv)
    args.streams = [int(n) for n in args.streams.split(",")]
    if min(args.streams) < 1 or args.max_tokens < 1:
        parser.error("--streams and --max-tokens must be at least 1")
    return args


def random_model(size: str) -> str:
    """The folder of a random-weight model of `size` (built once), with the embedded model's tokenizer."""
    if size != "360m":
        return size
    folder = REPO_ROOT / "bench" / "out" / "random-360m"
    if not (folder / "model.safetensors").is_file():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from twinbot.models.loading import resolve_model

        embedded = Path(resolve_model(None))
        config = LlamaConfig.from_pretrained(embedded, **RANDOM_360M)  # its vocabulary, special ids, RoPE
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (embedded / name).is_file():
                (folder / name).write_bytes((embedded / name).read_bytes())
    return str(folder)


def base_gguf(model: str | None, gguf_type: str) -> Path:
    """A model folder (None: the embedded model's import) written once as a GGUF of `gguf_type`, in
    bench/out: its base weights on llama.cpp, whose replies run long (a twin's end after a few tokens)."""
    from twinbot.models.llama_context import torch_work_apart
    from twinbot.models.loading import load_model, load_tokenizer

    name = Path(model).name if model else "embedded"
    path = REPO_ROOT / "bench" / "out" / f"{name}-{gguf_type}.gguf"
    if not path.is_file():
        from twinbot.export.gguf import write_gguf

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        # torch_work_apart: torch's OpenMP threads left in this process would slow llama.cpp 2x
        torch_work_apart(lambda: write_gguf(load_model(model), load_tokenizer(model), partial, gguf_type))  # type: ignore[arg-type]
        partial.replace(path)
    return path


# ---- one backend (in a process of its own) ----


def stream_once(base_url: str, prompt: str, max_tokens: int) -> Request:
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="bench", max_retries=0, timeout=1800)
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    stream = client.chat.completions.create(
        model="twinbot",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    done = time.perf_counter()
    return Request(ttft_s=(first or done) - sent, latency_s=done - sent, tokens=tokens)


def scenario(backend: str, base_url: str, max_tokens: int, streams: int) -> Scenario:
    barrier = threading.Barrier(streams)

    def one(number: int) -> Request:
        barrier.wait()
        return stream_once(base_url, PROMPTS[number % len(PROMPTS)], max_tokens)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=streams) as pool:
        requests = list(pool.map(one, range(streams)))
    wall = time.perf_counter() - started
    return Scenario(backend, streams, requests, wall, peak_rss_mib())


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    import torch

    from twinbot.bot.serve import ServerThread, create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_model(args.model) if args.model else None
    if backend == "torch":
        from twinbot.bot.loading import load_for_inference

        engine: Any = load_for_inference(model, device=args.device)  # create_app batches it (ModelEngine)
    else:
        from twinbot.bot.backends import load_backend
        from twinbot.runs import find_adapter

        spec = model
        is_run = model is not None and Path(model).is_dir() and find_adapter(Path(model)) is not None
        if backend == "llamacpp" and args.gguf_type and not is_run:
            spec = str(base_gguf(model, args.gguf_type))
        gguf_type = args.gguf_type if is_run else None  # a .gguf file runs as it is
        loaded = load_backend(backend, spec, device=args.device, gguf_type=gguf_type)
        print(loaded.describe(), file=sys.stderr)  # llamacpp: which GGUF, decoded in one batch
        engine = loaded.server_engine()
    slots = max(args.streams)
    app = create_app(engine, max_concurrent=slots, max_queue=slots)
    print(
        f"{backend}: {engine.name} on {args.device}, torch threads {torch.get_num_threads()}", file=sys.stderr
    )
    scenarios = []
    with ServerThread(app) as running:
        stream_once(running.base_url, PROMPTS[0], min(4, args.max_tokens))  # warm-up
        for streams in args.streams:
            scenarios.append(scenario(backend, running.base_url, args.max_tokens, streams))
            print(table(scenarios[-1:]).splitlines()[-1], file=sys.stderr)
    return {"model": engine.name, "scenarios": [s.summary() for s in scenarios]}


# ---- report ----


def table(scenarios: list[Scenario]) -> str:
    lines = [
        "| backend | streams | reply tokens | tokens/s | TTFT p50 s | TTFT p95 s | latency p50 s | latency p95 s "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        lines.append(
            f"| {s.backend} | {s.streams} | {s.tokens} | {s.tokens_per_s:.1f} | {s.quantile('ttft_s', 0.5):.2f} | "
            f"{s.quantile('ttft_s', 0.95):.2f} | {s.quantile('latency_s', 0.5):.2f} | "
            f"{s.quantile('latency_s', 0.95):.2f} | {s.peak_rss_mib:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        print(json.dumps(run_backend(args, args.only)))
        return 0
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--only", backend]
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            print(f"{backend}: failed (exit {done.returncode}); skipped", file=sys.stderr)
            continue
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    scenarios = [
        Scenario(
            backend,
            s["streams"],
            [Request(**r) for r in s["requests"]],
            s["wall_s"],
            s["peak_rss_mib"],
        )
        for backend, result in results.items()
        for s in result["scenarios"]
    ]
    print(table(scenarios))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": args.model or "embedded",
            "device": args.device,
            "max_tokens": args.max_tokens,
            "gguf_type": args.gguf_type,
            "torch_threads": args.threads,
            "load_average": os.getloadavg(),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "backends": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TwinbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
