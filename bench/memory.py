"""Memory planning check: the peak memory `twinbot plan --target-gpu` predicts (finetune/plan/memory.py)
against the peak resident memory (RSS) of real CPU training, for every model that loads here.

Each case trains a few steps with `twinbot train`'s own loop in a fresh process, in fp32 or bf16 weights
(bf16 autocast is forced on where the CPU lacks native bf16: slow, but the memory is what counts), with and
without gradient checkpointing. The process's RSS after its imports (Python, torch, transformers, peft) is
its baseline: the formula's CPU variant adds it where a GPU would add the CUDA context. Logits are predicted
for the largest supervised share of a packed row in the data (the formula's worst case is every token).
Models: the tiny test families, the embedded SmolLM2-135M, and random-weight models shaped like the
SIZES of memory.py (saved once under --work).

    python bench/memory.py --data DIR                 # DIR: made by `twinbot prepare`
    python bench/memory.py --data DIR --sizes 135m    # fewer models
    python bench/memory.py --data DIR --sizes "" --families gemma2,llama --no-embedded \
        --small-vocabulary --row-tokens 2048          # long rows: eager attention's score matrices
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # support.families: the tiny models of every family
try:
    import twinbot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

GIB = 1 << 30
SETTINGS: dict[str, Any] = {
    "packing": True,
    "row_tokens": 512,
    "max_seq_len": 512,
    "batch_size": 2,
    "processes": 1,
    "gradient_accumulation_steps": 1,
    "max_steps": 2,
    "eval_every": 1000,
    "save_every": 1000,
    "eval_max_samples": 4,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "torch_compile": False,
    "device": "cpu",
}
# (label, use_fp16, gradient_checkpointing)
VARIANTS = (("fp32", False, False), ("fp32 ckpt", False, True), ("bf16", True, False))


def child(
    model_dir: str, data_dir: str, out_dir: str, use_fp16: bool, checkpointing: bool, row_tokens: int
) -> None:
    """One training run in this fresh process; prints its baseline and peak RSS and supervised share."""
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import psutil
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from twinbot.finetune import recipe
    from twinbot.finetune.batches import count_supervised
    from twinbot.finetune.config import TrainConfig
    from twinbot.models import devices
    from twinbot.models.loading import load_tokenizer

    baseline = psutil.Process().memory_info().rss
    if use_fp16:
        devices.cpu_has_bf16 = lambda: True  # bf16 weights and autocast even without native bf16
    config = TrainConfig(
        **{**SETTINGS, "row_tokens": row_tokens, "max_seq_len": row_tokens},
        base_model=model_dir,
        data_dir=Path(data_dir),
        output_dir=Path(out_dir),
        use_fp16=use_fp16,
        gradient_checkpointing=checkpointing,
    )
    rows, _ = recipe.load_data(Path(data_dir), load_tokenizer(model_dir), config)
    share = max(count_supervised([row]) / len(row.input_ids) for row in rows)
    recipe.main(config)
    print(json.dumps({"baseline": baseline, "peak": peak_rss(), "supervised_share": share}))


def peak_rss() -> int:
    """This process's peak RSS: VmHWM (getrusage's ru_maxrss keeps the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status: Linux only")


def measure(
    model_dir: Path, data_dir: Path, work: Path, use_fp16: bool, checkpointing: bool, row_tokens: int
) -> dict[str, Any]:
    out = work / f"run-{model_dir.name}-{int(use_fp16)}{int(checkpointing)}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    args = [sys.executable, __file__, "--child", str(model_dir), str(data_dir), str(out)]
    args += [str(int(use_fp16)), str(int(checkpointing)), str(row_tokens)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model_dir.name}: training failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def models(
    work: Path, sizes: list[str], families: list[str], small_vocabulary: bool, embedded: bool
) -> list[tuple[str, Path]]:
    """(label, folder) of each model: tiny families (`small_vocabulary`: 1,024 tokens, so their logits do
    not hide the rest), the embedded model, random-weight SIZES (with the embedded tokenizer, so with its
    vocabulary)."""
    import torch
    from transformers import AutoModelForCausalLM

    from support.families import make_family_model
    from twinbot.finetune.plan.memory import SIZES
    from twinbot.models.loading import load_tokenizer, resolve_model

    vocabulary = "-v1024" if small_vocabulary else ""
    found = [
        (
            f"tiny {name}{vocabulary}",
            make_family_model(name, work / f"tiny-{name}{vocabulary}", 0, small_vocabulary),
        )
        for name in families
    ]
    if embedded:
        found.append(("SmolLM2-135M (embedded)", Path(resolve_model(None))))
    for size in sizes:
        folder = work / f"random-{size}"
        if not (folder / "config.json").is_file():
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(_size_config(size)).save_pretrained(folder)
            load_tokenizer(None).save_pretrained(folder)
        found.append((f"random {size} ({SIZES[size][0]} shape, vocabulary 49,152)", folder))
    return found


def _size_config(size: str) -> Any:
    from transformers import LlamaConfig

    from twinbot.finetune.plan.memory import SIZES

    s = SIZES[size][1]
    return LlamaConfig(
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"],
        vocab_size=49152,  # the embedded tokenizer's vocabulary, so its data trains it
        tie_word_embeddings=s["tied"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/twinbot-bench-memory"))
    parser.add_argument("--sizes", default="360m,0.5b", help="SIZES of memory.py as random-weight models")
    parser.add_argument("--families", default="llama,qwen2,gemma2")
    parser.add_argument("--embedded", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--small-vocabulary", action="store_true", help="tiny families with 1,024 tokens")
    parser.add_argument("--row-tokens", type=int, default=SETTINGS["row_tokens"], help="packed row length")
    parser.add_argument(
        "--variants", default=",".join(v[0] for v in VARIANTS), help="of: fp32, fp32 ckpt, bf16"
    )
    args = parser.parse_args()

    from twinbot.finetune.config import TrainConfig
    from twinbot.finetune.plan.memory import arch_shape, predict

    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in args.sizes.split(",") if s]
    families = [f for f in args.families.split(",") if f]
    variants = [v for v in VARIANTS if v[0] in args.variants.split(",")]
    settings = {**SETTINGS, "row_tokens": args.row_tokens, "max_seq_len": args.row_tokens}
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}; settings: {settings}"
    )
    print("| Model | Params | Variant | Baseline RSS | Predicted peak | Measured peak RSS | Error |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, folder in models(args.work, sizes, families, args.small_vocabulary, args.embedded):
        shape = arch_shape(str(folder))
        for variant, use_fp16, checkpointing in variants:
            measured = measure(folder, args.data, args.work, use_fp16, checkpointing, args.row_tokens)
            config = TrainConfig(
                **{**settings, "use_fp16": use_fp16, "gradient_checkpointing": checkpointing},
                base_model=str(folder),
            )
            predicted = predict(
                shape,
                config,
                "16-bit" if use_fp16 else "fp32",
                int(SETTINGS["batch_size"]),
                device="cpu",
                supervised_share=measured["supervised_share"],
                baseline_bytes=measured["baseline"],
            ).peak
            error = predicted / measured["peak"] - 1
            print(
                f"| {label} | {shape.params / 1e6:,.0f} M | {variant} | {measured['baseline'] / GIB:.2f} GiB | "
                f"{predicted / GIB:.2f} GiB | {measured['peak'] / GIB:.2f} GiB | {error:+.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model_dir, data_dir, out_dir, fp16, ckpt, row_tokens = sys.argv[2:8]
        child(model_dir, data_dir, out_dir, fp16 == "1", ckpt == "1", int(row_tokens))
    else:
        main()
