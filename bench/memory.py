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
    python bench/memory.py --data DIR --device cuda --sizes 0.5b,1.5b,7b --families "" --no-embedded \
        --tokenizer FOLDER                            # on a GPU: torch.cuda.max_memory_allocated

On CUDA the variants are bf16, bf16 with gradient checkpointing and QLoRA (4-bit NF4 base) with checkpointing
(as the qlora preset) and without, the random models are built on the GPU in bf16, and the measured figures are
`torch.cuda.max_memory_allocated` (against the formula's `allocated`) and the peak the card saw: the
allocator's max_memory_reserved plus the CUDA context (against the formula's `peak`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
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
# (label, use_fp16, gradient_checkpointing, load_in_4bit)
VARIANTS = (("fp32", False, False, False), ("fp32 ckpt", False, True, False), ("bf16", True, False, False))
CUDA_VARIANTS = (
    ("bf16", True, False, False),
    ("bf16 ckpt", True, True, False),
    ("4-bit ckpt", True, True, True),
    ("4-bit", True, False, True),
)


def child(
    model_dir: str,
    data_dir: str,
    out_dir: str,
    variant: tuple[bool, bool, bool],
    row_tokens: int,
    batch_size: int,
    device: str,
) -> None:
    """One training run in this fresh process; prints its baseline and peak memory and supervised share:
    RSS on the CPU, on CUDA max_memory_allocated, max_memory_reserved and the CUDA context."""
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import psutil
    import torch
    import transformers  # noqa: F401

    from twinbot.finetune import recipe
    from twinbot.finetune.batches import count_supervised
    from twinbot.finetune.config import TrainConfig
    from twinbot.models import devices
    from twinbot.models.loading import load_tokenizer

    use_fp16, checkpointing, load_in_4bit = variant
    baseline = psutil.Process().memory_info().rss
    if use_fp16 and device == "cpu":
        devices.cpu_has_bf16 = lambda: True  # bf16 weights and autocast even without native bf16
    config = TrainConfig(
        **{
            **SETTINGS,
            "row_tokens": row_tokens,
            "max_seq_len": row_tokens,
            "batch_size": batch_size,
            "device": device,
        },
        base_model=model_dir,
        data_dir=Path(data_dir),
        output_dir=Path(out_dir),
        use_fp16=use_fp16,
        gradient_checkpointing=checkpointing,
        load_in_4bit=load_in_4bit,
    )
    rows, _ = recipe.load_data(Path(data_dir), load_tokenizer(model_dir), config)
    share = max(count_supervised([row]) / len(row.input_ids) for row in rows)
    recipe.main(config)
    result: dict[str, Any] = {"baseline": baseline, "peak": peak_rss(), "supervised_share": share}
    if device == "cuda":
        result["allocated"] = torch.cuda.max_memory_allocated()
        result["reserved"] = torch.cuda.max_memory_reserved()
        result["context"] = cuda_process_memory() - torch.cuda.memory_reserved()
        result["device_name"] = torch.cuda.get_device_name()
    print(json.dumps(result))


def cuda_process_memory() -> int:
    """What the driver counts for this process (nvidia-smi's figure: context, kernels and the allocator's
    reserve), so that other processes on the card do not count; the card's used memory without NVML."""
    import os

    import torch

    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if process.pid == os.getpid() and process.usedGpuMemory:
                return int(process.usedGpuMemory)
    except Exception:  # no NVML, or a driver that hides per-process figures
        pass
    free, total = torch.cuda.mem_get_info()
    return total - free


def peak_rss() -> int:
    """This process's peak RSS: VmHWM (getrusage's ru_maxrss keeps the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status: Linux only")


def measure(
    model_dir: Path,
    data_dir: Path,
    work: Path,
    variant: tuple[bool, bool, bool],
    row_tokens: int,
    batch_size: int,
    device: str,
) -> dict[str, Any]:
    flags = "".join(str(int(v)) for v in variant)
    out = work / f"run-{model_dir.name}-{flags}"
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, __file__, "--child", str(model_dir), str(data_dir), str(out), flags]
    args += [str(row_tokens), str(batch_size), device]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model_dir.name}: training failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def models(
    work: Path,
    sizes: list[str],
    families: list[str],
    small_vocabulary: bool,
    embedded: bool,
    tokenizer: str | None,
    device: str,
) -> list[tuple[str, Path]]:
    """(label, folder) of each model: tiny families (`small_vocabulary`: 1,024 tokens, so their logits do
    not hide the rest), the embedded model, random-weight SIZES (with `tokenizer`'s vocabulary: a folder,
    else the embedded model's), built on `device` (bf16 on CUDA: a 7B model in seconds)."""
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
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(_size_config(size), dtype=dtype)
            model.save_pretrained(folder)
            del model
            load_tokenizer(tokenizer).save_pretrained(folder)
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
    parser.add_argument("--batch-size", type=int, default=SETTINGS["batch_size"], help="rows per micro-batch")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tokenizer", help="folder whose tokenizer the random SIZES get (default: embedded)")
    parser.add_argument(
        "--variants",
        help="of: fp32, fp32 ckpt, bf16 (CPU); bf16, bf16 ckpt, 4-bit ckpt, 4-bit (CUDA); default all",
    )
    args = parser.parse_args()

    from twinbot.finetune.config import TrainConfig
    from twinbot.finetune.plan.memory import arch_shape, predict

    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in args.sizes.split(",") if s]
    families = [f for f in args.families.split(",") if f]
    all_variants = CUDA_VARIANTS if args.device == "cuda" else VARIANTS
    chosen = args.variants.split(",") if args.variants else [v[0] for v in all_variants]
    variants = [v for v in all_variants if v[0] in chosen]
    settings = {
        **SETTINGS,
        "row_tokens": args.row_tokens,
        "max_seq_len": args.row_tokens,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}; settings: {settings}"
    )
    if args.device == "cuda":
        print(
            "| Model | Params | Variant | Predicted allocated | max_memory_allocated | Error "
            "| Predicted peak | Reserved + context | Error |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    else:
        print("| Model | Params | Variant | Baseline RSS | Predicted peak | Measured peak RSS | Error |")
        print("|---|---:|---|---:|---:|---:|---:|")
    found = models(
        args.work, sizes, families, args.small_vocabulary, args.embedded, args.tokenizer, args.device
    )
    for label, folder in found:
        shape = arch_shape(str(folder))
        for variant, use_fp16, checkpointing, load_in_4bit in variants:
            flags = (use_fp16, checkpointing, load_in_4bit)
            measured = measure(
                folder, args.data, args.work, flags, args.row_tokens, args.batch_size, args.device
            )
            config = TrainConfig(
                **{**settings, "use_fp16": use_fp16, "gradient_checkpointing": checkpointing},
                load_in_4bit=load_in_4bit,
                base_model=str(folder),
            )
            predicted = predict(
                shape,
                config,
                "4-bit" if load_in_4bit else "16-bit" if use_fp16 else "fp32",
                args.batch_size,
                device=args.device,
                supervised_share=measured["supervised_share"],
                baseline_bytes=measured["baseline"],
                flash_attn=False,
            )
            head = f"| {label} | {shape.params / 1e6:,.0f} M | {variant} |"
            if args.device == "cuda":
                card = measured["reserved"] + measured["context"]
                print(
                    f"{head} {predicted.allocated / GIB:.2f} GiB | {measured['allocated'] / GIB:.2f} GiB | "
                    f"{predicted.allocated / measured['allocated'] - 1:+.0%} | {predicted.peak / GIB:.2f} GiB | "
                    f"{card / GIB:.2f} GiB | {predicted.peak / card - 1:+.0%} |",
                    flush=True,
                )
            else:
                print(
                    f"{head} {measured['baseline'] / GIB:.2f} GiB | {predicted.peak / GIB:.2f} GiB | "
                    f"{measured['peak'] / GIB:.2f} GiB | {predicted.peak / measured['peak'] - 1:+.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model_dir, data_dir, out_dir, flags, row_tokens, batch_size, device = sys.argv[2:9]
        fp16, ckpt, four_bit = (flag == "1" for flag in flags)
        child(model_dir, data_dir, out_dir, (fp16, ckpt, four_bit), int(row_tokens), int(batch_size), device)
    else:
        main()
