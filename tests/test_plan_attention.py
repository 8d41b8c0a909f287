"""The plan's analytic estimate costs the attention training really runs: where loading falls back from
per-sample attention (packed_sdpa) to whole-row attention (Gemma 2's soft-capping, Gemma 3's sliding
window), every row pays row x row, as in training."""

from __future__ import annotations

import pytest

from support.families import FAMILIES
from twinbot.finetune.batches import batch_layout
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.plan.estimate import analytic_estimate, training_attention
from twinbot.finetune.plan.flops import ModelShape, epoch_flops
from twinbot.finetune.plan.records import Workload
from twinbot.finetune.rows import Row
from twinbot.kernels.attention import PACKED_SDPA
from twinbot.models.loading import causal_lm_class

# Two packed rows of several samples each (position ids restart at each sample).
ROWS = [
    Row(input_ids=[1] * 12, target_ids=[1] * 12, position_ids=[*range(6), *range(4), *range(2)]),
    Row(input_ids=[1] * 10, target_ids=[1] * 10, position_ids=[*range(3), *range(7)]),
]
SHAPE = ModelShape(body_params=1000, head_params=0, lora_params=10, layers=2, attention_dim=64)


SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Model folders of the families' configs (tests/support/families.py) with a small vocabulary: what
    `twinbot plan --model FOLDER` reads to choose the attention is the config alone."""
    from transformers import AutoConfig

    root = tmp_path_factory.mktemp("plan-families")
    for name in ("llama", "gemma2", "gemma3"):
        family = FAMILIES[name]
        config = AutoConfig.for_model(family.model_type, **{**family.config, **SIZES, "vocab_size": 128})
        config.save_pretrained(root / name)
    return {name: str(root / name) for name in ("llama", "gemma2", "gemma3")}


@pytest.fixture(scope="module")
def architectures(folders: dict[str, str]) -> dict[str, tuple[type, object]]:
    """Each family's model class and config, as `twinbot plan --model FOLDER` reads them."""
    found = {}
    for name, folder in folders.items():
        architecture = causal_lm_class(folder, folder)
        assert architecture is not None
        found[name] = architecture
    return found


def packed_cpu_config() -> TrainConfig:
    return TrainConfig(packing=True, attn_implementation="auto", gradient_checkpointing=False)


def test_the_plan_uses_the_attention_loading_falls_back_to(architectures: dict) -> None:
    config = packed_cpu_config()
    assert training_attention(config, "cpu", "fp32", architectures["llama"]) == PACKED_SDPA
    assert training_attention(config, "cpu", "fp32", architectures["gemma2"]) == "eager"
    assert training_attention(config, "cpu", "fp32", architectures["gemma3"]) == "sdpa"


def test_attention_pairs_are_whole_rows_where_training_attends_whole_rows(architectures: dict) -> None:
    """Same rows, same matmul shape: only the attention differs. Llama pays per sample (36+16+4 and 9+49
    pairs, on the tokens its shared beginnings leave); Gemma 2 and 3 pay 12^2 and 10^2, on every token."""
    config = packed_cpu_config()
    workload = Workload(
        micro_batch=2,
        gradient_accumulation_steps=1,
        rows=2,
        micro_batches_per_epoch=1,
        steps=1,
        tokens=22,
        supervised_tokens=22,
        evaluations=0,
        eval_tokens_per_evaluation=0,
        checkpoints=0,
    )
    seconds = {
        name: analytic_estimate(config, workload, SHAPE, ROWS, [], "cpu", "fp32", 0.0, None, architecture)
        for name, architecture in architectures.items()
    }
    per_sample = epoch_flops(SHAPE, [ROWS], False, True, "shared_prefix")
    whole_rows = epoch_flops(SHAPE, [ROWS], False, True, "rows")
    assert whole_rows > per_sample
    for name in ("gemma2", "gemma3"):
        ratio = seconds[name].train_seconds / seconds["llama"].train_seconds
        assert ratio == pytest.approx(whole_rows / per_sample, rel=1e-9), name
    assert batch_layout("eager") == batch_layout("sdpa") == "rows"


def test_startup_line_reads_the_loaded_models_architecture(
    folders: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train`'s plan line gets the architecture from the model it loaded (a PEFT model: its base)."""
    from transformers import AutoModelForCausalLM

    from twinbot.finetune.lora import apply_lora
    from twinbot.finetune.plan import estimate

    layouts = []
    monkeypatch.setattr(estimate, "batch_layout", lambda attention: layouts.append(attention) or "rows")
    gemma2_class, gemma2_config = causal_lm_class(folders["gemma2"], folders["gemma2"]) or (None, None)
    gemma2 = AutoModelForCausalLM.from_config(gemma2_config, attn_implementation="eager")
    assert isinstance(gemma2, gemma2_class)
    model = apply_lora(gemma2, 4, 8, 0.0, "all-linear")
    line = estimate.startup_line(packed_cpu_config(), model, ROWS, [], 2, "cpu", "fp32")
    assert line.startswith("plan: at least "), line
    assert layouts == ["eager"]
