"""Tiny randomly initialised models of every base model family twinbot supports, built offline from
transformers' own configs (`AutoConfig.for_model`), with the embedded SmolLM2 tokenizer (or, with
`small_vocabulary=True`, its first 1024 tokens: support.tiny.small_embedded_tokenizer).

Each family keeps what makes it different (biases, q/k norms, fused projections, soft-capping, sliding
windows, RoPE scaling, tied or separate embeddings); only the sizes are tiny. `make_family_model` saves one as
an HF folder, with the family's chat template and end-of-turn tokens where a fixture provides them
(tests/fixtures/chat_templates/<family>.jinja and <family>.tokens), else SmolLM2's own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from support.tiny import embedded_tokenizer, save_model_folder, small_embedded_tokenizer

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates"

_SIZES: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 2048,
}


@dataclass(frozen=True)
class Family:
    name: str  # what tests call it; llama3 is model_type llama with Llama 3.1's RoPE scaling
    model_type: str  # transformers' model_type
    config: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama", "llama", {"tie_word_embeddings": True}),
        Family(
            "llama3",
            "llama",
            {
                "tie_word_embeddings": False,
                "max_position_embeddings": 131072,
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
            },
        ),
        Family("qwen2", "qwen2", {"tie_word_embeddings": True}),
        Family("qwen3", "qwen3", {"head_dim": 16, "tie_word_embeddings": True}),
        Family("mistral", "mistral", {"head_dim": 16, "sliding_window": None, "tie_word_embeddings": False}),
        Family("gemma2", "gemma2", {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16}),
        Family(
            "gemma3",
            "gemma3_text",
            {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16, "num_hidden_layers": 3},
        ),
        Family("phi3", "phi3", {"tie_word_embeddings": False}),
    )
}


def family_tokenizer(name: str, small_vocabulary: bool = False) -> Any:
    """The embedded tokenizer (`small_vocabulary`: cut to its first tokens, support.tiny.
    small_embedded_tokenizer, for tests that need a BPE vocabulary but not SmolLM2's own) with the family's chat template and special tokens (when
    tests/fixtures/chat_templates has them). `<family>.tokens` lists one token a line: `role=token` lines
    (bos_token, eos_token, pad_token, unk_token; an empty token means none) give the family's own, the other
    lines its turn tokens; all are added as special tokens where the vocabulary lacks them."""
    tokenizer = small_embedded_tokenizer() if small_vocabulary else embedded_tokenizer()
    template = TEMPLATES_DIR / f"{name}.jinja"
    tokens_file = TEMPLATES_DIR / f"{name}.tokens"
    if not template.exists():
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    lines = tokens_file.read_text(encoding="utf-8").splitlines() if tokens_file.exists() else []
    roles = dict(line.split("=", 1) for line in lines if "=" in line)
    turn_tokens = [line for line in lines if line.strip() and "=" not in line]
    vocabulary = tokenizer.get_vocab()
    new = [token for token in [*roles.values(), *turn_tokens] if token and token not in vocabulary]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": list(dict.fromkeys(new))})
    for role, token in roles.items():
        setattr(tokenizer, role, token or None)
    tokenizer.chat_template = template.read_text(encoding="utf-8")
    return tokenizer


def make_family_model(name: str, out_dir: Path, seed: int = 0, small_vocabulary: bool = False) -> Path:
    """A tiny random-weight model of family `name` with its tokenizer (`family_tokenizer`), saved as an HF
    folder at `out_dir`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    family = FAMILIES[name]
    tokenizer = family_tokenizer(name, small_vocabulary)
    config = AutoConfig.for_model(
        family.model_type,
        **{
            **_SIZES,
            **family.config,
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Random norms and biases, so a writer that drops or mis-shifts them is caught (inits are 0 or 1).
        with torch.no_grad():
            for _name, parameter in model.named_parameters():
                if parameter.ndim == 1:
                    parameter.add_(torch.randn_like(parameter) * 0.1)
    return save_model_folder(model, tokenizer, out_dir)
