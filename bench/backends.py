"""One reply stream on each backend: time to the first token and decoding speed, greedy, no stop tokens.

The same RUN, prompt and token loop on every backend (generate.sampled_tokens: repetition penalty 1.1,
greedy); only the forward pass differs: torch (transformers + PEFT adapter) or llama.cpp on the run's GGUF
export (exported on first use into RUN/export/, not timed). Prints the median of --repeats runs and whether
each backend's tokens equal torch's.

    python bench/backends.py RUN                      # torch, llamacpp q8_0 and f16 exports
    python bench/backends.py RUN --tokens 128 --repeats 5 --types q8_0 f16 f32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from twinbot.bot.backends import load_backend  # noqa: E402
from twinbot.bot.generate import (  # noqa: E402
    Forward,
    GenerationSettings,
    build_prompt_ids,
    sampled_tokens,
    torch_forward,
    with_system_prompt,
)
from twinbot.data.records import ChatTurn  # noqa: E402

PROMPT = "hey! how was the weekend, did you end up going to the lake with everyone?"


def timed(forward: Forward, prompt: list[int], tokens: int) -> tuple[float, float, list[int]]:
    """(seconds to the first token, decoding tokens per second after it, the tokens)."""
    settings = GenerationSettings(temperature=0, max_new_tokens=tokens)
    started = time.perf_counter()
    stream = sampled_tokens(forward, prompt, settings, frozenset(), None)
    out = [next(stream)]
    first = time.perf_counter()
    out.extend(stream)
    return first - started, (len(out) - 1) / (time.perf_counter() - first), out


def fresh(twin: object) -> Forward:
    """llama.cpp's forward pass without the KV cache of the last run (the prompt would be reused)."""
    twin.llama.reset()  # type: ignore[attr-defined]
    return twin._forward()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--types", nargs="+", default=["q8_0", "f16"])
    args = parser.parse_args()

    torch_twin = load_backend("torch", args.run, device="cpu")
    prompt = build_prompt_ids(
        torch_twin.lm, with_system_prompt(torch_twin, [ChatTurn("user", PROMPT)]), args.tokens
    )  # type: ignore[attr-defined]
    contenders: list[tuple[str, object]] = [("torch fp32", lambda: torch_forward(torch_twin.lm.model))]  # type: ignore[attr-defined]
    for gguf_type in args.types:
        twin = load_backend("llamacpp", args.run, device="cpu", gguf_type=gguf_type)
        contenders.append((f"llamacpp {gguf_type}", lambda twin=twin: fresh(twin)))
    reference: list[int] | None = None
    print(f"prompt {len(prompt)} tokens, {args.tokens} generated, median of {args.repeats}")
    for name, make_forward in contenders:
        runs = [timed(make_forward(), prompt, args.tokens) for _ in range(args.repeats)]  # type: ignore[operator]
        reference = reference or runs[0][2]
        same = "same tokens as torch" if runs[0][2] == reference else "tokens differ from torch"
        ttft = statistics.median(run[0] for run in runs)
        speed = statistics.median(run[1] for run in runs)
        print(f"{name:16} first token {ttft:6.3f} s   decode {speed:6.1f} tok/s   {same}")


if __name__ == "__main__":
    main()
