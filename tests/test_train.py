"""`twinbot train` on the tiny random Llama: outputs, loss math, validation, resume, Ctrl-C, divergence."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from support.training import (
    FIXTURE_DATA,
    adapter_tensors,
    assert_same_adapter,
    make_config,
    train_only_data,
)
from twinbot.errors import TwinbotError
from twinbot.finetune import batches, lora, runtime, steps
from twinbot.finetune import recipe as train
from twinbot.finetune.checkpoint import read_state
from twinbot.finetune.config import ENV_KEYS, TrainConfig
from twinbot.finetune.status import read_status
from twinbot.kernels.attention import PACKED_SDPA
from twinbot.models import devices
from twinbot.runs import latest_checkpoint, list_checkpoints

SYSTEM_PROMPT = "Reply the way Sam does"  # text of every fixture sample: must never show up in logs


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# --- a full short run -------------------------------------------------------------------------------------


def test_run_writes_adapter_checkpoints_logs_and_summary(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    config = make_config(tiny_model_dir, run, save_every=1, keep_checkpoints=2)
    summary = train.main(config, sources={"learning_rate": "--set"})

    assert summary.steps == 4 and summary.adapter_dir == run / "adapter"
    assert 0 < summary.supervised_tokens < summary.tokens_seen
    assert summary.precision == "fp32" and summary.peak_memory_bytes > 0
    assert summary.final_eval_loss is not None and math.isfinite(summary.final_eval_loss)

    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)
    assert adapter_config["r"] == 4 and adapter_config["peft_type"] == "LORA"
    assert AutoTokenizer.from_pretrained(run / "adapter").chat_template
    persona = json.loads((run / "adapter" / "twinbot.json").read_text())  # for chat / serve / export
    assert SYSTEM_PROMPT in persona["system_prompt"] and persona["base_model"] == str(tiny_model_dir)

    # The adapter loads onto the base model with plain PEFT and changes its output.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    input_ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    base_logits = base(input_ids).logits
    tuned = PeftModel.from_pretrained(base, run / "adapter")
    assert not torch.allclose(tuned(input_ids).logits, base_logits)

    assert [p.name for p in list_checkpoints(run)] == ["step-0000003", "step-0000004"]
    state = read_state(latest_checkpoint(run))
    assert (state.step, state.tokens_seen) == (4, summary.tokens_seen)

    rows = metrics_rows(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [bool(r["eval_loss"]) for r in rows] == [False, True, False, True]
    assert int(rows[-1]["tokens"]) == summary.tokens_seen
    assert all(float(r["train_loss"]) > 0 and float(r["tokens_per_s"]) > 0 for r in rows)
    assert math.isclose(float(rows[-1]["eval_ppl"]), math.exp(float(rows[-1]["eval_loss"])), rel_tol=1e-6)
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    saved = json.loads((run / "summary.json").read_text())
    assert saved["steps"] == 4 and saved["precision"] == "fp32" and saved["base_model"] == str(tiny_model_dir)
    assert saved["config"]["learning_rate"] == 1e-3 and saved["sources"] == {"learning_rate": "--set"}
    assert saved["final_eval_loss"] == summary.final_eval_loss and saved["micro_batch"] == 2

    out = capsys.readouterr()
    logs = out.out + out.err + (run / "summary.json").read_text() + (run / "metrics.csv").read_text()
    assert "precision: fp32" in out.err and "adapter written to" in out.out
    assert SYSTEM_PROMPT not in logs


def test_bf16_autocast_and_auto_batch_size_on_cpu(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not devices.cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    run = tmp_path / "run"
    config = make_config(
        tiny_model_dir, run, data=train_only_data(tmp_path), use_fp16=True, batch_size="auto", max_steps=1
    )
    summary = train.main(config)
    assert summary.precision == "bf16" and summary.final_train_loss is not None
    assert json.loads((run / "summary.json").read_text())["micro_batch"] == lora.CPU_AUTO_BATCH_SIZE
    assert "precision: bf16 autocast on cpu" in capsys.readouterr().err
    # LoRA weights stay fp32 (the master copy); only the frozen base runs in bf16
    assert all(t.dtype == torch.float32 for t in adapter_tensors(run / "adapter").values())


# --- device, precision, batch size, data order (no model needed) --------------------------------------------


def test_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.pick_precision(False, "cpu").name == "fp32"
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    chosen = devices.pick_precision(True, "cpu")
    assert (chosen.name, chosen.mixed_precision, chosen.base_dtype) == ("bf16", "bf16", torch.bfloat16)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.pick_precision(True, "cpu").mixed_precision == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert devices.pick_precision(True, "cuda").name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    chosen = devices.pick_precision(True, "cuda")
    assert (chosen.name, chosen.mixed_precision, chosen.base_dtype) == ("fp16", "fp16", torch.float16)
    assert "loss scaling" in chosen.description


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.pick_device("auto") == "cpu"
    with pytest.raises(TwinbotError, match="DEVICE=cuda"):
        devices.pick_device("cuda")
    with pytest.raises(TwinbotError, match="DEVICE=mps"):
        devices.pick_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.pick_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.pick_device("auto") == "cuda" and devices.pick_device("cuda:0") == "cuda:0"
    with pytest.raises(TwinbotError, match="DEVICE=cuda:1"):
        devices.pick_device("cuda:1")


def test_each_run_gets_the_device_it_asks_for_not_an_earlier_runs(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """accelerate keeps its device process-wide; a run in the same process as an earlier one on another device
    (seen on a GPU machine: a CUDA run after a CPU run trained on the CPU) must not inherit it."""
    from accelerate.state import PartialState

    PartialState(cpu=True)
    # an earlier run's device, as this test's stand-in
    PartialState._shared_state["device"] = torch.device("meta")
    accelerator, _ = runtime.make_accelerator(make_config(tiny_model_dir, tmp_path / "run"))
    assert accelerator.device == torch.device("cpu")


def test_auto_batch_size_is_the_largest_power_of_two_that_fits() -> None:
    tried: list[int] = []

    def fits_up_to_6(size: int) -> bool:
        tried.append(size)
        return size <= 6

    assert lora.largest_power_of_two(fits_up_to_6, limit=100) == 4 and tried == [1, 2, 4, 8]
    assert lora.largest_power_of_two(lambda size: True, limit=3) == 2  # never more than the data has
    assert lora.largest_power_of_two(lambda size: False, limit=8) == 0


def _rows(count: int) -> list[Any]:
    from twinbot.finetune.rows import Row

    return [
        Row(input_ids=[i] * (i + 2), target_ids=[-100, i] + [-100] * i, position_ids=list(range(i + 2)))
        for i in range(count)
    ]


def test_data_order_is_fixed_per_epoch_and_windows_cover_every_row() -> None:
    rows = _rows(7)
    data = batches.TrainData(rows, micro_batch=2, window=2, processes=1, seed=3)
    assert data.steps_per_epoch == 2  # 4 micro-batches (the last one short), 2 per step
    epoch0 = [row.input_ids[0] for s in (0, 1) for batch in data.step_micro_batches(s) for row in batch]
    epoch1 = [row.input_ids[0] for s in (2, 3) for batch in data.step_micro_batches(s) for row in batch]
    assert sorted(epoch0) == sorted(epoch1) == list(range(7)) and epoch0 != epoch1
    again = batches.TrainData(rows, micro_batch=2, window=2, processes=1, seed=3)
    assert [row.input_ids[0] for batch in again.step_micro_batches(2) for row in batch] == epoch1[:4]
    assert data.step_tokens(0) == sum(
        len(row.input_ids) for batch in data.step_micro_batches(0) for row in batch
    )


def test_short_last_window_gives_every_process_the_same_number_of_micro_batches() -> None:
    data = batches.TrainData(_rows(5), micro_batch=1, window=4, processes=2, seed=0)  # accumulation 2 x 2
    assert data.steps_per_epoch == 2
    assert len(data.step_micro_batches(0)) == 4
    last = data.step_micro_batches(1)  # 1 micro-batch left, padded with the epoch's first
    assert len(last) == 2 and last[1] is data.step_micro_batches(0)[0]


# --- loss math --------------------------------------------------------------------------------------------


def _rows_and_model(model_dir: Path, packing: bool) -> tuple[list[Any], Any, int]:
    from twinbot.data.prepared import load_samples
    from twinbot.finetune.rows import one_sample_rows, pack_rows, tokenize_samples
    from twinbot.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    samples = tokenize_samples(load_samples(FIXTURE_DATA / "train.jsonl")[:6], tokenizer, 128)
    rows = pack_rows(samples, 128) if packing else one_sample_rows(samples)
    model = load_model(str(model_dir), torch.float32, "sdpa", "cpu")
    return rows, model, tokenizer.pad_token_id


def test_supervised_only_logits_match_the_full_logits_loss(tiny_model_dir: Path) -> None:
    rows, model, pad_id = _rows_and_model(tiny_model_dir, packing=True)
    batch = batches.make_batch(rows[:3], pad_id, torch.device("cpu"), layout="rows")
    assert len(rows) >= 2 and batch.input_ids.shape[0] == min(3, len(rows))
    with torch.no_grad():
        kept = steps.forward_loss(model, batch)
        flat = steps.forward_loss(
            model, batches.make_batch(rows[:3], pad_id, torch.device("cpu"), layout="flat")
        )
        # use_cache=False: with a cache transformers would not see the packed samples' boundaries
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    full = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), batch.target_ids.flatten(), ignore_index=-100, reduction="sum"
    )
    torch.testing.assert_close(kept, full, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(flat, full, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("attention", "layout"), [("sdpa", "flat"), (PACKED_SDPA, "shared_prefix")])
def test_packed_samples_do_not_attend_to_each_other(
    tiny_model_dir: Path, attention: str, layout: batches.BatchLayout
) -> None:
    """A packed micro-batch's loss is the sum of its samples' losses computed one by one. The fixture's
    samples all begin with the persona's system prompt: `shared_prefix` computes it once per micro-batch."""
    from twinbot.models.loading import load_model

    single_rows, _, pad_id = _rows_and_model(tiny_model_dir, packing=False)
    model = load_model(str(tiny_model_dir), torch.float32, attention, "cpu")
    cpu = torch.device("cpu")
    packed = batches.make_batch(single_rows[:4], pad_id, cpu, layout)
    assert packed.num_tokens == sum(len(row) for row in single_rows[:4])
    if layout == "shared_prefix":
        assert packed.computed_tokens == packed.input_ids.shape[1] <= packed.num_tokens - 3 * 10
    with torch.no_grad():
        together = steps.forward_loss(model, packed)
        apart = sum(
            steps.forward_loss(model, batches.make_batch([row], pad_id, cpu, layout="rows"))
            for row in single_rows[:4]
        )
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-4)


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """GA=2 x 1 sample gives the same LoRA update as GA=1 x 2 samples: the loss of an optimizer step is
    normalized by the supervised tokens of the whole step, not per micro-batch."""
    data = train_only_data(tmp_path)
    common = {"packing": False, "max_steps": 3, "save_every": 3}
    train.main(
        make_config(
            tiny_model_dir, tmp_path / "ga", data, batch_size=1, gradient_accumulation_steps=2, **common
        )
    )
    train.main(
        make_config(
            tiny_model_dir, tmp_path / "big", data, batch_size=2, gradient_accumulation_steps=1, **common
        )
    )
    assert_same_adapter(tmp_path / "ga" / "adapter", tmp_path / "big" / "adapter")
    losses = [float(metrics_rows(tmp_path / run)[-1]["train_loss"]) for run in ("ga", "big")]
    assert math.isclose(*losses, rel_tol=1e-5)


def test_gradient_checkpointing_gives_the_same_update(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import modeling_utils

    recomputed: list[bool] = []
    original = modeling_utils.checkpoint

    def counting_checkpoint(*args: Any, **kwargs: Any) -> Any:
        recomputed.append(kwargs.get("use_reentrant", True))
        return original(*args, **kwargs)

    monkeypatch.setattr(modeling_utils, "checkpoint", counting_checkpoint)
    data = train_only_data(tmp_path)
    for name, checkpointing in (("plain", False), ("recompute", True)):
        config = make_config(
            tiny_model_dir, tmp_path / name, data, max_steps=2, gradient_checkpointing=checkpointing
        )
        train.main(config)
        assert bool(recomputed) == checkpointing and not any(recomputed)  # non-reentrant only
    assert_same_adapter(tmp_path / "plain" / "adapter", tmp_path / "recompute" / "adapter")


# --- validation: bad input is an error and writes nothing ------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no data option", "--data"),
        ("missing folder", "not found"),
        ("empty folder", "twinbot prepare"),
        ("raw export", "twinbot prepare"),
        ("empty train.jsonl", "no samples"),
        ("not samples", "not a twinbot sample"),
    ],
)
def test_bad_data_is_an_error_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, case: str, message: str
) -> None:
    data: Path | None = tmp_path / "data"
    if case == "empty folder":
        data.mkdir()
    elif case == "raw export":
        _write(data / "messages.json", '{"messages": []}')
    elif case == "empty train.jsonl":
        _write(data / "train.jsonl", "")
    elif case == "not samples":
        _write(data / "train.jsonl", '{"text": "hello"}\n')
    elif case == "no data option":
        data = None
    run = tmp_path / "run"
    with pytest.raises(TwinbotError, match=message):
        train.main(make_config(tiny_model_dir, run, data=data))  # type: ignore[arg-type]
    assert not run.exists()


def test_no_supervised_tokens_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # 16 tokens hold the system prompt but none of the reply
    with pytest.raises(TwinbotError, match="no supervised tokens"):
        train.main(make_config(tiny_model_dir, run, max_seq_len=16, row_tokens=16))
    assert not run.exists()


def test_model_that_cannot_load_offline_is_an_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(TwinbotError, match="cannot load model"):
        train.main(make_config(Path("no-such-org/no-such-model"), run))
    assert not run.exists()


def test_existing_run_folder_is_never_replaced_silently(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = _write(tmp_path / "run" / "notes.txt", "mine").parent
    with pytest.raises(TwinbotError, match=r"--resume .* --overwrite"):
        train.main(make_config(tiny_model_dir, run))
    with pytest.raises(TwinbotError, match="not a twinbot run"):
        train.main(make_config(tiny_model_dir, run), overwrite=True)
    with pytest.raises(TwinbotError, match="only one"):
        train.main(make_config(tiny_model_dir, run), resume=True, overwrite=True)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def test_cli_user_error_is_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from twinbot.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["twinbot", "train", "--data", "missing", "--out", "run"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: missing: data folder not found") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


# --- resume ------------------------------------------------------------------------------------------------


def test_resume_refuses_changed_settings_and_may_extend_the_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    run, data = tmp_path / "run", train_only_data(tmp_path)
    train.main(make_config(tiny_model_dir, run, data, max_steps=2, save_every=1))
    with pytest.raises(TwinbotError, match=r"LORA_R \(4 -> 8\)"):
        train.main(make_config(tiny_model_dir, run, data, max_steps=3, lora_r=8), resume=True)
    _write(data / "train.jsonl", (FIXTURE_DATA / "train.jsonl").read_text()[:-200].rsplit("\n", 1)[0] + "\n")
    with pytest.raises(TwinbotError, match="the training data"):
        train.main(make_config(tiny_model_dir, run, data, max_steps=3), resume=True)
    shutil.copy(FIXTURE_DATA / "train.jsonl", data / "train.jsonl")
    summary = train.main(make_config(tiny_model_dir, run, data, max_steps=3), resume=True)
    assert summary.steps == 3
    assert [int(r["step"]) for r in metrics_rows(run)] == [1, 2, 3]


def test_resume_without_a_checkpoint_starts_from_the_beginning(tiny_model_dir: Path, tmp_path: Path) -> None:
    summary = train.main(
        make_config(tiny_model_dir, tmp_path / "new", train_only_data(tmp_path), max_steps=1), resume=True
    )
    assert summary.steps == 1


# --- a killed run resumes exactly; Ctrl-C saves a checkpoint -------------------------------------------------

# Runs `twinbot train ARGS` with every training micro-batch slowed down, so the test can act mid-run.
SLOW_TRAIN = """
import os, sys, time
import twinbot.finetune.recipe as train
original = train.forward_loss
def slow_forward_loss(model, batch):
    if model.training:
        time.sleep(float(os.environ["TEST_MICRO_BATCH_DELAY"]))
    return original(model, batch)
train.forward_loss = slow_forward_loss
from twinbot.cli import main
main()
"""


def _cli_settings(config: TrainConfig) -> list[str]:
    args = []
    for name in ("use_fp16", "packing", "row_tokens", "max_seq_len", "batch_size", "learning_rate"):
        args += ["--set", f"{ENV_KEYS[name]}={getattr(config, name)}"]
    for name in ("warmup_ratio", "lora_r", "lora_alpha", "lora_dropout", "save_every", "eval_every"):
        args += ["--set", f"{ENV_KEYS[name]}={getattr(config, name)}"]
    for name in ("eval_max_samples", "device", "seed", "keep_checkpoints", "processes", "torch_compile"):
        args += ["--set", f"{ENV_KEYS[name]}={getattr(config, name)}"]
    return args


def _start_slow_train(config: TrainConfig, cwd: Path, delay: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS.values()}
    env["TEST_MICRO_BATCH_DELAY"] = str(delay)
    args = ["train", "--data", str(config.data_dir), "--out", str(config.output_dir)]
    args += ["--model", str(config.base_model), "--max-steps", str(config.max_steps), *_cli_settings(config)]
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_TRAIN, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(
    condition: Any, process: subprocess.Popen[str], timeout: float = 180.0, kill: Any = None
) -> None:
    """Until `condition()`; fails if the training ends first, or after `timeout` s, then ending it with
    `kill` (default: the process itself)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"training ended early (rc {process.returncode}):\n{err[-3000:]}")
        if time.monotonic() > deadline:
            (kill or process.kill)()
            pytest.fail("timed out waiting for the training subprocess")
        time.sleep(0.05)


def test_killed_run_resumes_to_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = train_only_data(tmp_path)
    # dropout on: the resumed run must also restore the RNG states to draw the same dropout masks
    settings = {"max_steps": 8, "save_every": 1, "keep_checkpoints": 2, "lora_dropout": 0.1}
    config = make_config(tiny_model_dir, tmp_path / "killed", data, **settings)
    process = _start_slow_train(config, tmp_path, delay=0.3)
    _wait_for(lambda: any(read_state(p).step >= 3 for p in list_checkpoints(config.output_dir)), process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = read_state(latest_checkpoint(config.output_dir)).step
    assert 3 <= killed_at < 8 and not (tmp_path / "killed" / "adapter").exists()

    resumed = train.main(config, resume=True)
    reference = train.main(config.model_copy(update={"output_dir": tmp_path / "straight"}))
    assert resumed.steps == reference.steps == 8
    assert resumed.tokens_seen == reference.tokens_seen
    assert_same_adapter(tmp_path / "killed" / "adapter", tmp_path / "straight" / "adapter")
    assert [int(r["step"]) for r in metrics_rows(tmp_path / "killed")] == list(range(1, 9))


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(
        tiny_model_dir, tmp_path / "run", train_only_data(tmp_path), max_steps=40, save_every=1000
    )
    process = _start_slow_train(config, tmp_path, delay=0.2)
    _wait_for(lambda: len(_csv_lines(tmp_path / "run" / "metrics.csv")) >= 3, process)  # 2 steps done
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("interrupted: checkpoint saved at step") and "--resume" in last_line
    checkpoints = list_checkpoints(tmp_path / "run")
    assert len(checkpoints) == 1
    stopped_at = read_state(checkpoints[0]).step
    assert 2 <= stopped_at < 40
    assert f"step {stopped_at};" in last_line
    status = read_status(tmp_path / "run")
    assert status is not None and status.state == "interrupted"
    assert (status.step, status.pid) == (stopped_at, process.pid)

    summary = train.main(config.model_copy(update={"max_steps": stopped_at + 1}), resume=True)
    assert summary.steps == stopped_at + 1


def _csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


# --- non-finite loss ------------------------------------------------------------------------------------------


def _nan_on_training_calls(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int]) -> None:
    original = steps.token_loss
    calls = {"n": 0}

    def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = original(logits, targets)
        if not torch.is_grad_enabled():
            return loss  # evaluation
        calls["n"] += 1
        return loss * float("nan") if calls["n"] in bad_calls else loss

    monkeypatch.setattr(steps, "token_loss", token_loss)


def test_one_nonfinite_step_is_skipped_with_a_warning(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _nan_on_training_calls(monkeypatch, {2})
    summary = train.main(make_config(tiny_model_dir, tmp_path / "run", train_only_data(tmp_path)))
    assert summary.steps == 4 and summary.final_train_loss is not None
    assert math.isfinite(summary.final_train_loss)
    assert "warning: step 2: loss or gradients are not finite; step skipped" in capsys.readouterr().err
    assert all(torch.isfinite(t).all() for t in adapter_tensors(tmp_path / "run" / "adapter").values())
    assert [r["train_loss"] == "" for r in metrics_rows(tmp_path / "run")] == [False, True, False, False]


def test_repeated_nonfinite_steps_roll_back_to_the_last_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_on_training_calls(monkeypatch, {3, 4, 5, 6})
    run = tmp_path / "run"
    config = make_config(tiny_model_dir, run, train_only_data(tmp_path), max_steps=8, save_every=1)
    with pytest.raises(TwinbotError, match=r"not finite for 3 steps in a row.*LEARNING_RATE.*USE_FP16=false"):
        train.main(config)
    # steps 3-5 were skipped; checkpoint step-4 and step-5 hold the step-2 weights, like RUN/adapter
    last = latest_checkpoint(run)
    assert last is not None and last.name == "step-0000004"
    assert_same_adapter(run / "adapter", last / "adapter", rtol=0, atol=0)
    assert_same_adapter(run / "adapter", run / "checkpoints" / "step-0000003" / "adapter", rtol=0, atol=0)


def test_torch_compile_trains_the_same_adapter(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_COMPILE=true (packed_sdpa attention left out of the graphs, dynamic shapes) computes what eager
    mode does. Compiled with the aot_eager backend: dynamo's graphs and AOT autograd's backward as the run
    uses them, without inductor's C++ kernels, whose cold compilation alone took ~50 s of a 2-core test run
    (bench/train_throughput.py's `fast+compile` runs them)."""
    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **options: real_compile(model, backend="aot_eager", **options)
    )
    data = train_only_data(tmp_path)
    common = {"max_steps": 2, "attn_implementation": "packed_sdpa"}
    eager = train.main(make_config(tiny_model_dir, tmp_path / "eager", data, **common))
    compiled = train.main(
        make_config(tiny_model_dir, tmp_path / "compiled", data, torch_compile=True, **common)
    )
    assert compiled.final_train_loss == pytest.approx(eager.final_train_loss, abs=1e-4)
    assert_same_adapter(
        tmp_path / "eager" / "adapter", tmp_path / "compiled" / "adapter", rtol=1e-3, atol=1e-5
    )


def test_torch_compile_auto_is_on_for_cpu_training_on_linux_with_a_compiler(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auto = make_config(tiny_model_dir, tmp_path, torch_compile="auto")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(lora, "cpp_compiler_found", lambda: True)
    assert lora.compile_wanted(auto, "cpu")
    assert not lora.compile_wanted(auto, "cuda") and not lora.compile_wanted(auto, "mps")
    monkeypatch.setattr(lora, "cpp_compiler_found", lambda: False)
    assert not lora.compile_wanted(auto, "cpu")
    monkeypatch.setattr(lora, "cpp_compiler_found", lambda: True)
    for elsewhere in ("win32", "darwin"):
        monkeypatch.setattr(sys, "platform", elsewhere)
        assert not lora.compile_wanted(auto, "cpu")
    for explicit in (True, False):  # an explicit setting holds everywhere
        config = make_config(tiny_model_dir, tmp_path, torch_compile=explicit)
        assert (
            lora.compile_wanted(config, "cpu") is explicit and lora.compile_wanted(config, "cuda") is explicit
        )


def test_the_compiler_check_finds_what_inductor_would_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor import cpp_builder

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: sys.executable)  # a file that exists
    assert lora.cpp_compiler_found()
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "no-such-compiler-here")
    assert not lora.cpp_compiler_found()

    def no_compiler() -> str:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    assert not lora.cpp_compiler_found()


def test_auto_compile_falls_back_to_eager_when_compiling_fails(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_COMPILE=auto chose to compile for the user: a compiler that fails trains eagerly instead of
    ending the run; TORCH_COMPILE=true, the user's own choice, leaves dynamo's errors on."""
    from torch._dynamo import config as dynamo_config

    before = dynamo_config.suppress_errors  # a config module: monkeypatch would delete the setting on undo
    try:
        dynamo_config.suppress_errors = False
        module = torch.nn.Linear(2, 2)
        assert lora.maybe_compile(module, make_config(tiny_model_dir, tmp_path), "cpu") is module
        compiled = lora.maybe_compile(
            module, make_config(tiny_model_dir, tmp_path, torch_compile=True), "cpu"
        )
        assert compiled is not module
        assert dynamo_config.suppress_errors is False
        monkeypatch.setattr(lora, "cpp_compiler_found", lambda: True)
        monkeypatch.setattr(sys, "platform", "linux")
        auto = make_config(tiny_model_dir, tmp_path, torch_compile="auto")
        assert lora.maybe_compile(module, auto, "cpu") is not module
        assert dynamo_config.suppress_errors is True
    finally:
        dynamo_config.suppress_errors = before


def test_the_fused_optimizer_takes_the_steps_the_per_tensor_loop_takes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = make_config(tiny_model_dir, tmp_path, learning_rate=1e-2, weight_decay=0.01)

    def train_steps(fused: bool) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(16, 8, generator=generator)) for _ in range(3)]
        if fused:
            optimizer = lora.make_optimizer(params, config)
            assert optimizer.param_groups[0]["fused"] is True
        else:
            optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01, foreach=False)
        for _ in range(5):
            for param in params:
                param.grad = torch.randn(param.shape, generator=generator)
            optimizer.step()
        return [param.detach() for param in params]

    for fused, loop in zip(train_steps(True), train_steps(False), strict=True):
        torch.testing.assert_close(fused, loop, rtol=1e-6, atol=1e-7)


def test_keep_freed_memory_tunes_glibc_malloc_on_linux() -> None:
    """mallopt exists and accepts both settings on Linux/glibc; elsewhere the call does nothing."""
    import platform

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert lora.keep_freed_memory() is expected


def test_out_of_memory_is_one_line_with_the_next_step_and_the_checkpoint_intact(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allocation that fails at step 3 (a CUDA OutOfMemoryError raised where the forward pass runs) ends
    the run with one line: where, what is intact, what needs less memory; checkpointing turned on resumes."""
    run, data = tmp_path / "run", train_only_data(tmp_path)
    config = make_config(tiny_model_dir, run, data, max_steps=4, save_every=2)
    real_forward_loss, calls = train.forward_loss, []

    def failing_at_step_3(model: Any, batch: Any) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward_loss(model, batch)

    monkeypatch.setattr(train, "forward_loss", failing_at_step_3)
    with pytest.raises(TwinbotError) as raised:
        train.main(config)
    message = str(raised.value)
    assert "\n" not in message
    assert "training ran out of memory at step 3 of 4 (micro-batch 2 x " in message
    assert "the checkpoint of step 2 is intact" in message
    assert "GRADIENT_CHECKPOINTING=true (resumable: --set GRADIENT_CHECKPOINTING=true --resume)" in message
    assert "BATCH_SIZE=1" in message and "qlora" not in message  # 4-bit needs CUDA: not offered on a CPU
    assert read_state(latest_checkpoint(run)).step == 2 and not (run / "adapter").exists()

    monkeypatch.setattr(train, "forward_loss", real_forward_loss)
    resumed = train.main(config.model_copy(update={"gradient_checkpointing": True}), resume=True)
    assert resumed.steps == 4 and (run / "adapter").is_dir()
