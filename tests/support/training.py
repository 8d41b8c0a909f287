"""Training settings, data and checks shared by the tests that really train a model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from twinbot.data.prepared import TRAIN_FILE
from twinbot.finetune.config import ENV_KEYS, TrainConfig
from twinbot.runs import ADAPTER_WEIGHTS

FIXTURE_DATA = Path(__file__).resolve().parent.parent / "fixtures" / "train" / "data"
FIXTURE_SYSTEM_PROMPT = "You are Sam. Reply the way Sam does."  # every fixture sample's system prompt

# Small and exact: short fp32 rows, a small LoRA without dropout, no warm-up, eager (the tests of torch.compile
# turn it on), on the CPU, seeded. Runs that compute the same thing two ways (processes, accumulation,
# compiling) compare equal under these.
TINY_TRAINING: dict[str, Any] = {
    "use_fp16": False,
    "packing": True,
    "row_tokens": 128,
    "max_seq_len": 128,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "device": "cpu",
    "seed": 0,
    "torch_compile": False,
}

# ... and a few steps in one process, evaluating and saving every 2.
TEST_SETTINGS: dict[str, Any] = {
    **TINY_TRAINING,
    "batch_size": 2,
    "processes": 1,
    "gradient_accumulation_steps": 1,
    "max_steps": 4,
    "eval_every": 2,
    "save_every": 2,
    "eval_max_samples": 4,
}


def make_config(model_dir: Path, out: Path, data: Path = FIXTURE_DATA, **changes: Any) -> TrainConfig:
    """TEST_SETTINGS for `model_dir` on `data`, writing to `out`, with `changes`."""
    settings = {**TEST_SETTINGS, "base_model": str(model_dir), "data_dir": data, "output_dir": out}
    return TrainConfig(**{**settings, **changes})


def set_options(settings: dict[str, Any]) -> list[str]:
    """The `--set KEY=value` options that give `twinbot train` these settings."""
    return [part for name, value in settings.items() for part in ("--set", f"{ENV_KEYS[name]}={value}")]


def train_only_data(folder: Path) -> Path:
    """The fixture's train.jsonl alone in `folder`/data-train-only: no eval.jsonl, so no evaluation (faster)."""
    data = folder / "data-train-only"
    data.mkdir()
    shutil.copy(FIXTURE_DATA / TRAIN_FILE, data / TRAIN_FILE)
    return data


def adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(adapter_dir) / ADAPTER_WEIGHTS)


def assert_same_adapter(a: Path, b: Path, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    left, right = adapter_tensors(a), adapter_tensors(b)
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=rtol, atol=atol, msg=name)
