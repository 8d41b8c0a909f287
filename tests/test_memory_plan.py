"""`twinbot plan --target-gpu NAME --model ID-or-size`: the model's shape read from its config, the peak
memory formula's parts, the micro-batch 'auto' would probe, what does not fit and the fix, the GPU table.
How close the formula comes to measured peaks: bench/memory.py (BENCHMARKS.md, "Memory planning")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from twinbot import cli
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.plan import memory
from twinbot.finetune.plan.gpus import find_gpu, target_gpu
from twinbot.finetune.plan.memory import GIB, arch_shape, fitting, memory_rows, predict


def test_a_size_is_the_shape_of_the_model_it_stands_for() -> None:
    llama8b = arch_shape("8B")
    assert llama8b.params == 8_030_261_248  # Llama-3.1-8B's published count
    assert llama8b.embedding_params == llama8b.head_params == 128_256 * 4096  # untied
    assert (llama8b.layers, llama8b.hidden, llama8b.kv_dim, llama8b.vocab) == (32, 4096, 1024, 128_256)
    assert memory.lora_params(llama8b, TrainConfig(lora_r=16)) == 41_943_040  # peft's count, r=16 all-linear
    assert (
        memory.lora_params(llama8b, TrainConfig(lora_r=16, lora_target_modules="q_proj,v_proj")) == 6_815_744
    )
    smol = arch_shape("135m")
    assert smol.params == 134_515_008 and smol.head_params == 0  # SmolLM2-135M: tied embeddings


def test_a_folder_is_counted_as_the_model_it_holds(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    shape = arch_shape(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.params == sum(p.numel() for p in model.parameters())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    assert shape.linear_params == sum(m.weight.numel() for m in linears)


def test_an_unknown_model_is_one_line_naming_the_sizes(tmp_path: Path) -> None:
    from twinbot.errors import TwinbotError

    with pytest.raises(
        TwinbotError, match=r"cannot read the config of --model .*; pass a local folder.*7b, 8b"
    ):
        arch_shape(str(tmp_path / "empty-folder-"))


def test_the_formula_parts() -> None:
    shape = arch_shape("8b")
    config = TrainConfig(
        packing=True, row_tokens=512, gradient_checkpointing=False, lora_r=16, lora_dropout=0.0
    )
    bf16 = predict(shape, config, "16-bit", micro_batch=2)
    assert bf16.weights == 2 * shape.params
    assert bf16.lora == 16 * 41_943_040
    # 7 x hidden + 3 x kv width + 4 x MLP width per token and layer in 16-bit, plus the norms' fp32 internals
    per_layer = 2 * (7 * 4096 + 3 * 1024 + 4 * 14336) + 16 * 4096
    assert bf16.activations == 1024 * 32 * per_layer
    assert bf16.logits == 2 * 1024 * 128_256 * 2 + 4 * (1 << 24)
    assert bf16.overhead == memory.CUDA_CONTEXT_BYTES + int(0.1 * bf16.allocated)
    qlora = predict(shape, config, "4-bit", micro_batch=2)
    embeddings = 2 * 128_256 * 4096  # input and output: bf16, as prepare_for_4bit_training leaves them
    norms = shape.params - shape.linear_params - embeddings  # fp32 after k-bit preparation
    assert qlora.weights == (
        int(shape.linear_params * memory.NF4_BYTES_PER_WEIGHT)
        + 2 * embeddings
        + 4 * norms
        + 2 * 4096 * 14336  # one dequantized linear layer
    )
    # fp32 norms, and bitsandbytes' layers answer in their input's dtype: the saved hidden states are fp32
    assert qlora.activations == 1024 * 32 * (4 * (7 * 4096 + 3 * 1024 + 4 * 14336) + 16 * 4096)
    assert pytest.approx(4.127 / 8, abs=1e-3) == memory.NF4_BYTES_PER_WEIGHT  # the QLoRA paper's bits
    checkpointed = predict(shape, config.model_copy(update={"gradient_checkpointing": True}), "16-bit", 2)
    assert checkpointed.activations == 1024 * (32 * 4096 * 2 + per_layer)
    fp32 = predict(shape, config, "fp32", micro_batch=2)
    assert fp32.weights == 4 * shape.params and fp32.activations > bf16.activations
    cpu = predict(shape, config, "fp32", 2, device="cpu", supervised_share=0.25, baseline_bytes=123)
    assert cpu.overhead == 123 and cpu.logits < fp32.logits


def test_auto_micro_batch_is_the_largest_power_of_two_that_fits() -> None:
    shape = arch_shape("1b")
    config = TrainConfig(preset="fast", packing=True, row_tokens=512, batch_size="auto")
    budget = 24 * GIB
    chosen = fitting(shape, config, "16-bit", budget)
    assert chosen.peak <= budget < predict(shape, config, "16-bit", chosen.micro_batch * 2).peak
    assert fitting(shape, config.model_copy(update={"batch_size": 3}), "16-bit", budget).micro_batch == 3


def test_what_does_not_fit_gets_the_cheapest_fix_that_fits() -> None:
    from twinbot.finetune.plan.planner import resolve_preset_configs

    configs = resolve_preset_configs(["baseline", "fast"], None, "8b", None, environ={}, dotenv_path=None)
    rows = memory_rows(arch_shape("8b"), configs, target_gpu("rtx3060"))
    by_name = {(r.estimate.preset, r.estimate.precision): r for r in rows}
    assert set(by_name) == {
        ("baseline", "fp32"),
        ("baseline", "4-bit"),
        ("fast", "16-bit"),
        ("fast", "4-bit"),
    }
    assert not by_name["baseline", "fp32"].fits and by_name["baseline", "4-bit"].fits
    fix = by_name["baseline", "fp32"].fix
    assert (
        fix is not None
        and fix.startswith("QLoRA (LOAD_IN_4BIT=true) fits in ")
        and fix.endswith(" of 12 GiB")
    )
    assert float(fix.split(" fits in ")[1].split()[0]) <= 12
    assert by_name["fast", "4-bit"].fix == "GRADIENT_CHECKPOINTING=true fits in 10.3 of 12 GiB"
    huge = memory_rows(arch_shape("70b"), {"fast": configs["fast"]}, target_gpu("rtx3070"))
    assert all("does not fit on RTX 3070" in (r.fix or "") for r in huge)


def test_plan_with_a_target_gpu_and_no_data_prints_the_memory_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["twinbot", "plan", "--target-gpu", "RTX 4090", "--model", "8b"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None)
    assert "memory on RTX 4090 (24 GiB) for 8b (shaped like Llama-3.1-8B): 8.03 B parameters" in out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 4 * 2  # header, the 4 presets x (their own precision, 4-bit)
    assert "baseline fp32: QLoRA (LOAD_IN_4BIT=true) fits in" in out


def test_gpu_table_finds_cards_by_torch_names() -> None:
    cases = {
        "NVIDIA GeForce RTX 4060 Ti": ("RTX 4060 Ti 16GB", 16),
        "NVIDIA GeForce RTX 4060": ("RTX 4060", 8),
        "NVIDIA A100-SXM4-40GB": ("A100 40GB", 40),
        "NVIDIA A100-SXM4-80GB": ("A100 80GB", 80),
        "NVIDIA A10": ("A10", 24),
        "NVIDIA L40S": ("L40S", 48),
        "NVIDIA L4": ("L4", 24),
        "Tesla T4": ("T4", 16),
        "NVIDIA H200": ("H200", 141),
        "3080 12GB": ("RTX 3080 12GB", 12),
    }
    for name, (expected, gib) in cases.items():
        gpu = find_gpu(name)
        assert gpu is not None and (gpu.name, gpu.memory_gib) == (expected, gib), name


def gemma2_shape(**overrides: object) -> memory.ArchShape:
    """A small Gemma 2 from its config alone: soft-capped attention scores, which sdpa cannot do."""
    from transformers import Gemma2Config

    sizes = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4)
    sizes.update(num_key_value_heads=2, head_dim=64, vocab_size=1024, query_pre_attn_scalar=64)
    return memory.shape_of_config(Gemma2Config(**{**sizes, **overrides}), "gemma2")


def test_eager_attention_keeps_heads_x_width_squared_per_layer_and_row_or_one_layer_with_checkpointing() -> (
    None
):
    rows, width = 2, 1024
    config = TrainConfig(packing=True, row_tokens=width, gradient_checkpointing=False, lora_dropout=0.0)
    llama = arch_shape("135m")  # 30 layers, 9 heads of 64, 3 key/value heads: key and value repeated 3 times
    repeated = width * 2 * 576  # key and value repeated to the 9 query heads, per row and layer
    for precision, per_score, activation_bytes in (("fp32", 4, 4), ("16-bit", 4 + 2, 2)):
        for checkpointing, layers in ((False, 30), (True, 1)):
            run = config.model_copy(update={"gradient_checkpointing": checkpointing})
            sdpa = predict(llama, run.model_copy(update={"attn_implementation": "sdpa"}), precision, rows)
            eager = predict(llama, run.model_copy(update={"attn_implementation": "eager"}), precision, rows)
            assert (sdpa.attention, eager.attention) == ("sdpa", "eager")
            per_row = 9 * width**2 * per_score + repeated * activation_bytes
            working = 9 * width**2 * 8  # two fp32 score matrices of the layer at work
            extra = rows * (layers * per_row + working)
            assert eager.activations - sdpa.activations == extra, (precision, checkpointing)
    # Gemma 2's soft-capping keeps tanh's output too: 8 bytes a score in fp32 and in 16-bit
    gemma = gemma2_shape()
    for precision in ("fp32", "16-bit"):
        eager = predict(gemma, config, precision, rows, device="cpu")
        flash = predict(gemma, config, precision, rows, flash_attn=True)
        assert (eager.attention, flash.attention) == (
            "eager",
            "flash_attention_2" if precision == "16-bit" else "eager",
        )
        bytes_ = 4 if precision == "fp32" else 2
        expected = 4 * width**2 * 8 + width * 2 * 256 * bytes_
        assert memory.eager_attention_bytes(gemma, bytes_, width, "cpu") == expected
    assert predict(gemma, config, "16-bit", rows, flash_attn=False).activations - predict(
        gemma, config, "16-bit", rows, flash_attn=True
    ).activations == rows * (4 * memory.eager_attention_bytes(gemma, 2, width, "cuda") + 4 * width**2 * 8)
    # attention dropout: a bool mask per score in CUDA's fused kernel, a 16-bit scaled mask on CPU
    dropping = gemma2_shape(attention_dropout=0.1)
    assert memory.eager_attention_bytes(dropping, 2, width, "cuda") - expected == 4 * width**2 * 1
    assert memory.eager_attention_bytes(dropping, 2, width, "cpu") - expected == 4 * width**2 * 2


def test_the_plan_of_a_gemma2_says_which_attention_it_assumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import Gemma2Config

    monkeypatch.setattr("transformers.utils.is_flash_attn_2_available", lambda: False)  # as on most machines
    Gemma2Config(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        vocab_size=1024,
        query_pre_attn_scalar=64,
    ).save_pretrained(tmp_path)
    monkeypatch.setattr(
        sys, "argv", ["twinbot", "plan", "--target-gpu", "A100 40GB", "--model", str(tmp_path)]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None)
    table = [line.split("|") for line in out.splitlines() if line.startswith("| ")]
    assert [cells[4].strip() for cells in table] == ["Attention"] + ["eager"] * (len(table) - 1)
    assert (
        "attention: eager in every row (Gemma2ForCausalLM with flash-attn not installed, as here): "
        "heads x row tokens^2 attention scores per layer and row are in Activations"
    ) in out
    flash = next(
        line for line in out.splitlines() if line.startswith("with flash-attn installed on the target: ")
    )
    assert flash.startswith("with flash-attn installed on the target: flash_attention_2, peak GiB ")
    assert "fast 16-bit" in flash and "fp32" not in flash  # flash-attention needs 16-bit weights
    llama_rows = memory_rows(arch_shape("1b"), {"fast": TrainConfig(preset="fast")}, target_gpu("A100 40GB"))
    # flash_attention_2 there, sdpa here: both keep O(width), so no note
    assert all(row.other_flash_attn is None and row.estimate.attention == "sdpa" for row in llama_rows)
    assert memory.attention_notes(arch_shape("1b"), llama_rows) == []
