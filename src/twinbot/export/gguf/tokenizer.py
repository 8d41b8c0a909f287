"""The tokenizer in GGUF, as llama.cpp needs it to split text exactly like the transformers tokenizer.

Byte-level BPE tokenizers (Llama 3, Qwen, SmolLM, GPT-2, Mistral Tekken) are written as llama.cpp's "gpt2"
model with the vocabulary and merges. llama.cpp splits text before BPE with a pre-tokenizer it knows by name
(`tokenizer.ggml.pre`); the name is found the way convert_hf_to_gguf.py's get_vocab_base_pre finds it: the
hash of the token ids of a check text names the pre-tokenizer. SentencePiece-style tokenizers (Llama 2,
Mistral <= v0.3, Gemma, Phi-3: BPE with byte fallback) are written as llama.cpp's "llama" model: tokens,
scores and token types from gguf-py's vocab classes.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinbot.errors import TwinbotError
from twinbot.export.gguf.families import CONVERT_HINT

if TYPE_CHECKING:
    import gguf
    from transformers import PreTrainedTokenizerBase

# convert_hf_to_gguf.py's check text (llama.cpp b-series, conversion/base.py get_vocab_base_pre)
PRE_TOKENIZER_CHECK_TEXT = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
# sha256 of str(tokenizer.encode(PRE_TOKENIZER_CHECK_TEXT)) -> llama.cpp pre-tokenizer, for the tokenizers of
# the supported families (from get_vocab_base_pre; the model each hash was taken from in the comment).
PRE_TOKENIZERS_BY_HASH = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # Smaug-Llama-3-70B
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5-7B (Qwen2/2.5/3)
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding-0.6B
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",  # R1-Distill-Qwen
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM-135M (SmolLM2)
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # ruGPT3XL
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",  # starcoder2-3b
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",  # Refact-1_6-base
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral-Nemo-Base-2407
    "0e9433cbbb161f89e264eb32e8e64bfe69e834973ffca5d41d3948a604a3e2a3": "pixtral",  # pixtral-12b
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",  # Xenova/gpt-4o (Phi-4)
}


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    """Vocabulary, special tokens and chat template of `tokenizer`, padded to the model's `vocab_size`."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model") or {}
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        _add_sentencepiece_vocab(writer, tokenizer, vocab_size, model)
    elif model.get("type") == "BPE":
        _add_byte_level_bpe_vocab(writer, tokenizer, vocab_size, model)
    else:
        raise TwinbotError(
            f"GGUF export supports BPE and SentencePiece-style tokenizers; this one is {model.get('type')}; "
            f"{CONVERT_HINT}"
        )
    special = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    for kind, token_id in special.items():
        if isinstance(token_id, int) and 0 <= token_id < vocab_size:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    encoded = tokenizer("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(bool(encoded) and encoded[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(encoded) and encoded[-1] == tokenizer.eos_token_id and len(encoded) > 1)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


# --- byte-level BPE -----------------------------------------------------------------------------------------


def _add_byte_level_bpe_vocab(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int, model: dict[str, Any]
) -> None:
    import gguf

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(gguf_pre_tokenizer(tokenizer))
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for token_id in range(vocab_size):
        if token_id not in by_id:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        elif token_id in added:
            tokens.append(by_id[token_id])
            types.append(gguf.TokenType.CONTROL if added[token_id].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[token_id])
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(model))
    writer.add_add_space_prefix(False)


def gguf_pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """The `tokenizer.ggml.pre` name llama.cpp needs to split text like the HF tokenizer does: known by the
    hash of the check text's token ids, else by the pre-tokenizer's definition (a fine-tune may pair one
    family's vocabulary with another's pre-tokenizer). The export's verification tokenizes the check text in
    llama.cpp, so a wrong name does not get published."""
    ids = tokenizer.encode(PRE_TOKENIZER_CHECK_TEXT)
    name = PRE_TOKENIZERS_BY_HASH.get(hashlib.sha256(str(ids).encode()).hexdigest())
    if name is None:
        state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
        name = PRE_TOKENIZERS_BY_DEFINITION.get(json.dumps(_pre_tokenizer_steps(state), sort_keys=True))
    if name is None:
        raise TwinbotError(
            "GGUF export does not know this tokenizer's pre-tokenizer (llama.cpp would split text "
            f"differently; known: {', '.join(sorted(set(PRE_TOKENIZERS_BY_HASH.values())))}); {CONVERT_HINT}"
        )
    return name


def _pre_tokenizer_steps(state: dict[str, Any]) -> list[Any]:
    """The splitting steps of a tokenizers pre-tokenizer, without the settings that do not split."""
    steps = state.get("pretokenizers", [state]) if state.get("type") == "Sequence" else [state]
    keys = ("type", "pattern", "individual_digits", "use_regex")
    return [{key: step[key] for key in keys if key in step} for step in steps]


def _steps(*steps: dict[str, Any]) -> str:
    return json.dumps(list(steps), sort_keys=True)


_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = _QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
# The pre-tokenizer definitions of the supported families' tokenizer.json files -> llama.cpp's name for them
# (llama.cpp's llama-vocab.cpp implements each name with the same expressions).
PRE_TOKENIZERS_BY_DEFINITION = {
    _steps({"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}): "smollm",
    _steps({"type": "ByteLevel", "use_regex": True}): "gpt-2",
    _steps(
        {"type": "Split", "pattern": {"Regex": _QWEN2_SPLIT}}, {"type": "ByteLevel", "use_regex": False}
    ): "qwen2",
    _steps(
        {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}}, {"type": "ByteLevel", "use_regex": False}
    ): ("llama-bpe"),
}


def _merges(model: dict[str, Any]) -> list[str]:
    # tokenizers >= 0.20 stores pairs; GGUF stores "left right", a space inside a part as its byte-level
    # character U+0120
    return [
        " ".join(part.replace(" ", "\u0120") for part in pair) if isinstance(pair, list) else pair
        for pair in model.get("merges") or []
    ]


# --- SentencePiece-style ------------------------------------------------------------------------------------


def _add_sentencepiece_vocab(
    writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int, model: dict[str, Any]
) -> None:
    """Tokens and types from gguf-py (SentencePieceVocab with the original tokenizer.model, else
    LlamaHfVocab); without tokenizer.model the scores come from the merge ranks: llama.cpp's SentencePiece
    tokenizer merges the adjacent pair whose result scores highest, as transformers merges the lowest rank."""
    import gguf

    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        has_model_file = (Path(folder) / "tokenizer.model").is_file()
        vocab = gguf.SentencePieceVocab(Path(folder)) if has_model_file else gguf.LlamaHfVocab(Path(folder))
        entries = list(vocab.all_tokens())
    if not has_model_file:
        scores = _merge_rank_scores(model)
        entries = [(text, scores.get(text.decode("utf-8"), 0.0), kind) for text, _, kind in entries]
    tokens = [text for text, _, _ in entries]
    scores_list = [score for _, score, _ in entries]
    types = [int(kind) for _, _, kind in entries]
    for token_id in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{token_id}]".encode())
        scores_list.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens[:vocab_size])
    writer.add_token_scores(scores_list[:vocab_size])
    writer.add_token_types(types[:vocab_size])


def _merge_rank_scores(model: dict[str, Any]) -> dict[str, float]:
    """-rank of the first merge that makes each token: higher for merges transformers applies first."""
    scores: dict[str, float] = {}
    for rank, pair in enumerate(model.get("merges") or []):
        left, right = pair if isinstance(pair, list) else pair.split(" ", 1)
        scores.setdefault(left + right, -float(rank))
    return scores
