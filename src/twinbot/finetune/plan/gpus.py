"""`--target-gpu`: published peaks of common GPUs, and an estimate made here scaled to one of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from twinbot.errors import TwinbotError
from twinbot.finetune.plan.machine import matmul_gflops
from twinbot.finetune.plan.records import Estimate, TargetGpu


@dataclass(frozen=True)
class GpuSpec:
    """Published dense peaks (TFLOP/s, no sparsity; 16-bit with fp32 accumulation, as training uses)."""

    name: str
    bf16_tflops: float
    fp32_tflops: float
    memory_gib: float
    aliases: tuple[str, ...]


# Ordered so that a device name as torch reports it finds the right card by its aliases (4060 Ti before 4060,
# A100 40GB before the 80GB and both before A10, L40S before L4). GeForce 16-bit figures: fp32 accumulation (half the fp16 rate).
GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("RTX 3060", 25.6, 12.7, 12, ("rtx3060", "3060", "geforcertx3060")),
    GpuSpec("RTX 3070", 40.6, 20.3, 8, ("rtx3070", "3070", "geforcertx3070")),
    GpuSpec("RTX 3080 12GB", 61.3, 30.6, 12, ("rtx308012gb", "308012gb", "308012g")),
    GpuSpec("RTX 3080", 59.5, 29.8, 10, ("rtx3080", "3080", "rtx308010gb", "308010gb", "geforcertx3080")),
    GpuSpec("RTX 3090", 71.0, 35.6, 24, ("rtx3090", "3090", "geforcertx3090")),
    GpuSpec("RTX 4060 Ti 16GB", 44.2, 22.1, 16, ("rtx4060ti", "4060ti", "4060ti16gb", "geforcertx4060ti")),
    GpuSpec("RTX 4060", 30.2, 15.1, 8, ("rtx4060", "4060", "geforcertx4060")),
    GpuSpec("RTX 4070", 58.3, 29.1, 12, ("rtx4070", "4070", "geforcertx4070")),
    GpuSpec("RTX 4080", 97.5, 48.7, 16, ("rtx4080", "4080", "geforcertx4080")),
    GpuSpec("RTX 4090", 165.2, 82.6, 24, ("rtx4090", "4090", "geforcertx4090")),
    GpuSpec("T4", 65.0, 8.1, 16, ("t4", "teslat4", "nvidiat4")),  # no bf16: fp16 with fp32 accumulation
    GpuSpec("L40S", 362.1, 91.6, 48, ("l40s", "nvidial40s")),
    GpuSpec("L4", 121.0, 30.3, 24, ("l4", "nvidial4")),
    GpuSpec("A100 40GB", 312.0, 19.5, 40, ("a10040gb", "a100sxm440gb", "sxm440gb", "pcie40gb")),
    GpuSpec("A100 80GB", 312.0, 19.5, 80, ("a100", "a10080gb", "a100sxm", "nvidiaa100", "a100sxm480gb")),
    GpuSpec("A10", 125.0, 31.2, 24, ("a10", "nvidiaa10")),
    GpuSpec("H100 SXM", 989.4, 66.9, 80, ("h100", "h100sxm", "nvidiah100", "h10080gbhbm3", "h100sxm5")),
    GpuSpec("H200", 989.4, 66.9, 141, ("h200", "h200sxm", "nvidiah200")),
)


def _gpu_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_gpu(name: str) -> GpuSpec | None:
    key = _gpu_key(name)
    for gpu in GPUS:
        if key in gpu.aliases or key == _gpu_key(gpu.name):
            return gpu
    for gpu in GPUS:  # a device name as torch reports it, e.g. "NVIDIA GeForce RTX 4090"
        if any(alias in key for alias in gpu.aliases if len(alias) > 3):
            return gpu
    return None


def target_gpu(name: str) -> GpuSpec:
    gpu = find_gpu(name)
    if gpu is None:
        known = ", ".join(g.name for g in GPUS)
        raise TwinbotError(f"--target-gpu {name!r}: unknown GPU; use one of {known}")
    return gpu


def peak_tflops(gpu: GpuSpec, precision: str) -> float:
    return gpu.fp32_tflops if precision == "fp32" else gpu.bf16_tflops


def scale_to_gpu(estimate: Estimate, here_tflops: float, gpu: GpuSpec, precision_there: str) -> Estimate:
    """Compute time scaled by (this machine's speed / the target's published peak); setup and saves as here."""
    ratio = here_tflops / peak_tflops(gpu, precision_there)
    return estimate.model_copy(
        update={
            "train_seconds": estimate.train_seconds * ratio,
            "eval_seconds": estimate.eval_seconds * ratio,
            "extrapolated_to": gpu.name,
        }
    )


def here_tflops(device: str, precision: str) -> tuple[float, str]:
    """This machine's speed in `precision`: a listed GPU's published peak, else the measured matmul speed."""
    target = torch.device(device)
    if target.type == "cuda":
        gpu = find_gpu(torch.cuda.get_device_name(target))
        if gpu is not None:
            return peak_tflops(gpu, precision), f"published peak of this {gpu.name}"
    return matmul_gflops(device, precision) / 1000, "measured matmul speed of this machine"


def target_summary(gpu: GpuSpec, device: str, precision: str) -> TargetGpu:
    """The target GPU as the plan records it, with which speed of this machine its ratio uses."""
    _, scaled_from = here_tflops(device, precision)
    return TargetGpu(
        name=gpu.name,
        bf16_tflops=gpu.bf16_tflops,
        fp32_tflops=gpu.fp32_tflops,
        memory_gib=gpu.memory_gib,
        scaled_from=scaled_from,
    )
