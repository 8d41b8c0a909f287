"""Serving speed: `twinbot serve` (through HTTP, the official openai client) vs a plain transformers generate().

Same model, prompt, greedy decoding (temperature 0, repetition penalty 1.1) and max tokens on both sides.

- one stream: time to first token (TTFT) and tokens/s (reply tokens / whole request time);
- N concurrent streams (default 8) all sent at once: aggregate tokens/s (all reply tokens / time until the last
  one finished) and p50/p95 latency (request sent -> last token);
- the baseline answers the same N requests with `model.generate()` one after another in a loop, latencies
  counted from the moment all N "arrived" (the loop's start), so the two p95s are comparable.

Server reply tokens come from the response's `usage`; baseline tokens are the ids generate() returned (end
token excluded). The server stops at end-of-turn markers, so its replies can be shorter; compare tokens/s.

    python bench/serve.py                                          # embedded default model, CPU (the real run)
    python bench/serve.py --model DIR --requests 2 --max-tokens 8  # quick end-to-end check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
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

from twinbot.data.records import ChatTurn  # noqa: E402
from twinbot.errors import TwinbotError  # noqa: E402

PROMPT = "Tell me a long story about a lighthouse keeper and a lost dog, with lots of detail."


@dataclass
class Request:
    ttft_s: float  # request sent -> first reply token
    latency_s: float  # request sent -> last reply token
    tokens: int


@dataclass
class Scenario:
    side: str  # "server" or "generate()"
    streams: int
    requests: list[Request]
    wall_s: float  # first request sent -> last one finished

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.requests)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, quantile: float) -> float:
        ordered = sorted(r.latency_s for r in self.requests)
        return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]  # nearest rank

    def summary(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "streams": self.streams,
            "tokens": self.tokens,
            "wall_s": round(self.wall_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "ttft_s_median": round(statistics.median(r.ttft_s for r in self.requests), 3),
            "latency_s_p50": round(self.latency(0.50), 3),
            "latency_s_p95": round(self.latency(0.95), 3),
            "requests": [asdict(r) for r in self.requests],
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="Model spec for load_for_inference (default: embedded)."
    )
    parser.add_argument("--requests", type=int, default=8, help="Concurrent streams in the second scenario.")
    parser.add_argument("--max-tokens", type=int, default=64, help="Reply tokens per request.")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="Server generation slots (default: --requests, so every stream runs at once).",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps, auto.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.max_tokens < 1:
        parser.error("--requests and --max-tokens must be at least 1")
    return args


# ---- baseline: plain transformers generate() ----


class _FirstTokenClock:
    """A generate() streamer that notes when the first generated token arrives (the first put() is the prompt)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


def generate_once(lm: Any, prompt_ids: list[int], max_tokens: int, since: float) -> Request:
    import torch

    device = next(lm.model.parameters()).device
    clock = _FirstTokenClock()
    with torch.inference_mode():
        output = lm.model.generate(
            input_ids=torch.tensor([prompt_ids], device=device),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=device),
            max_new_tokens=max_tokens,
            do_sample=False,
            repetition_penalty=1.1,
            eos_token_id=sorted(lm.stop_token_ids) or None,
            pad_token_id=lm.tokenizer.pad_token_id,
            streamer=clock,
        )
    done = time.perf_counter()
    new_ids = output[0, len(prompt_ids) :].tolist()
    tokens = len([token for token in new_ids if token not in lm.stop_token_ids])
    first = clock.first_token_at or done
    return Request(ttft_s=first - since, latency_s=done - since, tokens=tokens)


def baseline(lm: Any, prompt_ids: list[int], max_tokens: int, streams: int) -> Scenario:
    started = time.perf_counter()
    requests = [generate_once(lm, prompt_ids, max_tokens, since=started) for _ in range(streams)]
    return Scenario("generate()", streams, requests, time.perf_counter() - started)


# ---- the server, through HTTP ----


def stream_once(base_url: str, messages: list[dict[str, str]], max_tokens: int) -> Request:
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="bench", max_retries=0, timeout=600)
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    stream = client.chat.completions.create(
        model="twinbot",
        messages=messages,  # type: ignore[arg-type]
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


def server(base_url: str, messages: list[dict[str, str]], max_tokens: int, streams: int) -> Scenario:
    barrier = threading.Barrier(streams)

    def one(_: int) -> Request:
        barrier.wait()
        return stream_once(base_url, messages, max_tokens)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=streams) as pool:
        requests = list(pool.map(one, range(streams)))
    return Scenario("server", streams, requests, time.perf_counter() - started)


# ---- report ----


def table(scenarios: list[Scenario]) -> str:
    lines = [
        "| side | streams | reply tokens | tokens/s | TTFT s (median) | p50 latency s | p95 latency s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        lines.append(
            f"| {s.side} | {s.streams} | {s.tokens} | {s.tokens_per_s:.1f} | "
            f"{statistics.median(r.ttft_s for r in s.requests):.3f} | {s.latency(0.5):.2f} | {s.latency(0.95):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from twinbot.bot.generate import build_prompt_ids, with_system_prompt
    from twinbot.bot.loading import load_for_inference
    from twinbot.bot.serve import ServerThread, create_app

    lm = load_for_inference(args.model, device=args.device)
    turns = with_system_prompt(lm, [ChatTurn("user", PROMPT)])
    prompt_ids = build_prompt_ids(lm, turns, args.max_tokens)
    messages = [{"role": turn.role, "content": turn.content} for turn in turns]
    slots = args.max_concurrent or args.requests
    print(
        f"model {lm.name} ({lm.kind}) on {args.device}, torch threads {torch.get_num_threads()}, "
        f"prompt {len(prompt_ids)} tokens, max tokens {args.max_tokens}, {args.requests} streams, "
        f"{slots} server slots",
        file=sys.stderr,
    )
    app = create_app(lm, max_concurrent=slots, max_queue=max(args.requests, 1))
    scenarios: list[Scenario] = []
    with ServerThread(app) as running:
        # Warm-up on both sides (first-call allocations, lazy imports).
        generate_once(lm, prompt_ids, min(4, args.max_tokens), since=time.perf_counter())
        stream_once(running.base_url, messages, min(4, args.max_tokens))
        scenarios.append(baseline(lm, prompt_ids, args.max_tokens, 1))
        scenarios.append(server(running.base_url, messages, args.max_tokens, 1))
        if args.requests > 1:
            scenarios.append(baseline(lm, prompt_ids, args.max_tokens, args.requests))
            scenarios.append(server(running.base_url, messages, args.max_tokens, args.requests))
    print(table(scenarios))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "model": lm.name,
                    "device": args.device,
                    "max_tokens": args.max_tokens,
                    "prompt_tokens": len(prompt_ids),
                    "server_slots": slots,
                    "torch_threads": torch.get_num_threads(),
                    "machine": {
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                        "cpus": os.cpu_count(),
                    },
                    "scenarios": [s.summary() for s in scenarios],
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TwinbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
