"""QLoRA (LOAD_IN_4BIT) on a machine without CUDA: the setting and its preset resolve like the others, a run
asked for here stops with one line before anything is written, the loader asks transformers for NF4 with
double quantization and a 16-bit compute dtype and prepares the model as peft's k-bit recipe does, and an
export of a 4-bit run merges into the unquantized base. Training in 4-bit itself is in test_gpu.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from support.runs import TrainedRun, copy_run
from support.training import make_config
from twinbot.errors import TwinbotError
from twinbot.finetune import recipe as train
from twinbot.finetune.config import resolve_train_config
from twinbot.finetune.lora import load_training_model
from twinbot.models import loading, quantization
from twinbot.models.devices import pick_precision
from twinbot.runs import SUMMARY_FILE


def resolve(**kwargs: Any) -> Any:
    return resolve_train_config(
        kwargs.pop("cli", {}), environ=kwargs.pop("environ", {}), dotenv_path=None, **kwargs
    )


def test_qlora_preset_is_fast_with_a_4bit_base_and_checkpointing() -> None:
    resolved = resolve(cli={"preset": "qlora"})
    config, sources = resolved.config, resolved.sources
    assert config.load_in_4bit and sources["load_in_4bit"] == "preset:qlora"
    assert config.gradient_checkpointing and config.packing and config.batch_size == "auto"
    assert config.processes == 1 and config.torch_compile is False
    assert resolve(cli={"preset": "fast"}).config.load_in_4bit is False
    from_env = resolve(environ={"LOAD_IN_4BIT": "true"})
    assert from_env.config.load_in_4bit and from_env.sources["load_in_4bit"] == "environment"
    assert resolve(overrides=["LOAD_IN_4BIT=yes"]).config.load_in_4bit


def test_without_cuda_a_4bit_run_is_one_line_and_writes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, tmp_path / "run", load_in_4bit=True)
    with pytest.raises(
        TwinbotError, match=r"^LOAD_IN_4BIT needs a CUDA GPU and bitsandbytes, and no CUDA GPU"
    ) as exc:
        train.main(config)
    assert "\n" not in exc.value.message and "LOAD_IN_4BIT=false" in exc.value.message
    assert not (tmp_path / "run").exists()


def test_without_bitsandbytes_the_line_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = quantization.importlib.util.find_spec
    monkeypatch.setattr(
        quantization.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "bitsandbytes" else real_find_spec(name, *args),
    )
    with pytest.raises(
        TwinbotError, match=r"bitsandbytes is not installed; run `pip install 'twinbot\[qlora\]'`"
    ):
        quantization.check_4bit_support("cuda")


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_nf4_double_quantization_with_the_gpus_16bit_compute_dtype(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert quantization.four_bit_compute_dtype() == dtype
    settings = quantization.four_bit_config(dtype)
    assert settings.load_in_4bit and not settings.load_in_8bit
    assert settings.bnb_4bit_quant_type == "nf4" and settings.bnb_4bit_use_double_quant
    assert settings.bnb_4bit_compute_dtype == dtype


def test_4bit_loading_asks_for_nf4_and_prepares_for_kbit_training(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the loader hands transformers, and the model it trains: without CUDA the quantizing itself cannot
    run, so the load goes on unquantized from the arguments transformers got."""
    calls: list[dict[str, Any]] = []
    real_from_pretrained = loading._from_pretrained

    def record(loader: Any, resolved: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("quantization_config", "device_map")}
        return real_from_pretrained(loader, resolved, **kwargs)

    monkeypatch.setattr(loading, "_from_pretrained", record)
    monkeypatch.setattr(quantization, "check_4bit_support", lambda device: None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    config = make_config(tiny_model_dir, tmp_path / "run", load_in_4bit=True, gradient_checkpointing=True)
    model, _ = load_training_model(config, torch.device("cpu"), pick_precision(True, "cuda"))

    (call,) = [c for c in calls if "dtype" in c]  # the model itself (its config is read first)
    assert call["dtype"] == torch.bfloat16 and call["device_map"] == {"": "cpu"}
    settings = call["quantization_config"]
    assert (
        settings.load_in_4bit and settings.bnb_4bit_quant_type == "nf4" and settings.bnb_4bit_use_double_quant
    )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # k-bit preparation: the norms (and here the unquantized linear layers) in fp32, the LoRA weights fp32;
    # the embeddings and output layer stay in the bf16 compute dtype (tied here: one weight)
    base = model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    assert base.get_output_embeddings().weight.dtype == torch.bfloat16
    embedding = base.get_input_embeddings().weight
    assert {p.dtype for p in model.parameters() if p is not embedding} == {torch.float32}
    assert base.is_activation_checkpointing
    # fused LoRA reads the base layer's weight, which bitsandbytes packs: 4-bit layers keep peft's forward
    assert not any(hasattr(module, "_twinbot_peft_forward") for module in model.modules())


def test_export_of_a_4bit_run_merges_into_the_unquantized_base(
    tiny_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinbot.export import exporter

    run = copy_run(tiny_run, tmp_path / "run")
    summary = json.loads((run / SUMMARY_FILE).read_text())
    summary["config"]["load_in_4bit"] = True
    (run / SUMMARY_FILE).write_text(json.dumps(summary))
    loads: list[tuple[torch.dtype, Any]] = []
    real_load_model = loading.load_model

    def record(spec: Any, dtype: torch.dtype = torch.float32, *args: Any, **kwargs: Any) -> Any:
        loads.append((dtype, kwargs.get("quantization")))
        return real_load_model(spec, dtype, *args, **kwargs)

    monkeypatch.setattr(loading, "load_model", record)
    exporter.load_adapter_model(exporter.read_run(run))
    assert loads == [(torch.float32, None)]


def test_a_4bit_model_loads_onto_its_cuda_device_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate refuses a 4-bit model whose device map says "cuda" while it trains on "cuda:0"."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert loading._device_index(torch.device("cuda")) == 0
    assert loading._device_index(torch.device("cuda:1")) == 1
    assert loading._device_index(torch.device("cpu")) == "cpu"
