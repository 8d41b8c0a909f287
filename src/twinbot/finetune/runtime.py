"""Where a run executes and how its processes agree: the accelerate side of training.

`make_accelerator` picks the device and mixed precision (`twinbot.models.devices`) and starts accelerate,
which places the model and, under `accelerate launch` or `twinbot.finetune.workers`, wraps it in DDP.
Every decision that changes what the processes do next is taken together (a collective), or they would
wait on each other forever: `stop_requested` turns a Ctrl-C in any process into "save and stop" in all
of them, `gather_rng_states` collects each process's RNG states for the checkpoint, and
`run_peak_memory` adds up the memory of processes that share one machine.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

import torch

from twinbot.finetune.checkpoint import capture_rng_state
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.metrics import peak_memory_bytes
from twinbot.models.devices import Precision, pick_device, pick_precision

if TYPE_CHECKING:
    from accelerate import Accelerator


def make_accelerator(config: TrainConfig) -> tuple[Accelerator, Precision]:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    device = pick_device(config.device)
    precision = pick_precision(config.use_fp16, device.split(":")[0])
    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    # accelerate keeps its state process-wide, the device included: a later run in the same process (tests,
    # benchmarks, plan's calibrations) may want another device or precision. A distributed launch keeps its
    # process group, and with it the device it was given.
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    AcceleratorState._reset_state(reset_partial_state=not distributed)
    return Accelerator(cpu=device == "cpu", mixed_precision=precision.mixed_precision), precision


def run_peak_memory(accelerator: Accelerator) -> int:
    """Peak memory of the run: per device on GPUs; on a CPU, where several processes share the machine's
    memory, the sum of their peaks."""
    peak = peak_memory_bytes(accelerator.device.type)
    if accelerator.num_processes == 1 or accelerator.device.type != "cpu":
        return peak
    return int(accelerator.reduce(torch.tensor([peak], dtype=torch.int64), "sum").item())


def gather_rng_states(accelerator: Accelerator) -> list[dict[str, Any]]:
    from accelerate.utils import gather_object

    return list(gather_object([capture_rng_state()]))


class StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop before its next micro-batch (it then saves a checkpoint at the
    last completed step); a second Ctrl-C stops at once. With an `external` event (a process started by
    `twinbot.finetune.workers`, whose parent takes the Ctrl-C), setting the event is the first Ctrl-C."""

    def __init__(self, external: Any = None) -> None:
        self._interrupted = False
        self._external = external
        self._previous: Any = None

    @property
    def requested(self) -> bool:
        return self._interrupted or (self._external is not None and self._external.is_set())

    def __enter__(self) -> StopOnInterrupt:
        if self._external is None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def stop_requested(interrupt: StopOnInterrupt, accelerator: Accelerator) -> bool:
    """Whether any process was interrupted (all processes must stop at the same micro-batch)."""
    return any_process(interrupt.requested, accelerator)


def any_process(flag: bool, accelerator: Accelerator) -> bool:
    """Whether `flag` holds in any process: a decision every process takes alike (a collective)."""
    if accelerator.num_processes == 1:
        return flag
    total = accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), "sum")
    return bool(total.item() > 0)
