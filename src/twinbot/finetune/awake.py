"""Keep the machine from sleeping while it trains (`twinbot train`; `--allow-sleep` / ALLOW_SLEEP=true to
let it sleep), and let it sleep again on every way out.

Windows: SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED), reset with ES_CONTINUOUS.
macOS: `caffeinate -i -w PID`. Linux: `systemd-inhibit --what=sleep:idle --mode=block` holding a small
child process. The macOS and Linux helpers also end by themselves when this process dies, however it dies
(caffeinate watches the pid; the Linux child reads its stdin, a pipe from this process, until it closes).
Where none of these is available, one line says so and training goes on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

from twinbot import console

ES_CONTINUOUS = 0x80000000
ES_SYSTEM_REQUIRED = 0x00000001

# A helper that fails (no permission from logind, say) exits at once; one still running after this long holds.
_HELPER_CHECK_SECONDS = 0.5
_HELPER_EXIT_SECONDS = 5.0
# The Linux inhibitor's child: blocks until this process closes the pipe (or dies), then exits.
_WAIT_FOR_EOF = "import sys; sys.stdin.buffer.read()"

Release = Callable[[], None]


def current_platform() -> str:
    """ "windows", "macos", "linux" or sys.platform."""
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("linux"):
        return "linux"
    return sys.platform


@contextlib.contextmanager
def stay_awake(enabled: bool = True) -> Iterator[None]:
    """The machine stays awake inside this block (when `enabled` and the platform allows it)."""
    if not enabled:
        yield
        return
    release = hold_awake()
    try:
        yield
    finally:
        release()


def hold_awake() -> Release:
    """Start keeping the machine awake; returns what lets it sleep again. Never raises."""
    platform = current_platform()
    try:
        if platform == "windows":
            return _hold_windows()
        if platform == "macos":
            return _hold_with_helper("caffeinate", ["-i", "-w", str(os.getpid())], stdin_pipe=False)
        if platform == "linux":
            args = ["--what=sleep:idle", "--who=twinbot", "--why=training a model", "--mode=block"]
            return _hold_with_helper("systemd-inhibit", [*args, sys.executable, "-c", _WAIT_FOR_EOF])
    except OSError as exc:
        _cannot(f"{type(exc).__name__}")
        return _nothing
    _cannot(f"no way to do it on {platform} is known to twinbot")
    return _nothing


def set_thread_execution_state(flags: int) -> int:
    """kernel32.SetThreadExecutionState (Windows only): the previous state, 0 on failure."""
    import ctypes

    return int(ctypes.windll.kernel32.SetThreadExecutionState(flags))  # type: ignore[attr-defined]


def _hold_windows() -> Release:
    if set_thread_execution_state(ES_CONTINUOUS | ES_SYSTEM_REQUIRED) == 0:
        _cannot("SetThreadExecutionState failed")
        return _nothing
    console.say("keeping the machine awake while it trains (--allow-sleep lets it sleep)")

    def release() -> None:
        set_thread_execution_state(ES_CONTINUOUS)

    return release


def _hold_with_helper(program: str, args: list[str], stdin_pipe: bool = True) -> Release:
    executable = shutil.which(program)
    if executable is None:
        _cannot(f"{program} not found")
        return _nothing
    helper = subprocess.Popen(
        [executable, *args],
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code = helper.wait(timeout=_HELPER_CHECK_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
    if code is not None:
        _cannot(f"{program} exited with code {code}")
        return _nothing
    console.say(f"keeping the machine awake while it trains ({program}; --allow-sleep lets it sleep)")

    def release() -> None:
        if helper.stdin is not None:  # the held child exits, then systemd-inhibit with it
            with contextlib.suppress(OSError):
                helper.stdin.close()
        else:
            helper.terminate()
        try:
            helper.wait(timeout=_HELPER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()

    return release


def _cannot(reason: str) -> None:
    console.say(f"could not keep the machine awake ({reason}); training goes on, but it may sleep")


def _nothing() -> None:
    return None
