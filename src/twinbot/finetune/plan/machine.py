"""Short measurements of this machine besides the calibration run: dense matmul speed, disk writes, what
`train`'s logging costs, and a run's peak memory."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from twinbot.finetune.metrics import MetricsLog, MetricsRow, peak_memory_bytes
from twinbot.finetune.plan.records import Workload

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@functools.lru_cache(maxsize=8)
def matmul_gflops(device: str, precision: str, seconds: float = 0.25, size: int | None = None) -> float:
    """This machine's dense matmul speed (GFLOP/s) in `precision` (fp32 | bf16 | fp16): a short loop of
    size x size products (default 1024 on CPU, 4096 on GPUs)."""
    target = torch.device(device)
    size = size or (1024 if target.type == "cpu" else 4096)
    # a private generator: `train` calls this after seeding, and must draw the same dropout masks as without
    generator = torch.Generator(device=target).manual_seed(0)
    a = torch.randn(size, size, device=target, generator=generator).to(DTYPES[precision])
    b = torch.randn(size, size, device=target, generator=generator).to(DTYPES[precision])
    out = torch.matmul(a, b)  # warm-up
    synchronize(target)
    count, started = 0, time.perf_counter()
    while True:
        torch.matmul(a, b, out=out)
        count += 1
        if count % 4 == 0:
            synchronize(target)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return 2 * size**3 * count / elapsed / 1e9


def disk_seconds(num_bytes: int) -> float:
    """Time to write `num_bytes` (checkpoint size) with torch.save, measured on a 16 MB sample."""
    sample = torch.zeros(4 * 1024 * 1024)  # 16 MiB of fp32
    with tempfile.TemporaryDirectory(prefix="twinbot-plan-") as tmp:
        started = time.perf_counter()
        torch.save(sample, Path(tmp) / "sample.pt")
        elapsed = time.perf_counter() - started
    return elapsed * num_bytes / sample.numel() / 4


@dataclass(frozen=True)
class Bookkeeping:
    """What `train` spends besides the model: opening the logs, one metrics row, one loss plot."""

    open_seconds: float = 0.0
    row_seconds: float = 0.0
    plot_seconds: float = 0.0

    def run_seconds(self, workload: Workload, log_every: int) -> float:
        """Logs are opened once, a row is written every LOG_EVERY steps and at each evaluation, the loss is
        plotted after each evaluation but the last, and at the end."""
        rows = workload.steps if log_every == 1 else workload.steps // log_every + workload.evaluations
        plots = max(workload.evaluations, 1)
        return self.open_seconds + rows * self.row_seconds + plots * self.plot_seconds


@functools.lru_cache(maxsize=1)
def measure_bookkeeping() -> Bookkeeping:
    """`train`'s own MetricsLog, timed in a temporary folder (the first plot pays matplotlib's import)."""
    with tempfile.TemporaryDirectory(prefix="twinbot-plan-") as tmp:
        started = time.perf_counter()
        log = MetricsLog(Path(tmp))
        opened = time.perf_counter()
        count = 5
        for step in range(1, count + 1):
            row = MetricsRow(
                step=step,
                epoch=step / count,
                tokens=step * 100,
                supervised_tokens=step * 10,
                computed_tokens=step * 80,
                train_loss=2.0,
                eval_loss=2.1,
                eval_ppl=8.2,
                lr=1e-4,
                tokens_per_s=100.0,
                elapsed_s=float(step),
            )
            log.log(row)
        logged = time.perf_counter()
        log.plot()
        first_plot = time.perf_counter()
        log.plot()
        second_plot = time.perf_counter()
        log.close()
    plot = second_plot - first_plot
    return Bookkeeping(
        open_seconds=opened - started + max(0.0, (first_plot - logged) - plot),
        row_seconds=(logged - opened) / count,
        plot_seconds=plot,
    )


class PeakMemory:
    """Peak memory of one calibration: allocated GPU memory on CUDA, else the process's resident memory,
    sampled by a background thread (ru_maxrss never goes down, so it can't tell presets apart)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> Literal["gpu", "rss"]:
        return "gpu" if self.device.type == "cuda" else "rss"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif _rss_bytes() is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, _rss_bytes() or 0)
            if self._stop.wait(0.02):
                return

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:  # no way to read the current resident memory: the process's peak so far
            with contextlib.suppress(ImportError):
                self.peak = peak_memory_bytes(self.device.type)


def _rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
