"""`--resume auto` (RESUME=auto): what a scheduled start does with the run folder it finds.

The same command runs every night and again at login, so it must be safe to repeat:

- no RUN, or an empty one: start a new run;
- a finished run (summary.json, and no checkpoint past it): nothing to train; say so, exit 0;
- any other run: continue it from its last checkpoint. `recipe.setup` then checks the checkpoint's
  fingerprint (`checkpoint.check_resumable`) and refuses data or settings other than the run's, so a
  different run in RUN is never overwritten; a folder that is not a run at all is refused by
  `recipe.check_paths`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from twinbot.errors import TwinbotError
from twinbot.finetune.checkpoint import read_state
from twinbot.finetune.config import TrainConfig
from twinbot.runs import RUN_MARKER, SUMMARY_FILE, latest_checkpoint, read_json

ResumeMode = Literal["no", "yes", "auto"]  # RESUME, --resume VALUE
ResumeArgument = bool | ResumeMode  # what `recipe.main` takes: True = "yes", False = "no"


@dataclass(frozen=True)
class FinishedRun:
    run_dir: Path
    summary: dict[str, Any]  # its summary.json
    steps: int


@dataclass(frozen=True)
class ResumeDecision:
    resume: bool  # continue the run in RUN (False: start a new one)
    finished: FinishedRun | None = None  # RUN holds a finished run: train nothing


COMMAND_LINE_SOURCES = frozenset({"cli", "--set"})
_ARGUMENTS: dict[str, ResumeArgument] = {"no": False, "yes": True, "auto": "auto"}


def resume_argument(
    config: TrainConfig, resume: ResumeArgument | None, overwrite: bool, sources: dict[str, str]
) -> ResumeArgument:
    """What `recipe.main` was asked: its `resume` argument, else RESUME (config.resume, whose source is in
    `sources`). A RESUME kept in .env, the environment or a YAML file gives way to --overwrite; given
    together with it on the command line (or in code) it is an error (`recipe.check_paths`)."""
    if isinstance(resume, bool):
        return resume
    if resume is None and overwrite and sources.get("resume", "cli") not in COMMAND_LINE_SOURCES:
        return False
    mode = config.resume if resume is None else resume.strip().lower()
    if mode not in _ARGUMENTS:
        raise TwinbotError(f"--resume {resume!r}: expected yes, auto or no (--resume alone = yes)")
    return _ARGUMENTS[mode]


def decide_auto_resume(run_dir: Path | None) -> ResumeDecision:
    """`--resume auto` for the run folder `run_dir` (see the module docstring). Reads, never writes."""
    if run_dir is None:
        return ResumeDecision(resume=False)  # check_paths reports the missing --out
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return ResumeDecision(resume=False)
    return ResumeDecision(resume=True, finished=finished_run(run_dir))


def finished_run(run_dir: Path) -> FinishedRun | None:
    """The run in `run_dir` when it finished: summary.json is written last, and a checkpoint newer than
    it means the run was extended (--resume with more steps) and stopped again."""
    if not (run_dir / RUN_MARKER).is_file():
        return None
    summary = read_json(run_dir / SUMMARY_FILE)
    steps = summary.get("steps") if summary is not None else None
    if summary is None or not isinstance(steps, int) or isinstance(steps, bool):
        return None
    last = latest_checkpoint(run_dir)
    if last is not None:
        try:
            if read_state(last).step > steps:
                return None
        except TwinbotError:
            return None  # resuming reports the unreadable checkpoint
    return FinishedRun(run_dir=run_dir, summary=summary, steps=steps)


def finished_message(run: FinishedRun) -> str:
    return (
        f"{run.run_dir}: already finished ({run.steps} steps); nothing to train. "
        f"--resume trains it further (with more EPOCHS or MAX_STEPS), --overwrite trains it again"
    )
