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

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
REPORT_FILE = "report.json"

_PROMPT_SAMPLE_LINES = 50  # how far into train.jsonl to look for the system prompt


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
