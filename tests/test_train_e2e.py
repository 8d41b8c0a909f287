"""End to end on the embedded default model (SmolLM2-135M-Instruct): a very short run gives a usable adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from twinbot.finetune import recipe as train
from twinbot.finetune.config import TrainConfig
from twinbot.models.loading import EMBEDDED_MODEL

FIXTURE_DATA = Path(__file__).parent / "fixtures" / "train" / "data"


@pytest.mark.slow
def test_embedded_model_short_run_gives_an_adapter_that_changes_the_logits(
    embedded_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    # The `fast` preset's training path (packing, 16-bit where the CPU has it, 2 processes that share each
    # micro-batch, torch.compile where `auto` turns it on) with short rows and 2 steps.
    config = TrainConfig(
        preset="fast",
        data_dir=FIXTURE_DATA,
        output_dir=run,
        packing=True,
        row_tokens=128,
        max_seq_len=128,
        batch_size=2,
        processes=2,
        torch_compile="auto",
        use_fp16=True,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        max_steps=2,
        eval_max_samples=1,
    )
    summary = train.main(config)
    assert summary.steps == 2 and summary.final_eval_loss is not None
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        EMBEDDED_MODEL
    )
    recorded = json.loads((run / "summary.json").read_text())
    assert recorded["base_model"] == EMBEDDED_MODEL
    assert recorded["torch_compile"] is train.compile_wanted(config, "cpu")
    # packed_sdpa computes the system prompt the fixture's samples begin with once per micro-batch
    assert 0 < recorded["computed_tokens"] < recorded["tokens_seen"]
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert metrics[0].split(",")[4] == "computed_tokens"

    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    prompt = [{"role": "user", "content": "are you coming tonight?"}]
    input_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt")
    input_ids = getattr(input_ids, "input_ids", input_ids)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(input_ids).logits
        tuned = PeftModel.from_pretrained(base, run / "adapter")
        tuned_logits = tuned(input_ids).logits
        with tuned.disable_adapter():
            torch.testing.assert_close(tuned(input_ids).logits, base_logits)
    assert (tuned_logits - base_logits).abs().max() > 1e-3
