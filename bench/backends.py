"""One reply stream on each backend: time to the first token and decoding speed, greedy, no stop tokens.

The same RUN, prompt and sampler on every backend (generate._RowSampler: repetition penalty 1.1, greedy);
only the forward pass differs: torch (transformers + PEFT adapter, generate.sampled_tokens) or llama.cpp on
the run's GGUF export (exported on first use into RUN/export/, not timed), through the backend's batching
decoder as chat and serve use it (one row here; the prompt is evaluated whole every run). Prints the median
of --repeats runs, whether each backend's tokens equal torch's and, for llama.cpp, how a token's time
splits between llama_decode and the rest (logits to the sampler, sampling, handing the token over).

    python bench/backends.py RUN                      # torch, llamacpp q8_0 and f16 exports
    python bench/backends.py RUN --tokens 128 --repeats 5 --types q8_0 f16 f32
    python bench/backends.py RUN --no-torch --rows 8   # also 8 rows at once through the decoder

`--rows N` also starts N streams of the same prompt together on each llama.cpp type (the decoder batches
them: one llama_decode a step) and prints their aggregate tokens/s, prompts included, against one row's:
how the engine scales without the server's HTTP and SSE work beside it (bench/serve.py has that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from twinbot.bot.backends import load_backend  # noqa: E402
from twinbot.bot.generate import (  # noqa: E402
    GenerationSettings,
    build_prompt_ids,
    sampled_tokens,
    torch_forward,
    with_system_prompt,
)
from twinbot.data.records import ChatTurn  # noqa: E402

PROMPT = "hey! how was the weekend, did you end up going to the lake with everyone?"
Tokens = Callable[[list[int], GenerationSettings], Iterator[int]]


@dataclass
class Run:
    first_token_s: float
    tokens_per_s: float  # after the first token
    decode_s_per_token: float  # in llama_decode (llama.cpp), after the first token
    tokens: list[int]


def timed(tokens_of: Tokens, prompt: list[int], tokens: int, decode_time: list[float]) -> Run:
    settings = GenerationSettings(temperature=0, max_new_tokens=tokens)
    started = time.perf_counter()
    stream = tokens_of(prompt, settings)
    out = [next(stream)]
    first = time.perf_counter()
    decoding_before = sum(decode_time)
    out.extend(stream)
    after = max(1, len(out) - 1)
    return Run(
        first - started,
        after / (time.perf_counter() - first),
        (sum(decode_time) - decoding_before) / after,
        out,
    )


def together(tokens_of: Tokens, prompt: list[int], tokens: int, rows: int) -> float:
    """Aggregate tokens/s of `rows` streams started at once, from the first start to the last token."""
    settings = GenerationSettings(temperature=0, max_new_tokens=tokens)
    started = time.perf_counter()
    with ThreadPoolExecutor(rows) as pool:
        counts = list(pool.map(lambda _: sum(1 for _ in tokens_of(prompt, settings)), range(rows)))
    return sum(counts) / (time.perf_counter() - started)


def llama_tokens(twin: Any, decode_time: list[float]) -> Tokens:
    """The llama.cpp backend's token ids without stop tokens or a reused prompt, its decodes timed."""
    twin.stop_token_ids = frozenset()  # every run decodes --tokens
    twin.decoder.reuse_prompts = False
    context, decode = twin.context, twin.context.decode

    def timed_decode() -> None:
        started = time.perf_counter()
        decode()
        decode_time.append(time.perf_counter() - started)

    context.decode = timed_decode
    return lambda prompt, settings: twin.decoder.token_ids(prompt, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--types", nargs="+", default=["q8_0", "f16"])
    parser.add_argument("--no-torch", action="store_true", help="llama.cpp only (no torch reference).")
    parser.add_argument("--rows", type=int, default=1, help="Also this many llama.cpp streams at once.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch's and llama.cpp's threads (1 on a machine others load).",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the llama.cpp backend takes torch's count

    torch_twin: Any = load_backend("torch", args.run, device="cpu")
    prompt = build_prompt_ids(
        torch_twin.lm, with_system_prompt(torch_twin, [ChatTurn("user", PROMPT)]), args.tokens
    )
    model = torch_twin.lm.model
    decode_time: list[float] = []
    contenders: list[tuple[str, Tokens]] = []
    if not args.no_torch:
        contenders.append(
            ("torch fp32", lambda p, s: sampled_tokens(torch_forward(model), p, s, frozenset(), None))
        )
    for gguf_type in args.types:
        twin = load_backend("llamacpp", args.run, device="cpu", gguf_type=gguf_type)
        contenders.append((f"llamacpp {gguf_type}", llama_tokens(twin, decode_time)))
    reference: list[int] | None = None
    print(f"prompt {len(prompt)} tokens, {args.tokens} generated, median of {args.repeats}; {load()}")
    for name, tokens_of in contenders:
        runs = [timed(tokens_of, prompt, args.tokens, decode_time) for _ in range(args.repeats)]
        reference = reference or runs[0].tokens
        same = "same tokens as the first" if runs[0].tokens == reference else "tokens differ from the first"
        speed = statistics.median(run.tokens_per_s for run in runs)
        split = ""
        if name.startswith("llamacpp"):
            decoding = statistics.median(run.decode_s_per_token for run in runs) * 1000
            split = f"   per token: llama_decode {decoding:.2f} ms, the rest {1000 / speed - decoding:.2f} ms"
        ttft = statistics.median(run.first_token_s for run in runs)
        print(f"{name:16} first token {ttft:6.3f} s   decode {speed:6.1f} tok/s   {same}{split}")
        if args.rows > 1 and name.startswith("llamacpp"):
            one = statistics.median(together(tokens_of, prompt, args.tokens, 1) for _ in range(args.repeats))
            many = statistics.median(
                together(tokens_of, prompt, args.tokens, args.rows) for _ in range(args.repeats)
            )
            print(
                f"{'':16} prompt included: 1 row {one:6.1f} tok/s, {args.rows} rows together {many:6.1f} tok/s"
                f" ({many / one:.2f}x)"
            )
    print(load())


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
