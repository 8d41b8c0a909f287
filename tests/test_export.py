"""`twinbot export`: merged folder, GGUF and Ollama targets on the tiny model, checked by reloading them.

The RUN is built directly (LoRA applied with random non-zero weights), so merging really changes the model.
Its tiny model has SmolLM2's tokenizer cut to 1024 tokens (support.tiny.small_embedded_tokenizer): writing,
reloading and running a GGUF then costs a fraction of the whole 49k-token vocabulary's time. The whole
vocabulary (its pre-tokenizer known by hash) is exported by test_embedded_model_exports. Exports shared by
several tests are made once per module.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
import torch

from support.runs import TrainedRun
from twinbot.errors import TwinbotError
from twinbot.export import exporter as ex
from twinbot.export import gguf as gguf_export
from twinbot.export import verify
from twinbot.fileio import OUTPUT_MARKER
from twinbot.runs import GGUF_SYSTEM_PROMPT_KEY, PERSONA_FILE

SYSTEM_PROMPT = "You are Sam. Reply the way Sam does."


def make_run(base_dir: Path, root: Path) -> Path:
    """A RUN folder like `twinbot train` writes: adapter/ (PEFT + tokenizer), summary.json, data; the LoRA
    weights random (scale 0.05)."""
    from transformers import AutoTokenizer

    from twinbot.finetune.lora import apply_lora
    from twinbot.models.loading import load_model

    data = root / "data"
    data.mkdir(parents=True)
    sample = {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hey"},
        ]
    }
    (data / "train.jsonl").write_text(json.dumps(sample) + "\n", encoding="utf-8")
    model = apply_lora(load_model(str(base_dir), attn_implementation="eager"), r=4, alpha=8, dropout=0.0)
    randomize_lora(model)
    run = root / "run"
    model.save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(run / "adapter")
    summary = {"base_model": str(base_dir), "config": {"data_dir": str(data)}}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def randomize_lora(model: torch.nn.Module) -> None:
    """Random LoRA A and B weights (scale 0.05, seed 0): B is zero after init, so merging would not change
    the model."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def adapter_logits(run: Path, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(adapter model logits, base model logits) for `input_ids`."""
    model, _ = ex.load_adapter_model(ex.read_run(run))
    with torch.no_grad():
        tuned = model(input_ids).logits
        with model.disable_adapter():
            base = model(input_ids).logits
    return tuned, base


def is_user_only(path: Path) -> bool:
    return sys.platform == "win32" or stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("export-run")
    return make_run(make_tiny_model(root / "base", small_vocabulary=True), root)


@pytest.fixture(scope="module")
def merged_fp32(lora_run: Path) -> tuple[Path, ex.ExportResult]:
    out = lora_run.parent / "merged-fp32"
    return out, ex.export(lora_run, "merged", out, dtype="fp32")


@pytest.fixture(scope="module")
def gguf_f32(lora_run: Path) -> tuple[Path, ex.ExportResult]:
    out = lora_run.parent / "exports" / "twin-f32.gguf"
    return out, ex.export(lora_run, "gguf", out, gguf_type="f32")


# --- merged -----------------------------------------------------------------------------------------------


def test_merged_folder_loads_with_plain_transformers_and_matches_the_adapter(
    lora_run: Path, merged_fp32: tuple[Path, ex.ExportResult]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, result = merged_fp32
    assert result.target == "merged" and result.verification.passed
    assert result.verification.max_abs_delta <= 1e-3 and result.verification.top1_agreement == 1.0
    assert result.verification.positions > 50  # every position of every check prompt is compared
    assert (out / "model.safetensors").is_file() and not list(out.glob("adapter*"))
    assert all(is_user_only(p) for p in [out, *out.iterdir()])
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]

    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers: no peft, no twinbot
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello there 123"}], add_generation_prompt=True, return_dict=False
    )
    input_ids = torch.tensor([list(ids)])
    tuned, base = adapter_logits(lora_run, input_ids)
    with torch.no_grad():
        merged = model(input_ids).logits
    torch.testing.assert_close(merged, tuned, rtol=0, atol=1e-4)
    assert (merged - base).abs().max() > 1e-2  # the merge changed the model
    persona = json.loads((out / PERSONA_FILE).read_text(encoding="utf-8"))
    assert persona["system_prompt"] == SYSTEM_PROMPT


def test_merged_dtype_is_stored_and_checked(lora_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import safe_open

    out = lora_run.parent / "merged-bf16"
    result = ex.export(lora_run, "merged", out, dtype="bf16")
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        dtypes = {fh.get_slice(name).get_dtype() for name in fh.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}
    assert result.precision == "bf16" and 0 < result.verification.max_abs_delta <= verify.MAX_DELTA["bf16"]
    err = capsys.readouterr().err
    assert (
        f"verify: checked in transformers: {len(verify.CHECK_CONVERSATIONS)} prompts" in err
        and "max |delta logit|" in err
        and "top-1 agreement" in err
    )
    assert SYSTEM_PROMPT not in err


# --- GGUF -------------------------------------------------------------------------------------------------


def test_gguf_has_llama_metadata_tokenizer_and_permuted_attention(
    lora_run: Path, gguf_f32: tuple[Path, ex.ExportResult]
) -> None:
    import gguf
    from transformers import AutoTokenizer

    out, result = gguf_f32
    assert result.verification.passed and result.verification.max_abs_delta <= 1e-3
    assert is_user_only(out) and sorted(p.name for p in out.parent.iterdir()) == ["twin-f32.gguf"]

    reader = gguf.GGUFReader(out)

    def field(key: str) -> object:
        return reader.fields[key].contents()

    tokenizer = AutoTokenizer.from_pretrained(str(lora_run / "adapter"))
    assert field("general.architecture") == "llama"
    assert (field("llama.embedding_length"), field("llama.block_count")) == (64, 2)
    assert (field("llama.attention.head_count"), field("llama.attention.head_count_kv")) == (4, 2)
    assert field("llama.feed_forward_length") == 128 and field("llama.context_length") == 2048
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "smollm"
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == len(tokenizer)
    assert field("twinbot.system_prompt") == SYSTEM_PROMPT
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied embeddings: llama.cpp reuses token_embd
    assert {t.tensor_type for t in tensors.values()} == {gguf.GGMLQuantizationType.F32}

    # q is stored in llama.cpp's rotary layout: the HF rows permuted (transformers undoes it on load)
    merged, _ = ex.load_adapter_model(ex.read_run(lora_run))
    hf_q = merged.merge_and_unload().model.layers[0].self_attn.q_proj.weight.detach()
    stored_q = torch.from_numpy(tensors["blk.0.attn_q.weight"].data.copy()).reshape(hf_q.shape)
    assert not torch.allclose(stored_q, hf_q)
    torch.testing.assert_close(stored_q, gguf_export.llama_permute(hf_q, 4, 4), rtol=0, atol=0)


def test_gguf_loads_with_transformers_gguf_file(
    lora_run: Path, gguf_f32: tuple[Path, ex.ExportResult]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = gguf_f32
    model = AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    source = AutoTokenizer.from_pretrained(str(lora_run / "adapter"))
    text = "<|im_start|>user\nhow are you doing<|im_end|>\n"
    assert tokenizer(text)["input_ids"] == source(text)["input_ids"]
    input_ids = torch.tensor([source(text)["input_ids"]])
    tuned, _ = adapter_logits(lora_run, input_ids)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, tuned, rtol=0, atol=1e-3)


def test_ollama_folder_with_q8_0_gguf_and_modelfile(
    lora_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gguf

    # The tiny model is random: its next-token logits are nearly flat, so q8_0 rounding flips a few near
    # ties. The 99% requirement is checked on the real embedded model (test_embedded_model_exports).
    monkeypatch.setitem(verify.MIN_TOP1, "q8_0", 0.9)
    out = lora_run.parent / "ollama"
    result = ex.export(lora_run, "ollama", out, gguf_type="q8_0")
    assert result.verification.passed and result.precision == "q8_0"
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "Modelfile", "model.gguf"]
    assert all(is_user_only(p) for p in [out, *out.iterdir()])

    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out / "model.gguf").tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == gguf.GGMLQuantizationType.F32

    modelfile = (out / "Modelfile").read_text(encoding="utf-8")
    lines = modelfile.splitlines()
    assert lines[0] == "FROM ./model.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'PARAMETER stop "<|im_start|>"' in lines
    assert f'SYSTEM """{SYSTEM_PROMPT}"""' in lines
    assert "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}" in modelfile
    assert "<|im_start|>user\n{{ .Prompt }}<|im_end|>" in modelfile
    assert "<|im_start|>assistant\n{{ .Response }}<|im_end|>" in modelfile
    assert "verify:" in capsys.readouterr().err


# --- failures ---------------------------------------------------------------------------------------------


def test_failed_verification_is_an_error_and_leaves_no_output(
    lora_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(verify.MAX_DELTA, "fp32", -1.0)  # nothing can pass
    out = lora_run.parent / "failed" / "merged"
    with pytest.raises(TwinbotError, match=r"does not match the adapter model.*FAILED"):
        ex.export(lora_run, "merged", out, dtype="fp32")
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_a_quantized_export_under_its_bound_names_larger_types(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(verify.MIN_TOP1, "q8_0", 1.01)  # nothing can pass
    out = tmp_path / "out" / "twin.gguf"
    out.parent.mkdir()
    with pytest.raises(TwinbotError, match=r"the q8_0 export keeps too few.*use a larger --type \(f16\)$"):
        ex.export(lora_run, "gguf", out, gguf_type="q8_0")
    assert list(out.parent.iterdir()) == []


def test_a_write_failure_is_one_line_and_leaves_no_temp_file(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "write_gguf", disk_full)
    out = tmp_path / "out" / "twin.gguf"
    with pytest.raises(TwinbotError, match=r"export failed: .*No space left on device") as info:
        ex.export(lora_run, "gguf", out)
    assert "\n" not in str(info.value) and list(out.parent.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(lora_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine", encoding="utf-8")
    for target in ("merged", "ollama"):
        with pytest.raises(TwinbotError, match="--overwrite"):
            ex.export(lora_run, target, folder)  # type: ignore[arg-type]
        with pytest.raises(TwinbotError, match="twinbot did not write it"):
            ex.export(lora_run, target, folder, overwrite=True)  # type: ignore[arg-type]
    gguf_file = tmp_path / "taken.gguf"
    gguf_file.write_bytes(b"mine")
    with pytest.raises(TwinbotError, match="--overwrite"):
        ex.export(lora_run, "gguf", gguf_file)
    assert (folder / "keep.txt").read_text(encoding="utf-8") == "mine" and gguf_file.read_bytes() == b"mine"
    ours = tmp_path / "merged"
    ex.export(lora_run, "merged", ours)
    assert (ours / OUTPUT_MARKER).is_file()
    ex.export(lora_run, "merged", ours, overwrite=True)  # an export twinbot wrote is replaced


def test_bad_paths_and_options_are_one_line_errors(lora_run: Path, tmp_path: Path) -> None:
    cases = [
        ((tmp_path / "nope", "merged", tmp_path / "o"), "run folder not found"),
        ((tmp_path, "merged", tmp_path / "o"), "no adapter here"),
        ((lora_run, "gguf", tmp_path / "model.bin"), "ending in .gguf"),
        ((lora_run, "merged", lora_run / "merged"), "inside the run folder"),
        ((lora_run, "onnx", tmp_path / "o"), "unknown export target"),
    ]
    for args, message in cases:
        with pytest.raises(TwinbotError, match=message) as info:
            ex.export(*args)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    with pytest.raises(TwinbotError, match="unknown --type"):
        ex.export(lora_run, "gguf", tmp_path / "m.gguf", gguf_type="q4_k")  # type: ignore[arg-type]
    with pytest.raises(TwinbotError, match="unknown --dtype"):
        ex.export(lora_run, "merged", tmp_path / "m", dtype="int8")  # type: ignore[arg-type]


@pytest.mark.skipif(
    verify.gguf_verifier() == "transformers",
    reason="the k-quants are made by llama.cpp's quantizer: llama-cpp-python is not installed",
)
def test_k_quant_gguf_is_made_by_llama_cpp_and_checked_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from support.tiny import save_model_folder, small_embedded_tokenizer

    # rows of 256 and 512 weights: llama.cpp's q4_K and q6_K blocks fit (the 64-wide tiny model's fall back)
    tokenizer = small_embedded_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    run = make_run(save_model_folder(LlamaForCausalLM(config), tokenizer, tmp_path / "base"), tmp_path)
    # A random model's logits are nearly flat, so 4-bit rounding flips many near ties: the agreement bound is
    # checked on the real embedded model (test_embedded_model_exports); this checks what is written and run.
    monkeypatch.setitem(verify.MIN_TOP1, "q4_k_m", 0.0)
    out = tmp_path / "exports" / "twin.gguf"
    out.parent.mkdir()
    result = ex.export(run, "gguf", out, gguf_type="q4_k_m")
    assert result.precision == "q4_k_m" and result.verification.verifier == verify.gguf_verifier()
    assert result.verification.max_abs_delta < 1.0  # the same model, 4-bit: not another one
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].parts[-1][0] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    types = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q4_K
    assert gguf.GGMLQuantizationType.Q6_K in set(types.values())  # the "_m" mix keeps some tensors larger
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert reader.fields[GGUF_SYSTEM_PROMPT_KEY].contents() == SYSTEM_PROMPT
    assert sorted(path.name for path in out.parent.iterdir()) == ["twin.gguf"]  # the f16 step removed
    assert is_user_only(out)


@pytest.mark.skipif(verify.gguf_verifier() == "transformers", reason="llama-cpp-python is not installed")
def test_llama_cpp_prints_its_errors_not_its_warnings(
    gguf_f32: tuple[Path, ex.ExportResult], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from twinbot.export.gguf.writer import quantize_gguf

    f32, _ = gguf_f32
    quantize_gguf(
        f32, tmp_path / "q4.gguf", "q4_k_m"
    )  # 64-wide rows: every matrix falls back, with a warning
    assert "not divisible" not in capfd.readouterr().err
    with pytest.raises(TwinbotError, match="could not quantize the model to q6_k"):
        quantize_gguf(tmp_path / "q4.gguf", tmp_path / "q6.gguf", "q6_k")
    assert "requantizing from type" in capfd.readouterr().err  # llama.cpp's reason, an error


def test_k_quant_without_llama_cpp_is_a_one_line_error(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> None:
        raise TwinbotError("llama-cpp-python is not installed")

    monkeypatch.setattr(gguf_export.writer, "import_llama_cpp", missing)
    with pytest.raises(TwinbotError, match=r"--type q4_k_m is made by llama.cpp's quantizer.*--type q8_0"):
        ex.export(lora_run, "gguf", tmp_path / "twin.gguf", gguf_type="q4_k_m")
    assert not (tmp_path / "twin.gguf").exists()


def test_persona_prompt_from_the_stored_file_or_the_training_data(lora_run: Path, tmp_path: Path) -> None:
    assert ex.read_run(lora_run).system_prompt == SYSTEM_PROMPT  # from summary.json's data_dir
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "b"}', encoding="utf-8")
    assert ex.read_run(run) == ex.RunInfo(run / "adapter", "b", None)
    stored = {"system_prompt": "You are Kim.", "base_model": "b"}
    (run / "adapter" / PERSONA_FILE).write_text(json.dumps(stored), encoding="utf-8")
    assert ex.read_run(run).system_prompt == "You are Kim."  # what `twinbot train` stores beside the adapter


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig

    base = tmp_path / "gpt2-base"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)).save_pretrained(base)
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    (run / "summary.json").write_text(json.dumps({"base_model": str(base)}), encoding="utf-8")
    for target, out in (("gguf", tmp_path / "m.gguf"), ("ollama", tmp_path / "o")):
        with pytest.raises(TwinbotError, match=r"'gpt2' architecture.*supported: llama.*--to merged"):
            ex.export(run, target, out)  # type: ignore[arg-type]
        assert not out.exists()

    scaled = LlamaConfig(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(TwinbotError, match="rope scaling 'yarn'"):
        gguf_export.check_gguf_support(scaled)
    gguf_export.check_gguf_support(LlamaConfig())


def test_cli_export_errors_are_one_line(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from twinbot import cli

    monkeypatch.setattr(
        sys, "argv", ["twinbot", "export", str(lora_run), str(tmp_path / "o"), "--to", "onnx"]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: unknown --to 'onnx'; use one of: merged, gguf, ollama"


# --- chat / serve load the exports ------------------------------------------------------------------------


def test_load_for_inference_accepts_merged_folder_and_gguf(
    merged_fp32: tuple[Path, ex.ExportResult], gguf_f32: tuple[Path, ex.ExportResult]
) -> None:
    from twinbot.bot.loading import load_for_inference

    merged = load_for_inference(merged_fp32[0], device="cpu", dtype=torch.float32)
    assert merged.kind == "merged" and merged.system_prompt == SYSTEM_PROMPT
    from_gguf = load_for_inference(gguf_f32[0], device="cpu", dtype=torch.float32)
    assert from_gguf.kind == "gguf" and from_gguf.system_prompt == SYSTEM_PROMPT
    input_ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(
            from_gguf.model(input_ids).logits, merged.model(input_ids).logits, rtol=0, atol=1e-3
        )


# --- the embedded default ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_model_exports(embedded_run: TrainedRun, tmp_path: Path) -> None:
    """The real SmolLM2-135M with its trained LoRA (conftest.embedded_run): q8_0 and q6_k GGUFs keep their
    top-1 bounds (in llama.cpp when llama-cpp-python is installed), bf16 merged within its bound."""
    run = embedded_run.path
    gguf_result = ex.export(run, "gguf", tmp_path / "twin.gguf", gguf_type="q8_0")
    assert (
        gguf_result.verification.passed and gguf_result.verification.top1_agreement >= verify.MIN_TOP1["q8_0"]
    )
    assert gguf_result.verification.verifier == verify.gguf_verifier()
    assert gguf_result.verification.tokenization_mismatches == 0
    if (
        verify.gguf_verifier() != "transformers"
    ):  # llama.cpp's k-quant, its 576-wide rows falling back to q8_0
        k_quant = ex.export(run, "gguf", tmp_path / "twin-q6_k.gguf", gguf_type="q6_k").verification
        assert k_quant.passed and k_quant.top1_agreement >= verify.MIN_TOP1["q6_k"]
    merged_result = ex.export(run, "merged", tmp_path / "merged", dtype="bf16")
    assert merged_result.verification.passed
