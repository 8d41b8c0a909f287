"""Training on a CPU with one process per core: `train.main` (and `plan`'s calibration of such a run) starts
the processes here and waits for them.

Each process runs the same `train.main` with one or a few intra-op threads and its share of every
micro-batch, joined by torch.distributed over gloo on 127.0.0.1 (the same data-parallel loop as
`accelerate launch`). Two single-threaded processes trained 6-10% faster than one process with two threads
on the reference 2-core CPU: a process's small ops and Python keep its own core busy, where one process
leaves the second core idle between ops (BENCHMARKS.md, attempts 22 and 24).

The processes ignore Ctrl-C themselves: the first Ctrl-C reaches this (parent) process, which tells them to
stop through an event, so the loop saves its checkpoint exactly as with one process; a second Ctrl-C ends
them at once. A process that fails ends the others, and its one-line error becomes this process's error.
If the parent itself dies (killed, its terminal closed), the processes stop as after Ctrl-C, with a
checkpoint, instead of training on unseen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.finetune import workers
from twinbot.finetune.checkpoint import read_state
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.lora import CPU_AUTO_BATCH_SIZE
from twinbot.models.devices import pick_device
from twinbot.runs import latest_checkpoint

Result = TypeVar("Result")

INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C (its checkpoint is saved)
_POLL_SECONDS = 0.2
_TRACEBACK_LIMIT = 8000  # characters of a process's traceback passed back (a pipe write must not block)
_ORPHAN_GRACE_SECONDS = 600.0  # after the parent died: time to finish the step and save, then exit anyway


@dataclass(frozen=True)
class ProcessPlan:
    """How a CPU run is split: `count` processes of `threads` intra-op threads, each taking `micro_batch` rows
    of every micro-batch (so an optimizer step sees the same rows as one process would)."""

    count: int
    threads: int
    micro_batch: int | str  # rows per process per forward pass, or "auto" (the device decides)


@dataclass
class WorkerJob:
    """What each process is given (pickled to it): it calls `target(*args, stop=EVENT)`."""

    target: Callable[..., Any]  # a module-level function
    args: tuple[Any, ...]
    plan: ProcessPlan
    environment: dict[str, str] = field(default_factory=dict)  # where rank 0 listens (127.0.0.1)


@dataclass
class WorkerResult:
    rank: int
    value: Any = None  # what rank 0's target returned
    error: str | None = None  # one line, as the user would see it from one process
    traceback: str | None = None  # of an unexpected error (a bug), shown as one process would show it


def in_distributed_launch() -> bool:
    """Whether a launcher (accelerate launch, torchrun) or this module already started this process as one of
    several: then it trains as it was launched."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_interface() -> str | None:
    """The loopback interface's name (Linux `lo`, macOS `lo0`), so gloo's connections stay on this machine
    instead of the interface the host name resolves to; None where it has another name (gloo's default)."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except (OSError, AttributeError):
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def run(target: Callable[..., Result], args: tuple[Any, ...], plan: ProcessPlan) -> Result:
    """`target(*args, stop=EVENT)` in each of `plan.count` local processes, which torch.distributed joins;
    returns rank 0's result. Raises TwinbotError with the first failing process's message, or
    SystemExit(130) when the processes stopped after Ctrl-C without a result (training saved its
    checkpoint)."""
    import torch.multiprocessing as mp

    # fork would copy this process's threads and torch state; Windows has only spawn
    context = mp.get_context("spawn")
    stop = context.Event()
    results = context.SimpleQueue()
    environment = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_local_port())}
    if sys.platform == "win32":  # torch's Windows builds have no libuv, which its rendezvous uses by default
        environment["USE_LIBUV"] = "0"
    interface = loopback_interface()
    if interface is not None:
        environment["GLOO_SOCKET_IFNAME"] = interface
    job = WorkerJob(target, args, plan, environment)
    processes = [
        context.Process(target=_worker, args=(rank, job, stop, results), name=f"twinbot-train-{rank}")
        for rank in range(plan.count)
    ]
    interrupts = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        stop.set()
        if interrupts > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt) if _in_main_thread() else None
    try:
        # OpenMP reads its thread count when torch loads: the processes must start with it set. No GPU: on a
        # machine with one, torch 2.11's gloo barrier put its tensor on cuda:RANK ("invalid device ordinal").
        with _environment(OMP_NUM_THREADS=str(plan.threads), CUDA_VISIBLE_DEVICES=""):
            for process in processes:
                process.start()
        ended_by_us = _wait(processes)
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    reported = []  # in the order they came: a first failure's error comes before its consequences' errors
    while not results.empty():
        reported.append(results.get())
    return _outcome(processes, reported, ended_by_us)


def _wait(processes: list[Any]) -> set[int]:
    """Until every process has ended; once one fails (other than by Ctrl-C), end the others: they would wait
    for it in their next collective until gloo's timeout. Returns the ranks of the processes it ended."""
    ended: set[int] = set()
    while any(process.is_alive() for process in processes):
        if any(process.exitcode not in (None, 0, INTERRUPTED) for process in processes):
            time.sleep(1.0)  # let the others report an error of their own (the same bad input, say)
            for rank, process in enumerate(processes):
                if process.is_alive():
                    process.terminate()
                    ended.add(rank)
        for process in processes:
            process.join(timeout=_POLL_SECONDS / len(processes))
    return ended


def _outcome(processes: list[Any], reported: list[WorkerResult], ended_by_us: set[int]) -> Any:
    codes = [process.exitcode for process in processes]
    value = next((result.value for result in reported if result.rank == 0), None)
    if all(code == 0 for code in codes) and value is not None:
        return value
    # A process that died by itself without a word (killed by the kernel, say) is the cause; the others'
    # errors (a connection reset by that process) are its consequences.
    said = {result.rank for result in reported}
    silent = [
        rank
        for rank, code in enumerate(codes)
        if code not in (0, INTERRUPTED) and rank not in said and rank not in ended_by_us
    ]
    if silent:
        rank, code = silent[0], codes[silent[0]]
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        raise TwinbotError(
            f"training process {rank} of {len(processes)} {how} without an error message (out of memory?); "
            f"set PROCESSES=1 or a smaller BATCH_SIZE, and run again with --resume"
        )
    first_error = next((result for result in reported if result.error), None)
    if first_error is not None:
        if first_error.traceback:
            print(first_error.traceback, file=sys.stderr, end="", flush=True)
        raise TwinbotError(first_error.error or "")
    raise SystemExit(INTERRUPTED)


def _worker(rank: int, job: WorkerJob, stop: Any, results: Any) -> None:
    """One training process (the target of a spawned process: a fresh interpreter)."""
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and tells us through `stop`
    # tqdm would make a multiprocessing lock, which a process ended by the parent leaves for the resource
    # tracker to report as leaked; progress bars in one process need only a thread lock
    tqdm.set_lock(threading.RLock())
    os.environ.update(job.environment)
    world = str(job.plan.count)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=world, LOCAL_WORLD_SIZE=world)
    torch.set_num_threads(job.plan.threads)
    _stop_when_the_parent_dies(stop)
    try:
        value = job.target(*job.args, stop=stop)
    except TwinbotError as exc:
        results.put(WorkerResult(rank, error=exc.render()))
        sys.exit(2)
    except SystemExit as exc:
        sys.exit(exc.code)
    except BaseException as exc:
        message = f"training process {rank} failed: {type(exc).__name__}: {one_line(exc)} (traceback above)"
        trace = traceback.format_exc()[-_TRACEBACK_LIMIT:]
        results.put(WorkerResult(rank, error=message, traceback=trace))
        sys.exit(1)
    results.put(WorkerResult(rank, value=value if rank == 0 else None))


def _stop_when_the_parent_dies(stop: Any) -> None:
    """Watch the parent from a thread: once it is gone, ask the loop to stop (it saves a checkpoint at the
    next micro-batch, as after Ctrl-C), and end this process if that has not happened in time."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])  # ready when the parent has exited, on POSIX and Windows alike
        stop.set()
        time.sleep(_ORPHAN_GRACE_SECONDS)
        os._exit(INTERRUPTED)

    threading.Thread(target=watch, name="twinbot-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def process_plan(config: TrainConfig) -> workers.ProcessPlan:
    """How many processes train. One on GPUs, under a launcher (accelerate launch, or a process of ours) and
    with PROCESSES=1. On a CPU, PROCESSES processes ('auto': one per core, as many as split the micro-batch
    evenly and fit in memory; one on Windows), each with its share of every micro-batch, so every optimizer
    step sees the rows one process would and the training is the same."""
    threads = torch.get_num_threads()
    single = workers.ProcessPlan(1, threads, config.batch_size)
    if config.processes == 1 or workers.in_distributed_launch():
        return single
    if pick_device(config.device) != "cpu":
        if config.processes == "auto":
            return single
        raise TwinbotError(
            f"PROCESSES={config.processes} is for training on a CPU; set PROCESSES=1 on a GPU "
            f"(several GPUs: accelerate launch -m twinbot train ...)"
        )
    if config.processes == "auto" and sys.platform == "win32":
        return single  # torch.distributed is little tested on Windows: there only on request
    rows = CPU_AUTO_BATCH_SIZE if config.batch_size == "auto" else config.batch_size
    if config.processes == "auto":
        limit = min(threads, processes_memory_allows(config))
        count = max(n for n in range(1, rows + 1) if rows % n == 0 and n <= limit)
    else:
        count = config.processes
        if rows % count:
            what = (
                f"BATCH_SIZE=auto ({rows} rows on a CPU)"
                if config.batch_size == "auto"
                else f"BATCH_SIZE={rows}"
            )
            raise TwinbotError(
                f"{what} does not split evenly between PROCESSES={count} processes; "
                f"set BATCH_SIZE to a multiple of {count}, or PROCESSES=auto"
            )
    if count == 1:
        return single
    return workers.ProcessPlan(count, max(1, threads // count), rows // count)


def as_the_run_started(config: TrainConfig) -> TrainConfig:
    """For --resume with PROCESSES=auto: the process count the run started with (and its micro-batch, with
    BATCH_SIZE=auto), as BATCH_SIZE=auto resumes with the micro-batch the probe picked. Another machine, or
    a run started before PROCESSES existed, then resumes as it began instead of refusing to."""
    checkpoint = latest_checkpoint(config.output_dir) if config.output_dir is not None else None
    if checkpoint is None:
        return config
    started = read_state(checkpoint).fingerprint
    processes = int(started.get("processes", 1))
    update: dict[str, Any] = {"processes": processes}
    if config.batch_size == "auto" and "batch_size" in started:
        update["batch_size"] = int(started["batch_size"]) * processes
    return config.model_copy(update=update)


def processes_memory_allows(config: TrainConfig) -> int:
    """How many training processes fit in the memory available now: each one more holds its own copy of the
    base model (counted twice: loading converts it), while the micro-batch's activations are split between
    them. Unlimited when the model's size is not known here (a hub id)."""
    import psutil

    from twinbot.models.loading import resolve_model

    location = Path(resolve_model(config.base_model))
    files = [location] if location.is_file() else list(location.glob("*")) if location.is_dir() else []
    weights = sum(f.stat().st_size for f in files if f.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
    if weights == 0:
        return sys.maxsize
    return 1 + int(psutil.virtual_memory().available // 2 // (2 * weights))
