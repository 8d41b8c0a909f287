"""Eval's reply generation: held-out contexts answered one at a time (`generate_reply` in a loop, how eval
generated before) vs together (`generate_replies`: left-padded batches sharing forward passes, how eval
generates now).

Same model, contexts, sampling settings and per-context seeds on both sides (what `twinbot eval` uses:
temperature 0.7, top-p 0.9, repetition penalty 1.1, seed = context number). Prints seconds, reply tokens per
second and how many replies came out identical (a batch can change floating-point rounding, so a sampled
token may differ now and then; the settings and draws are the same).

    python bench/eval_generation.py                                  # the bundled sample, embedded model
    python bench/eval_generation.py --data /tmp/tg-data --model RUN  # any prepared data, any RUN or model
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from twinbot.bot.generate import GenerationSettings, generate_replies, generate_reply  # noqa: E402
from twinbot.bot.loading import load_for_inference  # noqa: E402
from twinbot.data import prepared  # noqa: E402
from twinbot.quality.evaluate import pick_contexts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="Prepared data folder (default: prepare the bundled sample)."
    )
    parser.add_argument(
        "--model", default=None, help="RUN folder, model folder or .gguf (default: embedded)."
    )
    parser.add_argument("--contexts", type=int, default=16, help="Held-out contexts (eval's default: 16).")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        from twinbot.demo import prepare_sample

        data = Path(tempfile.mkdtemp(prefix="twinbot-bench-")) / "data"
        prepare_sample(data)
    contexts = pick_contexts(prepared.load_samples(data / prepared.EVAL_FILE), args.contexts, seed=0)
    conversations = [sample.messages[:-1] for sample in contexts]
    lm = load_for_inference(args.model)
    settings = [
        GenerationSettings(
            temperature=0.7, top_p=0.9, repetition_penalty=1.1, max_new_tokens=args.max_new_tokens, seed=i
        )
        for i in range(len(conversations))
    ]
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {lm.describe()}; {len(conversations)} contexts from {data}"
    )

    def tokens(replies: list[str]) -> int:
        return sum(len(lm.tokenizer(reply, add_special_tokens=False)["input_ids"]) for reply in replies)

    started = time.perf_counter()
    alone = [generate_reply(lm, turns, row) for turns, row in zip(conversations, settings, strict=True)]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    together = generate_replies(lm, conversations, settings)
    together_s = time.perf_counter() - started

    same = sum(a == b for a, b in zip(alone, together, strict=True))
    print(f"{'side':<34} {'seconds':>8} {'reply tokens':>13} {'tokens/s':>9}")
    for side, seconds, replies in (
        ("one at a time (generate_reply)", alone_s, alone),
        ("together (generate_replies)", together_s, together),
    ):
        print(f"{side:<34} {seconds:>8.1f} {tokens(replies):>13} {tokens(replies) / seconds:>9.1f}")
    print(f"speed-up {alone_s / together_s:.2f}x; identical replies {same}/{len(alone)}")


if __name__ == "__main__":
    main()
