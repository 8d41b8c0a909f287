"""The RUN folder: one owner for every name in it, and for the persona that travels with an adapter.

    RUN/
      run.json            written first: marks the folder as a run (--overwrite only deletes such folders)
      adapter/            the LoRA adapter (adapter_config.json, adapter_model.safetensors) + twinbot.json
      checkpoints/step-N/ adapter/ + state.json (optimizer, schedule, RNG) every SAVE_EVERY steps
      metrics.csv, loss.png, tb/ (TensorBoard)
      status.json         the run's state (running/finished/failed/interrupted) and progress, kept current
      summary.json        written last: the run finished (config, tokens, times, losses)
      eval/               `twinbot eval`: eval.json, report.html; blind.json (`twinbot eval --blind` answers)

A persona (system prompt + base model) is written as twinbot.json beside a model, so it travels with an
adapter, a merged folder or a GGUF file (NAME.gguf.twinbot.json, and inside the GGUF metadata).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinbot.data.prepared import system_prompt_from_samples
from twinbot.errors import TwinbotError
from twinbot.fileio import write_json

RUN_MARKER = "run.json"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE = "state.json"
METRICS_FILE = "metrics.csv"
LOSS_PLOT = "loss.png"
TENSORBOARD_DIR = "tb"
SUMMARY_FILE = "summary.json"
STATUS_FILE = "status.json"
EVAL_DIR = "eval"
EVAL_FILE = "eval.json"
REPORT_FILE = "report.html"
BLIND_FILE = "blind.json"
PERSONA_FILE = "twinbot.json"
GGUF_SYSTEM_PROMPT_KEY = "twinbot.system_prompt"


@dataclass(frozen=True)
class PersonaInfo:
    system_prompt: str | None
    base_model: str | None


def write_persona_info(path: Path, info: PersonaInfo) -> None:
    """Write a twinbot.json (system prompt and base model) beside a model; user-only, atomic."""
    write_json(Path(path), {"system_prompt": info.system_prompt, "base_model": info.base_model})


def read_persona_info(path: Path) -> PersonaInfo | None:
    """A twinbot.json written by `write_persona_info`, or None when missing or unreadable."""
    data = read_json(Path(path))
    if data is None:
        return None
    prompt = data.get("system_prompt")
    base = data.get("base_model")
    return PersonaInfo(
        system_prompt=prompt if isinstance(prompt, str) and prompt else None,
        base_model=base if isinstance(base, str) and base else None,
    )


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _data_dir_candidates(run_dir: Path, summary: dict[str, Any]) -> list[Path]:
    config = summary.get("config")
    raw = config.get("data_dir") if isinstance(config, dict) else None
    if not isinstance(raw, str) or not raw:
        return []
    path = Path(raw).expanduser()
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, run_dir.parent / path, run_dir / path]


def run_persona(run_dir: Path, adapter_dir: Path) -> PersonaInfo:
    """System prompt and base model of a RUN: RUN/adapter/twinbot.json, else summary.json + the training
    data (then cached into RUN/adapter/twinbot.json, so the run keeps working when the data moves)."""
    stored = read_persona_info(adapter_dir / PERSONA_FILE)
    if stored is not None and stored.system_prompt is not None and stored.base_model is not None:
        return stored
    summary = read_json(run_dir / SUMMARY_FILE) or {}
    base = summary.get("base_model") if isinstance(summary.get("base_model"), str) else None
    if base is None:
        base = adapter_base_model(adapter_dir)
    prompt = stored.system_prompt if stored is not None else None
    if prompt is None:
        for data_dir in _data_dir_candidates(run_dir, summary):
            prompt = system_prompt_from_samples(data_dir)
            if prompt is not None:
                break
    info = PersonaInfo(system_prompt=prompt, base_model=base)
    if prompt is not None and base is not None:
        with contextlib.suppress(OSError, TwinbotError):  # a read-only run folder still loads
            write_persona_info(adapter_dir / PERSONA_FILE, info)
    return info


def adapter_persona(adapter_dir: Path, run_dir: Path | None) -> PersonaInfo:
    """System prompt and base model of an adapter: its RUN's (see `_run_persona`), or for a bare adapter
    folder its twinbot.json with the base model from adapter_config.json as the fallback."""
    if run_dir is not None:
        return run_persona(run_dir, adapter_dir)
    info = read_persona_info(adapter_dir / PERSONA_FILE) or PersonaInfo(None, None)
    if info.base_model is None:
        info = PersonaInfo(info.system_prompt, adapter_base_model(adapter_dir))
    return info


def find_adapter(path: Path) -> tuple[Path, Path | None] | None:
    """(adapter folder, its RUN folder or None) when `path` is a RUN folder or an adapter folder."""
    if (path / ADAPTER_DIR / ADAPTER_CONFIG).is_file():
        return path / ADAPTER_DIR, path
    if (path / ADAPTER_CONFIG).is_file():
        is_run_adapter = path.name == ADAPTER_DIR and (path.parent / SUMMARY_FILE).is_file()
        return path, path.parent if is_run_adapter else None
    return None


def adapter_base_model(adapter_dir: Path) -> str | None:
    data = read_json(adapter_dir / ADAPTER_CONFIG) or {}
    base = data.get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None


def usable_base_model(run_dir: Path, base: str) -> str:
    """The run's base model spec; a local path that no longer exists falls back to summary's resolved path."""
    from twinbot.models.loading import EMBEDDED_MODEL

    if base == EMBEDDED_MODEL or Path(base).expanduser().exists():
        return base
    summary = read_json(run_dir / SUMMARY_FILE) or {}
    resolved = summary.get("base_model_path")
    if isinstance(resolved, str) and resolved and Path(resolved).exists():
        return resolved
    return base


_NAME = re.compile(r"step-(\d{7,})")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp folders of an interrupted save are ignored)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if (match := _NAME.fullmatch(path.name)) and (path / CHECKPOINT_STATE).is_file()
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise TwinbotError("no summary.json: not a finished `twinbot train` run; train it first", run_dir)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TwinbotError(
            f"unreadable summary.json ({type(exc).__name__}); train the run again", path
        ) from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        raise TwinbotError("not a `twinbot train` summary (no config); train the run again", path)
    return summary
