"""GGUF export of every supported base model family (tests/support/families.py: tiny random-weight models
built from transformers configs, with the embedded SmolLM2 tokenizer cut to its first 1024 tokens: writing and
loading its full 49k-token vocabulary took most of each export's time; test_export exports that one), run by
llama.cpp itself.

Each family gets a RUN with random non-zero LoRA weights (so the merge changes the model), merged once per
family; its f32 GGUF must give llama.cpp the merged model's greedy tokens exactly, and f16 / q8_0 must pass
the export's verification. The llama.cpp checks skip when llama-cpp-python is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from support.families import FAMILIES, Family, make_family_model
from test_export import SYSTEM_PROMPT, make_run, randomize_lora
from twinbot.errors import TwinbotError
from twinbot.export import exporter as ex
from twinbot.export import gguf as gguf_export
from twinbot.export import verify
from twinbot.export.gguf import tokenizer as gguf_tokenizer
from twinbot.models.gguf_import import gguf_string_field

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")

GGUF_ARCHITECTURES = {
    "llama": "llama",
    "llama3": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "phi3": "phi3",
}
GREEDY_TOKENS = 8
VOCAB_FIXTURES = Path(__file__).parent / "fixtures" / "gguf_vocab"
SPM_VOCAB = "ggml-vocab-llama-spm.gguf"  # Llama 2's SentencePiece vocabulary, from the llama.cpp tree


@dataclass(frozen=True)
class MergedFamily:
    name: str
    root: Path
    merged: Any  # the transformers model with the LoRA merged in
    tokenizer: Any
    reference: verify.Reference


@pytest.fixture(scope="module")
def merged_family(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., MergedFamily]:
    """`merged_family(name)`: the family's tiny model (with the small vocabulary unless
    `small_vocabulary=False`) with a random LoRA (as test_export.make_run makes it, without the round trip
    through a RUN folder), its reference logits and the merge, built once."""
    from twinbot.finetune.lora import apply_lora
    from twinbot.models.loading import load_model

    built: dict[tuple[str, bool], MergedFamily] = {}

    def build(name: str, small_vocabulary: bool = True) -> MergedFamily:
        if (name, small_vocabulary) not in built:
            root = tmp_path_factory.mktemp(f"family-{name}")
            base = make_family_model(name, root / "base", small_vocabulary=small_vocabulary)
            base_model = load_model(str(base), dtype=torch.float32, attn_implementation="eager", device="cpu")
            model = apply_lora(base_model, r=4, alpha=8, dropout=0.0)
            randomize_lora(model)
            model.eval()
            tokenizer = AutoTokenizer.from_pretrained(str(base))  # as exporter.load_adapter_model loads it
            reference = verify.reference_logits(model, tokenizer, SYSTEM_PROMPT)
            built[name, small_vocabulary] = MergedFamily(name, root, ex.merge(model), tokenizer, reference)
        return built[name, small_vocabulary]

    return build


def export_gguf(family: MergedFamily, gguf_type: gguf_export.GgufType) -> tuple[Path, verify.Verification]:
    path = family.root / f"{family.name}-{gguf_type}.gguf"
    gguf_export.write_gguf(family.merged, family.tokenizer, path, gguf_type)
    return path, verify.verify_gguf(path, family.reference, family.merged.config, gguf_type, path)


@torch.no_grad()
def torch_greedy(model: Any, ids: list[int], count: int) -> list[int]:
    tokens = list(ids)
    for _ in range(count):
        tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(ids) :]


def llama_cpp_greedy(path: Path, ids: list[int], count: int) -> list[int]:
    import llama_cpp
    import numpy as np

    model = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + count, logits_all=True, verbose=False)
    try:
        model.eval(ids)
        tokens: list[int] = []
        for _ in range(count):
            tokens.append(int(np.argmax(model.scores[model.n_tokens - 1])))
            model.eval(tokens[-1:])
        return tokens
    finally:
        model.close()


# --- every family in llama.cpp ------------------------------------------------------------------------------


@needs_llama_cpp
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_f32_gguf_gives_llama_cpp_the_merged_models_tokens(
    merged_family: Callable[..., MergedFamily], name: str
) -> None:
    family = merged_family(name)
    path, verification = export_gguf(family, "f32")
    assert verification.passed and verification.verifier.startswith("llama.cpp")
    # f32 is exact up to float reassociation (~1e-6): a small slip such as Llama 3's RoPE factors left out
    # shows only as ~2e-4 on these short prompts. Gemma's GELU runs through an f16 table in ggml.
    assert verification.max_abs_delta <= (1e-3 if name.startswith("gemma") else 1e-5)
    assert verification.exact_top1_agreement == 1.0
    assert verification.tokenization_mismatches == 0  # the chats and llama.cpp's pre-tokenizer check text
    assert gguf_string_field(path, "general.architecture") == GGUF_ARCHITECTURES[family.name]
    prompt = family.reference.prompts[1]
    expected = torch_greedy(family.merged, prompt, GREEDY_TOKENS)
    assert llama_cpp_greedy(path, prompt, GREEDY_TOKENS) == expected


# Each family in one quantized type besides f32: q8_0 where the layout differs most, f16 for the others'
# siblings; qwen2 f16 goes through test_ollama_export_of_qwen2_is_checked, llama f16 and q8_0 through test_export.
QUANTIZED = [("gemma2", "f16"), ("gemma3", "q8_0"), ("llama3", "q8_0"), ("mistral", "f16")]
QUANTIZED += [("phi3", "q8_0"), ("qwen3", "q8_0")]


@needs_llama_cpp
@pytest.mark.parametrize(("name", "gguf_type"), QUANTIZED)
def test_f16_and_q8_0_ggufs_pass_verification_in_llama_cpp(
    merged_family: Callable[..., MergedFamily], name: str, gguf_type: gguf_export.GgufType
) -> None:
    _, verification = export_gguf(merged_family(name), gguf_type)
    assert verification.passed and verification.tokenization_mismatches == 0, verification.describe()


def test_llama3_rope_factors_divide_the_frequencies_as_transformers_scales_them() -> None:
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from support.families import _SIZES

    config = AutoConfig.for_model("llama", **{**_SIZES, **FAMILIES["llama3"].config})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    dim, theta = 16, config.rope_parameters["rope_theta"]
    plain = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    factors = gguf_export.writer.llama3_rope_factors(config)
    assert factors.max() == 8.0 and factors.min() == 1.0  # both ends of the range occur
    torch.testing.assert_close(factors, plain / scaled)


@needs_llama_cpp
def test_phi3_longrope_gguf_runs_in_llama_cpp_like_transformers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Phi-3.5-mini's RoPE: per-frequency factors (short ones below the original context), scaled cos/sin
    longrope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": [1.0 + 0.1 * i for i in range(8)],
        "long_factor": [1.0 + 2.0 * i for i in range(8)],
        "original_max_position_embeddings": 4096,
    }
    settings = {"max_position_embeddings": 16384, "original_max_position_embeddings": 4096}
    family = Family(
        "phi3-longrope", "phi3", {**FAMILIES["phi3"].config, **settings, "rope_parameters": longrope}
    )
    monkeypatch.setitem(FAMILIES, family.name, family)
    run = make_run(make_family_model(family.name, tmp_path / "base", small_vocabulary=True), tmp_path)
    # (not "phi3.gguf": llama.cpp applies Phi-3 tokenizer rules to a file whose general.name says phi3)
    result = ex.export(run, "gguf", tmp_path / "longrope.gguf", gguf_type="f32")
    assert result.verification.passed and result.verification.max_abs_delta <= 1e-5


# --- one family through the whole command -------------------------------------------------------------------


def test_ollama_export_of_qwen2_is_checked(tmp_path: Path) -> None:
    run = make_run(make_family_model("qwen2", tmp_path / "base", small_vocabulary=True), tmp_path)
    result = ex.export(run, "ollama", tmp_path / "ollama")  # f16, the default
    assert result.verification.passed and result.verification.verifier == verify.gguf_verifier()
    assert gguf_string_field(tmp_path / "ollama" / "model.gguf", "general.architecture") == "qwen2"
    assert (tmp_path / "ollama" / "Modelfile").read_text(encoding="utf-8").startswith("FROM ./model.gguf")


# --- the tokenizer --------------------------------------------------------------------------------------------


@needs_llama_cpp
def test_a_wrong_pre_tokenizer_fails_verification(
    merged_family: Callable[..., MergedFamily], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Llama 3's pre-tokenizer splits contractions and punctuation before letters differently: llama.cpp then
    # tokenizes the check text differently, although the logits of the (same) prompt ids still match. (With
    # SmolLM2's whole vocabulary: the small one has too few merges for the different splits to show.)
    monkeypatch.setattr(gguf_tokenizer, "gguf_pre_tokenizer", lambda tokenizer: "llama-bpe")
    with pytest.raises(TwinbotError, match=r"1 texts tokenized differently.*FAILED"):
        export_gguf(merged_family("llama", small_vocabulary=False), "f32")


def test_pre_tokenizer_by_hash_then_by_definition() -> None:
    import copy

    from tokenizers import Regex, pre_tokenizers

    from support.tiny import embedded_tokenizer

    tokenizer = embedded_tokenizer()
    assert gguf_tokenizer.gguf_pre_tokenizer(tokenizer) == "smollm"  # by the hash
    changed = copy.deepcopy(tokenizer)
    changed.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(gguf_tokenizer._QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    assert gguf_tokenizer.gguf_pre_tokenizer(changed) == "qwen2"  # SmolLM2's vocabulary, Qwen2's splitting
    changed.backend_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    with pytest.raises(TwinbotError, match=r"does not know this tokenizer's pre-tokenizer.*--to merged"):
        gguf_tokenizer.gguf_pre_tokenizer(changed)


# --- what cannot be expressed is refused before any work ------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "settings", "message"),
    [
        ("gemma3", {}, r"'gemma3' architecture.*supported: llama .*qwen2, qwen3.*gemma2.*phi3.*--to merged"),
        ("gpt2", {}, r"'gpt2' architecture.*supported:"),
        ("gemma2", {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
         "rope scaling 'linear'"),
        ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope scaling 'yarn'"),
        ("qwen2", {"use_sliding_window": True}, "sliding-window attention"),
        ("gemma2", {"query_pre_attn_scalar": 224, "head_dim": 16}, r"query_pre_attn_scalar 224 \(llama.cpp uses 16\)"),
        ("gemma2", {"tie_word_embeddings": False}, "output layer separate"),
        ("gemma3_text", {"layer_types": ["full_attention", "sliding_attention"], "num_hidden_layers": 2},
         "sliding-window layers"),
        ("mistral", {"hidden_act": "gelu"}, "activation 'gelu'"),
    ],
)  # fmt: skip
def test_unsupported_families_and_settings_are_named(model_type: str, settings: dict, message: str) -> None:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **settings)
    with pytest.raises(TwinbotError, match=message) as info:
        gguf_export.check_gguf_support(config)
    assert "\n" not in str(info.value) and "convert_hf_to_gguf.py" in str(info.value)


def test_every_family_config_is_supported() -> None:
    from transformers import AutoConfig

    from support.families import _SIZES

    for family in FAMILIES.values():
        gguf_export.check_gguf_support(AutoConfig.for_model(family.model_type, **{**_SIZES, **family.config}))


# --- without llama.cpp ----------------------------------------------------------------------------------------


def test_without_llama_cpp_transformers_reads_the_gguf_back(
    merged_family: Callable[..., MergedFamily], monkeypatch: pytest.MonkeyPatch
) -> None:
    family = merged_family("gemma2")  # norms stored as 1 + w, soft-capping, query scale from the config
    monkeypatch.setattr(verify, "gguf_verifier", lambda: "transformers")
    path = family.root / f"{family.name}-readback.gguf"
    gguf_export.write_gguf(family.merged, family.tokenizer, path, "f32")
    verification = verify.verify_gguf(path, family.reference, family.merged.config, "f32", path)
    assert verification.passed and verification.verifier == "transformers"


@needs_llama_cpp
def test_sentencepiece_vocabulary_splits_text_in_llama_cpp_as_in_transformers(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from twinbot.models.tokenizers import finish_tokenizer

    tokenizer = finish_tokenizer(AutoTokenizer.from_pretrained(str(VOCAB_FIXTURES), gguf_file=SPM_VOCAB))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    reference = verify.reference_logits(model, tokenizer, SYSTEM_PROMPT)
    out = tmp_path / "spm.gguf"
    gguf_export.write_gguf(model, tokenizer, out, "f32")
    verification = verify.verify_gguf(out, reference, config, "f32", out)
    assert verification.passed and verification.tokenization_mismatches == 0
    assert gguf_string_field(out, "tokenizer.ggml.model") == "llama"
