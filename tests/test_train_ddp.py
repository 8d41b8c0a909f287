"""`accelerate launch -m twinbot train` with 2 CPU processes (DDP over gloo) matches one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed

from support.training import TINY_TRAINING, assert_same_adapter, set_options, train_only_data
from twinbot.finetune import recipe as train
from twinbot.finetune import workers
from twinbot.finetune.config import ENV_KEYS, TrainConfig

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch build has no torch.distributed with gloo, so it cannot run CPU processes together",
)

SETTINGS = {**TINY_TRAINING, "batch_size": 1}
STEPS = 3


def test_two_processes_match_one_process_with_the_same_global_batch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = train_only_data(tmp_path)

    # 2 processes x 1 micro-batch each ...
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(workers.free_local_port()), "-m", "twinbot", "train"]
    args = ["--data", str(data), "--out", str(tmp_path / "ddp"), "--model", str(tiny_model_dir)]
    args += ["--max-steps", str(STEPS), "--set", "GRADIENT_ACCUMULATION_STEPS=1"]
    args += set_options(SETTINGS)
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS.values()}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [*launch, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "x 2 process(es)" in result.stderr

    # ... equals 1 process x 2 accumulated micro-batches
    single = train.main(
        TrainConfig(
            **SETTINGS,
            base_model=str(tiny_model_dir),
            data_dir=data,
            output_dir=tmp_path / "single",
            max_steps=STEPS,
            gradient_accumulation_steps=2,
        )
    )

    ddp_summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp_summary["processes"] == 2 and ddp_summary["steps"] == STEPS
    assert ddp_summary["supervised_tokens"] == single.supervised_tokens
    assert ddp_summary["tokens_seen"] == single.tokens_seen
    # the plan line counts the tokens of both processes
    planned = re.search(rf"plan: .* for {STEPS} steps, ([\d,]+) tokens", result.stderr)
    assert planned is not None and int(planned.group(1).replace(",", "")) == ddp_summary["tokens_seen"]
    assert abs(ddp_summary["final_train_loss"] - single.final_train_loss) < 1e-5
    assert_same_adapter(tmp_path / "ddp" / "adapter", tmp_path / "single" / "adapter", rtol=1e-4, atol=1e-6)
