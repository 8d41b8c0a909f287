"""The data folder `twinbot prepare` writes and every later stage reads.

DATA/
  train.jsonl, eval.jsonl   one Sample per line ({"messages": [...]}, the persona's turns as assistant)
  report.json               what was kept and dropped, and why (counts only, no message text)
  lengths.png               sample length histogram
  compare.json              `twinbot compare`: each preset's measured quality, read back by `plan`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twinbot.data.records import Sample
from twinbot.errors import TwinbotError
from twinbot.fileio import read_jsonl

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
REPORT_FILE = "report.json"
LENGTHS_PLOT = "lengths.png"
COMPARE_FILE = "compare.json"

_PROMPT_SAMPLE_LINES = 50  # how far into train.jsonl to look for the system prompt
_ROLES = ("system", "user", "assistant")
_NOT_PREPARED = "create train/eval data with `twinbot prepare`"


def load_samples(path: Path) -> list[Sample]:
    """Read a train.jsonl / eval.jsonl written by `prepare`; a TwinbotError naming the line of a bad row."""
    samples: list[Sample] = []
    for lineno, obj in read_jsonl(path):
        problem = _sample_problem(obj)
        if problem is not None:
            raise TwinbotError(f"not a twinbot sample ({problem}); {_NOT_PREPARED}", path, lineno)
        samples.append(Sample.from_json(obj))
    return samples


def _sample_problem(obj: dict[str, Any]) -> str | None:
    """What makes `obj` not a prepared sample (never quoting message text), or None."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return "no `messages` list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {index + 1} is not an object"
        role = message.get("role")
        if role not in _ROLES:
            return f"message {index + 1} has role {role!r}, expected system, user or assistant"
        if not isinstance(message.get("content"), str):
            return f"message {index + 1} has no text `content`"
        if role == "system" and index > 0:
            return f"message {index + 1} is a system message after the start"
    if messages[-1]["role"] != "assistant":
        return "the last message is not an assistant turn"
    return None


def system_prompt_from_samples(data_dir: Path) -> str | None:
    """The system prompt of the first sample in data_dir/train.jsonl (prepare writes one per sample)."""
    for name in (TRAIN_FILE, EVAL_FILE):
        path = data_dir / name
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for index, line in enumerate(fh):
                    if index >= _PROMPT_SAMPLE_LINES:
                        break
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    messages = row.get("messages") if isinstance(row, dict) else None
                    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
                        first = messages[0]
                        if first.get("role") == "system" and isinstance(first.get("content"), str):
                            return first["content"]
        except OSError:
            continue
    return None


def check_data_dir(data_dir: Path | None) -> Path:
    """The data folder made by `twinbot prepare`, or a TwinbotError saying what to pass instead."""
    if data_dir is None:
        raise TwinbotError("no training data: pass --data DIR (a folder made by `twinbot prepare`)")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise TwinbotError("data folder not found; pass the folder made by `twinbot prepare`", data_dir)
    if not (data_dir / TRAIN_FILE).is_file():
        raise TwinbotError(
            f"no {TRAIN_FILE} here, so this is not a folder made by `twinbot prepare`; "
            "run `twinbot prepare EXPORTS --me YOU --out DIR` and pass that DIR",
            data_dir,
        )
    return data_dir
