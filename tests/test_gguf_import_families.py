"""A .gguf file twinbot exported, read back by the torch backend (`twinbot chat x.gguf --backend torch`):
the import (models/gguf_import.py, transformers' GGUF loader plus the settings it leaves out) must give the
exported model's logits for every family, and a file transformers cannot read as llama.cpp runs it is
refused in one line before any slow work.

Each family's tiny model (tests/support/families.py, small vocabulary) is exported to f32 and imported once.
The prompts are longer than the Gemma models' 16-token window; models with RoPE scaling also get one of
LONG_PROMPT_TOKENS, since scaling (Llama 3's, on the slowest frequencies) changes the result only between
distant tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from support.families import FAMILIES, make_family_model
from twinbot.errors import TwinbotError
from twinbot.export.gguf import write_gguf
from twinbot.models.gguf_import import gguf_reading, import_gguf
from twinbot.models.loading import embedded_gguf_path, load_model

PROMPTS = [
    "Hello there! How was the concert last night? I heard it ran late, and the bus after it too.",
    "ok see you at 7, don't forget the 12 bags and the tickets for the ferry on Sunday morning",
]
LONG_PROMPT_TOKENS = 1500
ATOL = 1e-4  # f32 weights on both sides: what differs is the order of float operations


@dataclass(frozen=True)
class Exported:
    name: str
    folder: Path  # the family's HF folder
    tokenizer: Any
    gguf: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Exported]:
    """`exported(name)`: the family's tiny model and its f32 GGUF export, built once per module."""
    built: dict[str, Exported] = {}

    def build(name: str) -> Exported:
        if name not in built:
            root = tmp_path_factory.mktemp(f"gguf-import-{name}")
            folder = make_family_model(name, root / "model", small_vocabulary=True)
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            built[name] = Exported(
                name, folder, tokenizer, export_f32(folder, tokenizer, root / f"{name}.gguf")
            )
        return built[name]

    return build


def export_f32(folder: Path, tokenizer: Any, path: Path, config: Any = None) -> Path:
    extra = {"config": config} if config is not None else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **extra)
    write_gguf(model, tokenizer, path, "f32")
    return path


@torch.no_grad()
def prompt_logits(model: Any, tokenizer: Any, long_prompt: bool) -> list[torch.Tensor]:
    prompts = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    if long_prompt:
        text = " ".join(PROMPTS * (LONG_PROMPT_TOKENS // 20))  # each prompt is over 20 tokens
        prompts.append(tokenizer(text)["input_ids"][:LONG_PROMPT_TOKENS])
        assert len(prompts[-1]) == LONG_PROMPT_TOKENS
    return [model(input_ids=torch.tensor([ids])).logits[0] for ids in prompts]


def has_rope_scaling(config: Any) -> bool:
    params = config.rope_parameters
    per_layer_type = params.values() if "full_attention" in params else [params]  # Gemma 3: two sets
    return any(rope.get("rope_type", "default") != "default" for rope in per_layer_type)


def assert_same_model(reference_folder: Path, gguf: Path, tokenizer: Any, out_dir: Path) -> None:
    imported = import_gguf(gguf, out_dir)
    reference = load_model(str(reference_folder)).eval()
    model = load_model(str(imported)).eval()
    scaled = has_rope_scaling(reference.config)
    got_logits, want_logits = (
        prompt_logits(model, tokenizer, scaled),
        prompt_logits(reference, tokenizer, scaled),
    )
    for got, want in zip(got_logits, want_logits, strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_an_exported_gguf_imports_as_the_same_model(
    exported: Callable[[str], Exported], name: str, tmp_path: Path
) -> None:
    family = exported(name)
    assert gguf_reading(family.gguf).problem is None
    assert_same_model(family.folder, family.gguf, family.tokenizer, tmp_path / "imported")


def rope_variant(name: str, config: Any) -> dict[str, Any]:
    """RoPE scaling the families' tiny models lack: Phi-3's LongRoPE (two factor tensors, the original
    context and an attention factor in the file) and linear scaling (a factor)."""
    if name == "llama":
        return {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    half = config.hidden_size // config.num_attention_heads // 2
    config.original_max_position_embeddings = 512
    return {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": [1.0 + 0.1 * i for i in range(half)],
        "long_factor": [1.0 + 2.0 * i for i in range(half)],
        "original_max_position_embeddings": 512,
        "partial_rotary_factor": 1.0,
    }


@pytest.mark.parametrize("name", ["phi3", "llama"])
def test_rope_scaling_imports_as_the_same_model(
    exported: Callable[[str], Exported], name: str, tmp_path: Path
) -> None:
    family = exported(name)
    config = AutoConfig.from_pretrained(str(family.folder))
    config.rope_parameters = rope_variant(name, config)
    folder = tmp_path / "variant"
    AutoModelForCausalLM.from_pretrained(str(family.folder), config=config).save_pretrained(folder)
    gguf = export_f32(folder, family.tokenizer, tmp_path / "variant.gguf")
    assert gguf_reading(gguf).rope["rope_type"] == config.rope_parameters["rope_type"]
    assert_same_model(folder, gguf, family.tokenizer, tmp_path / "imported")


def llama3_with_other_rope(llama3: Exported, path: Path) -> Path:
    """A Llama 3 model whose RoPE divisors are not Llama 3.x's: the file holds the divisors only, and
    transformers' llama3 RoPE needs the settings they came from."""
    config = AutoConfig.from_pretrained(str(llama3.folder))
    config.rope_parameters = {**config.rope_parameters, "low_freq_factor": 2.0}
    return export_f32(llama3.folder, llama3.tokenizer, path, config)


def test_rope_divisors_it_cannot_read_back_are_refused_before_the_import(
    exported: Callable[[str], Exported], tmp_path: Path
) -> None:
    gguf = llama3_with_other_rope(exported("llama3"), tmp_path / "other-rope.gguf")
    out_dir = tmp_path / "imported"
    with pytest.raises(TwinbotError, match="transformers reads llama GGUF files without RoPE") as error:
        import_gguf(gguf, out_dir)
    assert "\n" not in str(error.value)
    assert not out_dir.exists() and list(tmp_path.glob(".imported*")) == []


def bare_gguf(path: Path, architecture: str) -> Path:
    """A GGUF file of `architecture` with one layer and no other settings."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def chat_torch(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    from twinbot import cli

    monkeypatch.setattr(sys, "argv", ["twinbot", "chat", str(path), "--backend", "torch", "--device", "cpu"])
    monkeypatch.setattr(sys, "stdin", None)  # it must stop before reading a line
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("kind", ["other-rope", "unknown-architecture"])
def test_chat_on_a_gguf_transformers_cannot_read_is_one_line_exit_2(
    exported: Callable[[str], Exported],
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if kind == "other-rope":
        path, what = (
            llama3_with_other_rope(exported("llama3"), tmp_path / "x.gguf"),
            "reads llama GGUF files without",
        )
    else:
        path, what = bare_gguf(tmp_path / "x.gguf", "rwkv7"), "cannot read rwkv7 GGUF files"
    code, err = chat_torch(path, monkeypatch, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"transformers {what}" in lines[0], err
    assert "--backend llamacpp" in lines[0] and "--to merged" in lines[0]
    assert "importing" not in err


def test_the_embedded_gguf_reads_without_problems() -> None:
    reading = gguf_reading(embedded_gguf_path())
    assert reading.problem is None and reading.rope == {"rope_theta": 100000.0}


def test_a_gguf_missing_settings_it_needs_is_refused_in_words(tmp_path: Path) -> None:
    reading = gguf_reading(bare_gguf(tmp_path / "x.gguf", "gemma2"))
    assert reading.problem == "this gemma2 GGUF file has malformed settings"
