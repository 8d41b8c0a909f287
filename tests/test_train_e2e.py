"""End to end on the embedded default model (SmolLM2-135M-Instruct): a short run gives a usable adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support.runs import EMBEDDED_STEPS, TrainedRun
from twinbot.finetune.lora import compile_wanted
from twinbot.models.loading import EMBEDDED_MODEL
from twinbot.runs import ADAPTER_CONFIG, ADAPTER_DIR, METRICS_FILE, SUMMARY_FILE


@pytest.mark.slow
def test_embedded_model_short_run_gives_an_adapter_that_changes_the_logits(
    embedded_model_dir: Path, embedded_run: TrainedRun
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The shared run (conftest.embedded_run) took the `fast` preset's training path: packing and shared
    # beginnings, 16-bit where the CPU has it (in one process and without torch.compile: support.runs).
    run, config = embedded_run.path, embedded_run.config
    assert (config.preset, config.processes, config.packing, config.use_fp16) == ("fast", 1, True, True)
    recorded = json.loads((run / SUMMARY_FILE).read_text())
    assert recorded["steps"] == EMBEDDED_STEPS and recorded["final_eval_loss"] is not None
    assert recorded["processes"] == 1
    adapter = run / ADAPTER_DIR
    assert json.loads((adapter / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == EMBEDDED_MODEL
    assert recorded["base_model"] == EMBEDDED_MODEL
    assert recorded["torch_compile"] is compile_wanted(config, "cpu")
    # packed_sdpa computes the system prompt the sample's conversations begin with once per micro-batch
    assert 0 < recorded["computed_tokens"] < recorded["tokens_seen"]
    metrics = (run / METRICS_FILE).read_text().splitlines()
    assert metrics[0].split(",")[4] == "computed_tokens"

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    prompt = [{"role": "user", "content": "are you coming tonight?"}]
    input_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt")
    input_ids = getattr(input_ids, "input_ids", input_ids)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(input_ids).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        tuned_logits = tuned(input_ids).logits
        with tuned.disable_adapter():
            torch.testing.assert_close(tuned(input_ids).logits, base_logits)
    assert (tuned_logits - base_logits).abs().max() > 1e-3
