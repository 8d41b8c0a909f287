"""The model being trained and what updates it: the base model with LoRA adapters, AdamW, the LR schedule.

`load_training_model` loads the frozen base model (in 4-bit with LOAD_IN_4BIT: `twinbot.models.quantization`)
with the attention the run uses (`pick_attention`), wraps its linear layers in fresh LoRA adapters
(`apply_lora`; with FUSED_LORA, one autograd node per layer: `twinbot.kernels.fused_lora`) and runs the last layer's MLP on supervised positions only
(`twinbot.kernels.last_layer`). `maybe_compile` gives the model the loop calls (TORCH_COMPILE). On CUDA,
`auto_batch_size` probes the largest micro-batch that fits. `make_optimizer` and `make_scheduler` build
the update: AdamW over the LoRA weights only, with warm-up and decay over the run's steps.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import TYPE_CHECKING, Any

import torch

from twinbot.errors import TwinbotError
from twinbot.finetune.batches import BatchLayout, batch_layout, make_batch
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.rows import Row
from twinbot.finetune.steps import forward_loss
from twinbot.kernels import last_layer
from twinbot.kernels.attention import PACKED_SDPA
from twinbot.models.devices import Precision

if TYPE_CHECKING:
    from accelerate import Accelerator
    from peft import PeftModel
    from transformers import PreTrainedModel

CPU_AUTO_BATCH_SIZE = 4

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel. A training
    step allocates and frees the same few hundred MB of activations every time; by default glibc returns
    much of it, and the next step pays a page fault (and a page of zeroing) per 4 KB again: ~60,000 faults
    per step of the embedded model on CPU, ~5% of the step (BENCHMARKS.md). PyTorch's CPU tuning guide
    gets the same from preloading jemalloc or tcmalloc. Linux with glibc only; elsewhere it does nothing
    and returns False. The process keeps its peak memory until it exits."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    )


def load_training_model(
    config: TrainConfig, device: torch.device, precision: Precision
) -> tuple[Any, BatchLayout]:
    """The base model with LoRA applied, as training uses it, and the micro-batch layout its attention
    takes (`batch_layout`). Also sets up the process's memory allocator for training (`keep_freed_memory`)."""
    from twinbot.kernels.fused_lora import fuse_lora_layers
    from twinbot.models.loading import load_model
    from twinbot.models.quantization import (
        check_4bit_support,
        four_bit_compute_dtype,
        four_bit_config,
        prepare_for_4bit_training,
    )

    keep_freed_memory()

    if config.load_in_4bit:
        check_4bit_support(str(device))
        dtype = four_bit_compute_dtype()
        attention = pick_attention(config.attn_implementation, device.type, dtype, config.packing)
        model = load_model(config.base_model, dtype, attention, device, quantization=four_bit_config(dtype))
        model = prepare_for_4bit_training(model, dtype)
    else:
        attention = pick_attention(
            config.attn_implementation, device.type, precision.base_dtype, config.packing
        )
        model = load_model(config.base_model, precision.base_dtype, attention, device)
    model.config.use_cache = False  # with a cache, transformers would not keep packed samples apart
    if config.gradient_checkpointing:
        # `activation_checkpointing_enable` is the name from transformers 5.23 on
        enable = (
            getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        )
        enable({"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings: the recomputed layers need an input with grad
    targets = target_modules(config.lora_target_modules)
    peft_model = apply_lora(model, config.lora_r, config.lora_alpha, config.lora_dropout, targets)
    # Compiled models keep peft's forward: torch 2.11's compiler traced the fused layers into a graph that
    # trained a different adapter (on CPU and CUDA; torch 2.13 traces them right), and compiling fuses
    # peft's elementwise ops by itself (BENCHMARKS.md, "GPU checks").
    # bitsandbytes' 4-bit layers subclass torch.nn.Linear but hold packed weights: they keep peft's forward
    if config.fused_lora and not compile_wanted(config, device.type) and not config.load_in_4bit:
        fuse_lora_layers(peft_model)
    last_layer.trim_last_layer(peft_model)
    return peft_model, batch_layout(peft_model.config._attn_implementation)


def make_optimizer(trainable: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the LoRA weights; on CPU and CUDA torch's fused kernel: the same update in one pass,
    ~18 ms less per step than the per-tensor loop on the reference CPU (210 x 2 small tensors)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in trainable)
    return torch.optim.AdamW(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused or None
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """LR_SCHEDULER over `total_steps` optimizer steps, after a warm-up of WARMUP_RATIO of them
    ("constant" keeps the warm-up)."""
    from transformers import get_scheduler

    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    schedule = "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler
    return get_scheduler(schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def compile_wanted(config: TrainConfig, device_type: str) -> bool:
    """TORCH_COMPILE as this run uses it. 'auto' (the fast preset) = on for training on a CPU on Linux where
    inductor finds a C++ compiler: 25-85 s of compiling at the first step, then faster steps (BENCHMARKS.md,
    attempt 25: +44% on a 16-core Xeon, 0-13% on the 2-core reference CPU). Off on GPUs, where it is not
    measured yet, and on macOS and Windows, where inductor needs more setup than a compiler on the PATH."""
    if config.torch_compile != "auto":
        return config.torch_compile
    return device_type == "cpu" and sys.platform.startswith("linux") and cpp_compiler_found()


def cpp_compiler_found() -> bool:
    """Whether the C++ compiler torch.compile's CPU backend would use is on the PATH."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return shutil.which(get_cpp_compiler()) is not None
    except Exception:  # a private API that may move, or no compiler found: train eagerly
        return False


def maybe_compile(peft_model: Any, config: TrainConfig, device_type: str) -> Any:
    """The model the training loop calls: `peft_model` itself, or compiled (`compile_wanted`) with dynamic
    shapes: packed micro-batches change length every step, and this compiles once instead of once per
    length."""
    if not compile_wanted(config, device_type):
        return peft_model
    if config.torch_compile == "auto":
        # chosen for the user: if compiling fails after all (no Python headers, ...), dynamo trains eagerly
        from torch._dynamo import config as dynamo_config

        dynamo_config.suppress_errors = True
    return torch.compile(peft_model, dynamic=True)


def target_modules(setting: str) -> str | list[str]:
    if setting.strip() == "all-linear":
        return "all-linear"
    return [name.strip() for name in setting.split(",") if name.strip()]


def pick_attention(
    setting: str, device_type: str, dtype: torch.dtype, packing: bool, flash_attn: bool | None = None
) -> str:
    """auto = flash_attention_2 on CUDA with 16-bit weights when flash-attn is installed (`flash_attn`: on
    the machine the run is planned for; None: here); packed_sdpa for packed rows on CPU (measured:
    docs/training.md, "The fast preset"); else sdpa. What the run asks for: loading falls back to what the
    model supports (`twinbot.models.loading.supported_attention`)."""
    if setting != "auto":
        return setting
    from twinbot.models.loading import flash_attn_available

    half = dtype in (torch.float16, torch.bfloat16)
    if device_type == "cuda" and half and flash_attn_available(flash_attn):
        return "flash_attention_2"
    return PACKED_SDPA if packing and device_type == "cpu" else "sdpa"


def auto_batch_size(
    model: Any, rows: list[Row], accelerator: Accelerator, pad_id: int, layout: BatchLayout
) -> int:
    """CPU: a fixed 4 rows. CUDA: the largest power of two of the longest row that survives forward+backward
    (copies of one row would share most of their tokens: probed without sharing)."""
    if accelerator.device.type != "cuda":
        return CPU_AUTO_BATCH_SIZE
    longest = max(rows, key=lambda row: len(row.input_ids))
    model.train()  # as in training: dropout masks take memory too

    def fits(size: int) -> bool:
        out_of_memory = False
        try:
            with accelerator.autocast():
                batch = make_batch(
                    [longest] * size,
                    pad_id,
                    accelerator.device,
                    "flat" if layout == "shared_prefix" else layout,
                )
                forward_loss(model, batch).backward()
        except torch.OutOfMemoryError:
            out_of_memory = True
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return not out_of_memory

    size = largest_power_of_two(fits, limit=len(rows))
    # every process must use the same micro-batch: the smallest that fits everywhere
    size = int(accelerator.gather(torch.tensor([size], device=accelerator.device)).min())
    if size == 0:
        raise TwinbotError(
            "one row does not fit in GPU memory; lower ROW_TOKENS / MAX_SEQ_LEN or set GRADIENT_CHECKPOINTING=true"
        )
    return size


def largest_power_of_two(fits: Any, limit: int) -> int:
    """The largest 1, 2, 4, ... <= limit for which `fits(size)` holds (trying upwards); 0 if not even 1."""
    size, largest = 1, 0
    while size <= limit and fits(size):
        largest, size = size, size * 2
    return largest


def apply_lora(
    model: PreTrainedModel,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | str = "all-linear",
) -> PeftModel:
    """Wrap `model` with fresh LoRA adapters; "all-linear" targets every linear layer except lm_head."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, config)
