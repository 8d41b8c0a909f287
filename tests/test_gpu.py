"""The CUDA paths, on a CUDA machine (skipped elsewhere): packed rows keep samples apart, fused LoRA matches
peft under bf16 and fp16 autocast, fp32 training equals CPU training, bf16 training picks its micro-batch
by probing memory, fp16 loss scaling checkpoints and resumes, an unavailable flash-attn falls back to sdpa,
torch.compile trains what eager mode trains, generation matches transformers' generate, the blockwise
loss equals cross_entropy, and QLoRA (LOAD_IN_4BIT, with bitsandbytes installed) trains, resumes and exports.

The development machine has no GPU: these ran on a lent H200 (BENCHMARKS.md, "GPU checks"), with
`TWINBOT_TINY_MODEL` naming a prebuilt tiny model where the embedded one is not installed."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from support.training import assert_same_adapter, make_config, train_only_data
from test_attention import SAMPLE_LENGTHS, computed_places, random_rows, shared_beginning_rows
from test_fused_lora import lora_model
from twinbot.finetune import batches, steps
from twinbot.finetune import recipe as train
from twinbot.finetune.checkpoint import read_state
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.rows import Row
from twinbot.kernels.attention import PACKED_SDPA
from twinbot.kernels.fused_lora import fuse_lora_layers
from twinbot.models.loading import load_model
from twinbot.runs import latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def train_on_cuda(config: TrainConfig, resume: bool = False) -> train.TrainSummary:
    """`train.main`, checking from summary.json that the run trained on the GPU (accelerate keeps its device
    process-wide, and a run after a CPU run once trained on the CPU without a word)."""
    summary = train.main(config, resume=resume)
    assert json.loads((config.output_dir / "summary.json").read_text())["device"].startswith("cuda")
    return summary


def cuda_logits(
    model_dir: Path,
    attention: str,
    dtype: torch.dtype,
    layout: batches.BatchLayout,
    rows: list[Row] | None = None,
) -> torch.Tensor:
    rows = rows or random_rows(SAMPLE_LENGTHS)
    model = load_model(str(model_dir), dtype, attention, CUDA)
    model.config.use_cache = False
    batch = batches.make_batch(rows, 0, CUDA, layout)
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    if layout != "rows":
        return out[0].float().cpu()
    return torch.cat([out[i, : len(row)] for i, row in enumerate(rows)]).float().cpu()


@pytest.mark.parametrize("attention", ["sdpa", PACKED_SDPA])
def test_packed_rows_on_cuda_equal_the_cpu_reference(tiny_model_dir: Path, attention: str) -> None:
    from test_attention import load, logits

    reference = logits(load(tiny_model_dir, "sdpa"), random_rows(SAMPLE_LENGTHS), layout="rows")
    fp32 = cuda_logits(tiny_model_dir, attention, torch.float32, layout="rows")
    torch.testing.assert_close(fp32, reference, rtol=1e-4, atol=1e-4)
    if attention == PACKED_SDPA:
        torch.testing.assert_close(
            cuda_logits(tiny_model_dir, attention, torch.float32, layout="flat"),
            reference,
            rtol=1e-4,
            atol=1e-4,
        )
        shared_rows = shared_beginning_rows()
        torch.testing.assert_close(
            cuda_logits(tiny_model_dir, attention, torch.float32, "shared_prefix", shared_rows),
            logits(load(tiny_model_dir, "sdpa"), shared_rows, layout="rows")[computed_places(shared_rows)],
            rtol=1e-4,
            atol=1e-4,
        )
    bf16 = cuda_logits(tiny_model_dir, attention, torch.bfloat16, layout="rows")
    assert (bf16 - reference).abs().max() < 0.05 * reference.abs().max()


def cuda_loss_and_gradients(
    model: torch.nn.Module, dtype: torch.dtype | None
) -> tuple[float, dict[str, torch.Tensor]]:
    batch = batches.make_batch(random_rows(SAMPLE_LENGTHS, seed=3), 0, CUDA, layout="rows")
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = steps.forward_loss(model, batch)
    loss.backward()
    return float(loss), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_lora_under_cuda_autocast_is_as_close_to_fp32_as_peft(
    tiny_model_dir: Path, dtype: torch.dtype
) -> None:
    exact_model = lora_model(tiny_model_dir).to(CUDA)
    exact_loss, exact = cuda_loss_and_gradients(exact_model, None)
    fuse_lora_layers(exact_model)
    fused_fp32_loss, fused_fp32 = cuda_loss_and_gradients(exact_model, None)
    assert fused_fp32_loss == pytest.approx(exact_loss, rel=1e-5)
    for name, grad in exact.items():
        torch.testing.assert_close(fused_fp32[name], grad, rtol=1e-3, atol=1e-5, msg=name)

    model = lora_model(tiny_model_dir, dtype).to(CUDA)
    for param in model.parameters():  # LoRA weights stay fp32, as in training
        if param.requires_grad:
            param.data = param.data.float()
    _, peft_half = cuda_loss_and_gradients(model, dtype)
    assert fuse_lora_layers(model) > 0
    _, fused_half = cuda_loss_and_gradients(model, dtype)

    def relative_error(grads: dict[str, torch.Tensor]) -> float:
        return max(float((grads[n] - g).norm() / g.norm()) for n, g in exact.items())

    assert relative_error(fused_half) <= 1.5 * relative_error(peft_half) + 1e-3


def test_fp32_training_on_cuda_gives_the_cpu_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    cpu = train.main(make_config(tiny_model_dir, tmp_path / "cpu", max_steps=3))
    cuda = train_on_cuda(make_config(tiny_model_dir, tmp_path / "cuda", max_steps=3, device="cuda"))
    assert cpu.final_eval_loss is not None and cuda.final_eval_loss is not None
    assert abs(cpu.final_eval_loss - cuda.final_eval_loss) < 1e-3
    assert_same_adapter(tmp_path / "cpu" / "adapter", tmp_path / "cuda" / "adapter", rtol=1e-3, atol=1e-5)


def test_bf16_training_on_cuda_probes_the_micro_batch(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    summary = train_on_cuda(
        make_config(tiny_model_dir, run, device="auto", use_fp16=True, batch_size="auto", max_steps=3)
    )
    assert summary.precision == "bf16" and summary.peak_memory_bytes > 0
    assert summary.final_eval_loss is not None and math.isfinite(summary.final_eval_loss)
    saved = json.loads((run / "summary.json").read_text())
    # the tiny model fits any micro-batch: the probe stops at the largest power of two <= the 13 rows
    assert saved["micro_batch"] == 8
    assert "precision: bf16 mixed precision on cuda" in capsys.readouterr().err


def test_fp16_loss_scaling_checkpoints_and_resumes(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU without bf16 trains in fp16 with a loss scaler; its state is checkpointed, and the run resumed
    from its step-2 checkpoint ends with the adapter of the run that went straight through."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    config = make_config(
        tiny_model_dir,
        tmp_path / "straight",
        train_only_data(tmp_path),
        max_steps=4,
        save_every=2,
        device="cuda",
        use_fp16=True,
    )
    straight = train_on_cuda(config)
    assert straight.precision == "fp16" and straight.final_train_loss is not None
    assert math.isfinite(straight.final_train_loss)

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed_dir)
    shutil.rmtree(resumed_dir / "adapter")
    for checkpoint in list_checkpoints(resumed_dir):
        if read_state(checkpoint).step > 2:
            shutil.rmtree(checkpoint)
    assert read_state(latest_checkpoint(resumed_dir)).step == 2
    assert (latest_checkpoint(resumed_dir) / "scaler.pt").is_file()
    resumed = train_on_cuda(config.model_copy(update={"output_dir": resumed_dir}), resume=True)
    assert resumed.steps == 4
    assert_same_adapter(tmp_path / "straight" / "adapter", resumed_dir / "adapter", rtol=1e-2, atol=1e-4)
    # the scaler went on from its saved state: same scale and the same count of steps since it last changed
    scalers = [
        torch.load(latest_checkpoint(run) / "scaler.pt", weights_only=True)
        for run in (tmp_path / "straight", resumed_dir)
    ]
    assert scalers[0] == scalers[1] and scalers[0]["_growth_tracker"] > 0


def test_flash_attention_request_works_or_falls_back_to_sdpa(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers.utils import is_flash_attn_2_available

    model = load_model(str(tiny_model_dir), torch.bfloat16, "flash_attention_2", CUDA)
    used = model.config._attn_implementation
    if is_flash_attn_2_available():
        assert used == "flash_attention_2"
    else:
        assert used == "sdpa" and "not using flash_attention_2" in capsys.readouterr().err


def test_torch_compile_on_cuda_trains_the_eager_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    common = {"max_steps": 3, "device": "cuda"}
    eager = train_on_cuda(make_config(tiny_model_dir, tmp_path / "eager", **common))
    compiled = train_on_cuda(make_config(tiny_model_dir, tmp_path / "compiled", torch_compile=True, **common))
    assert compiled.final_eval_loss is not None and eager.final_eval_loss is not None
    assert abs(compiled.final_eval_loss - eager.final_eval_loss) < 1e-3
    assert_same_adapter(
        tmp_path / "eager" / "adapter", tmp_path / "compiled" / "adapter", rtol=1e-2, atol=1e-4
    )


def test_generation_on_cuda_matches_transformers_generate(tiny_model_dir: Path) -> None:
    from test_inference import greedy_ours_and_transformers
    from twinbot.bot.loading import load_for_inference

    lm = load_for_inference(str(tiny_model_dir), device="auto", dtype=torch.float32)
    assert lm.model.device.type == "cuda"
    ours, theirs = greedy_ours_and_transformers(lm)
    assert ours == theirs and len(ours) == 12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blockwise_loss_on_cuda_equals_cross_entropy(dtype: torch.dtype) -> None:
    from twinbot.kernels.loss import block_rows, summed_cross_entropy

    generator = torch.Generator(device=CUDA).manual_seed(0)
    rows = 3 * block_rows(torch.empty(0, 49152, device=CUDA)) + 5  # three full blocks and a short one
    logits = (torch.randn(rows, 49152, generator=generator, device=CUDA) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 49152, (rows,), generator=generator, device=CUDA)
    expected = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected, logits)
    value = summed_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(value, logits)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-2, atol=1e-6)


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None,
    reason="QLoRA needs bitsandbytes: pip install 'twinbot[qlora]'",
)
def test_qlora_trains_a_4bit_base_resumes_exactly_and_exports_merged(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """LOAD_IN_4BIT: the base's linear layers are bitsandbytes NF4 with double quantization, the LoRA weights
    fp32; the run resumed from its step-2 checkpoint (the base quantized again) ends with the straight run's
    adapter; export merges the adapter into the unquantized base and passes its logit check."""
    from twinbot.export.exporter import export
    from twinbot.finetune.lora import load_training_model
    from twinbot.models.devices import pick_precision

    config = make_config(
        tiny_model_dir,
        tmp_path / "straight",
        train_only_data(tmp_path),
        max_steps=4,
        save_every=2,
        device="cuda",
        use_fp16=True,
        load_in_4bit=True,
    )
    model, _ = load_training_model(config, CUDA, pick_precision(True, "cuda"))
    quantized = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert quantized and all(m.weight.quant_state.quant_type == "nf4" for m in quantized)
    assert all(m.weight.quant_state.nested for m in quantized)  # double quantization
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    del model

    straight = train_on_cuda(config)
    assert straight.final_train_loss is not None and math.isfinite(straight.final_train_loss)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "straight", resumed_dir)
    shutil.rmtree(resumed_dir / "adapter")
    for checkpoint in list_checkpoints(resumed_dir):
        if read_state(checkpoint).step > 2:
            shutil.rmtree(checkpoint)
    resumed = train_on_cuda(config.model_copy(update={"output_dir": resumed_dir}), resume=True)
    assert resumed.steps == 4
    assert_same_adapter(tmp_path / "straight" / "adapter", resumed_dir / "adapter", rtol=1e-3, atol=1e-5)

    export(tmp_path / "straight", "merged", tmp_path / "merged")  # raises if the logits disagree
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
