"""A tiny randomly initialised model with the real SmolLM2 tokenizer, for fast tests."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from twinbot.fileio import atomic_dir
from twinbot.models.gguf_import import imported_dir_for, is_complete_import, tokenizer_from_gguf
from twinbot.models.loading import embedded_gguf_path
from twinbot.models.tokenizers import finish_tokenizer


@functools.lru_cache(maxsize=2)
def gguf_tokenizer_cached(gguf_path: Path, size: int, mtime_ns: int) -> PreTrainedTokenizerBase:
    return tokenizer_from_gguf(gguf_path)


def embedded_tokenizer() -> PreTrainedTokenizerBase:
    """The embedded model's tokenizer (read-only use), from its cached import when present, else from the
    GGUF (seconds; memoized per process so building several tiny models stays fast)."""
    from transformers import AutoTokenizer

    gguf_path = embedded_gguf_path()
    imported = imported_dir_for(gguf_path)
    if is_complete_import(imported):
        return finish_tokenizer(AutoTokenizer.from_pretrained(str(imported)))
    stat = gguf_path.stat()
    return gguf_tokenizer_cached(gguf_path, stat.st_size, stat.st_mtime_ns)


SMALL_VOCABULARY = 1024


@functools.lru_cache(maxsize=1)
def small_embedded_tokenizer() -> PreTrainedTokenizerBase:
    """The embedded tokenizer cut to its first SMALL_VOCABULARY tokens (read-only use): its special tokens,
    byte alphabet and first merges, with its pre-tokenizer and chat template. It splits text like SmolLM2's
    into more, shorter tokens; a model with it has a 48x smaller embedding, and its GGUF a 48x smaller
    vocabulary for llama.cpp to load. (Its token ids are the merges' order, so the cut keeps every merge whose
    parts and result are kept. Its pre-tokenizer hash is unknown: the GGUF export names it by definition.)"""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        embedded_tokenizer().save_pretrained(folder)
        path = Path(folder) / "tokenizer.json"
        state = json.loads(path.read_text(encoding="utf-8"))
        model = state["model"]
        vocabulary = {
            token: token_id for token, token_id in model["vocab"].items() if token_id < SMALL_VOCABULARY
        }
        model["vocab"] = vocabulary
        model["merges"] = [
            pair
            for pair in model["merges"]
            if "".join(pair) in vocabulary and all(part in vocabulary for part in pair)
        ]
        path.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        return finish_tokenizer(AutoTokenizer.from_pretrained(folder))


def make_tiny_model(out_dir: Path, seed: int = 0, small_vocabulary: bool = False) -> Path:
    """A tiny randomly initialised Llama with the real SmolLM2 tokenizer, saved as an HF folder.

    For fast tests and benchmarks: same vocabulary, chat template and special tokens as the embedded model
    (`small_vocabulary`: its first tokens only, `small_embedded_tokenizer`).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = small_embedded_tokenizer() if small_vocabulary else embedded_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return save_model_folder(model, tokenizer, out_dir)


def save_model_folder(model: Any, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """`model` and `tokenizer` as an HF folder at `out_dir` (replaced whole), generation stopping at eos."""
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir
