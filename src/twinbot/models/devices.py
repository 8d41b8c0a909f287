"""Which device and precision to run on: one answer for training and for inference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from twinbot.errors import TwinbotError


@dataclass(frozen=True)
class Precision:
    mixed_precision: str  # accelerate's setting: "no" | "bf16" | "fp16"
    base_dtype: torch.dtype  # frozen base weights; the LoRA weights stay fp32
    name: str  # for summary.json
    description: str  # the one line printed at start


def pick_device(requested: str, setting: str = "DEVICE") -> str:
    """auto -> cuda > mps > cpu; an explicit device that is not there is an error.

    `setting` is what the user set it with, for the error: the training setting DEVICE, or a command's
    --device option.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        target = torch.device(requested)
    except (RuntimeError, ValueError) as exc:
        raise TwinbotError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if target.type == "cuda" and (
        not torch.cuda.is_available() or (target.index or 0) >= torch.cuda.device_count()
    ):
        raise _unavailable(requested, setting, "no such CUDA device is visible")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise _unavailable("mps", setting, "Apple MPS is not available")
    return str(target)


def _unavailable(device: str, setting: str, reason: str) -> TwinbotError:
    if setting.startswith("--"):  # a command-line option
        return TwinbotError(f"device {device} is not available; use {setting} auto or cpu")
    return TwinbotError(f"{setting}={device} but {reason}; use {setting}=auto or cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Inference weights: 16-bit on GPUs (bf16 where supported), fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 on CPU is slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_precision(use_fp16: bool, device_type: str) -> Precision:
    if not use_fp16:
        return Precision("no", torch.float32, "fp32", f"precision: fp32 on {device_type} (USE_FP16=false)")
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", torch.bfloat16, "bf16", "precision: bf16 mixed precision on cuda")
        return Precision(
            "fp16",
            torch.float16,
            "fp16",
            "precision: fp16 mixed precision with loss scaling on cuda (no bf16)",
        )
    if device_type == "mps":
        return Precision("fp16", torch.float32, "fp16", "precision: fp16 autocast with loss scaling on mps")
    if cpu_has_bf16():
        return Precision(
            "bf16", torch.bfloat16, "bf16", "precision: bf16 autocast on cpu (native bf16 support)"
        )
    return Precision("no", torch.float32, "fp32", "precision: fp32 on cpu (this CPU has no native bf16)")


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocation that failed, as torch and the C library report it."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
