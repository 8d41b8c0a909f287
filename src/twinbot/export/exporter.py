"""`twinbot export`: a trained RUN as a merged Hugging Face folder, a GGUF file, or an Ollama model folder.

Every target starts the same way: the base model plus the RUN's LoRA adapter (fp32, CPU) gives reference
logits on a few fixed chat prompts, then the adapter is merged into the base weights. The merged model is
written (safetensors, or GGUF straight from Python with the `gguf` package: no llama.cpp build), reloaded with
plain transformers, and its logits are compared with the reference. The export is published (renamed into
place) only when the comparison passes; a failed check leaves no output behind.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from twinbot.console import say
from twinbot.errors import TwinbotError, one_line
from twinbot.fileio import atomic_dir, atomic_path, make_user_only, write_json
from twinbot.runs import GGUF_SYSTEM_PROMPT_KEY, PERSONA_FILE, adapter_persona, find_adapter

if TYPE_CHECKING:
    import gguf
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

ExportTarget = Literal["merged", "gguf", "ollama"]
MergedDtype = Literal["bf16", "fp16", "fp32"]
GgufType = Literal["f32", "f16", "q8_0"]

TARGETS: tuple[ExportTarget, ...] = ("merged", "gguf", "ollama")
MERGED_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GGUF_TYPES: tuple[GgufType, ...] = ("f32", "f16", "q8_0")
SUPPORTED_GGUF_ARCHITECTURES = ("llama",)  # HF model_type values the GGUF writer handles

OLLAMA_MODEL_FILE = "model.gguf"
OLLAMA_MODELFILE = "Modelfile"
# The persona travels with the export where `twinbot chat/serve` look for it, under inference's names: a
# merged folder's PERSONA_FILE, and the GGUF metadata string GGUF_SYSTEM_PROMPT_KEY.

# Verification thresholds. Logits are compared at every position of the check prompts, with the exported
# weights computed in fp32 on CPU, so the differences measure only the precision the weights were stored in.
# f32 differs from the adapter model only by float reassociation of the merge; 16-bit weights round each
# weight (relative error 2^-11 for fp16/f16, 2^-8 for bf16), q8_0 by up to 1/254 of each 32-weight block.
MAX_DELTA: dict[str, float] = {"fp32": 1e-3, "f32": 1e-3, "fp16": 0.25, "f16": 0.25, "bf16": 1.0}
MIN_TOP1: dict[str, float] = {"fp16": 0.99, "f16": 0.99, "bf16": 0.99, "q8_0": 0.99}
# Top-1 agreement counts a position as agreeing when the exported model's top token is within this many
# logits of the reference's best: a flip between near-tied tokens (probability ratio <= e^0.1) is rounding
# noise, not a wrong model. Measured on SmolLM2-135M, plain q8_0 rounding of the base model alone flips
# 1-2% of prompt positions, all with top-2 margins below 0.08.
TOP1_TIE_MARGIN = 0.1

# Fixed prompts for the check: ordinary chat turns, rendered with the RUN's chat template.
CHECK_CONVERSATIONS: tuple[tuple[str, ...], ...] = (
    ("hey, what are you up to tonight?",),
    ("did you see the game yesterday", "yeah it was wild", "who do you think wins next week?"),
    ("can you send me the address again", "sure, one sec"),
    ("lol that's so true 😂 ok see you at 7:30",),
    ("are we still on for saturday?", "I think so, what time works for you", "maybe around noon, is that ok"),
    ("I finally finished the book you lent me. The ending was not what I expected at all!",),
    ("where should we eat tonight", "no idea, you pick", "pizza or thai?"),
    ("happy birthday!! hope you have a great day 🎉",),
)
DEFAULT_CHECK_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass(frozen=True)
class RunInfo:
    """What export needs from a RUN folder (or a bare adapter folder)."""

    adapter_dir: Path
    base_model: str | None  # as the user named it; None = the embedded default
    system_prompt: str | None  # the persona's system prompt from the training data, when it can be found


@dataclass(frozen=True)
class Verification:
    """Exported model vs adapter model: next-token logits at every position of the check prompts."""

    prompts: int
    positions: int
    max_abs_delta: float
    top1_agreement: float  # share of positions whose exported top-1 is the reference's (up to near-ties)
    exact_top1_agreement: float  # share of positions with exactly the same argmax token
    max_allowed_delta: float | None
    min_top1: float | None

    @property
    def passed(self) -> bool:
        delta_ok = self.max_allowed_delta is None or self.max_abs_delta <= self.max_allowed_delta
        top1_ok = self.min_top1 is None or self.top1_agreement >= self.min_top1
        return delta_ok and top1_ok

    def describe(self) -> str:
        limits = []
        if self.max_allowed_delta is not None:
            limits.append(f"max |delta logit| <= {self.max_allowed_delta:g}")
        if self.min_top1 is not None:
            limits.append(f"top-1 >= {self.min_top1:.0%}")
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"verify: {self.prompts} prompts, {self.positions} positions: max |delta logit| "
            f"{self.max_abs_delta:.3g}, top-1 agreement {self.top1_agreement:.2%} "
            f"({self.exact_top1_agreement:.2%} exact) "
            f"(need {' and '.join(limits)}): {verdict}"
        )


@dataclass(frozen=True)
class ExportResult:
    target: ExportTarget
    path: Path
    precision: str  # merged: bf16/fp16/fp32; gguf/ollama: f32/f16/q8_0
    verification: Verification


# --- reading the RUN ----------------------------------------------------------------------------------------


def read_run(run: Path) -> RunInfo:
    """The adapter, base model and persona prompt of a RUN folder made by `twinbot train`, found the way
    chat and serve find them. A bare adapter folder (adapter_config.json) works too."""
    run = Path(run).expanduser()
    if not run.is_dir():
        raise TwinbotError("run folder not found; pass a folder made by `twinbot train`", run)
    adapter = find_adapter(run)
    if adapter is None:
        raise TwinbotError(
            "no adapter here (RUN/adapter/adapter_config.json); pass a folder made by `twinbot train` "
            "after training finished",
            run,
        )
    adapter_dir, run_dir = adapter
    persona = adapter_persona(adapter_dir, run_dir)
    return RunInfo(
        adapter_dir=adapter_dir, base_model=persona.base_model, system_prompt=persona.system_prompt
    )


def _base_config(base_model: str | None) -> PretrainedConfig:
    from transformers import AutoConfig

    from twinbot.models.loading import EMBEDDED_MODEL, resolve_model

    resolved = resolve_model(base_model)
    try:
        return AutoConfig.from_pretrained(resolved)
    except Exception as exc:
        name = base_model or EMBEDDED_MODEL
        raise TwinbotError(f"cannot read the base model's config ({name}): {one_line(exc)}") from exc


def check_gguf_support(config: PretrainedConfig) -> None:
    """Raise a TwinbotError naming the architecture when the GGUF writer cannot convert this model."""
    model_type = getattr(config, "model_type", "unknown")
    supported = ", ".join(SUPPORTED_GGUF_ARCHITECTURES)
    if model_type not in SUPPORTED_GGUF_ARCHITECTURES:
        raise TwinbotError(
            f"GGUF export does not support the '{model_type}' architecture yet (supported: {supported}); "
            f"use `--to merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    rope_type = _rope_parameters(config).get("rope_type", "default")
    problems = []
    if rope_type not in (None, "default"):
        problems.append(f"rope scaling '{rope_type}'")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("bias terms in attention/MLP")
    if _head_dim(config) * config.num_attention_heads != config.hidden_size:
        problems.append("a head size that is not hidden_size / heads")
    if problems:
        raise TwinbotError(
            f"GGUF export supports plain {supported} models; this one has {', '.join(problems)}; "
            f"use `--to merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )


def _rope_parameters(config: PretrainedConfig) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(params) if isinstance(params, dict) else {}


def _head_dim(config: PretrainedConfig) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


# --- adapter model, reference logits, merge -------------------------------------------------------------------


def load_adapter_model(info: RunInfo) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model (fp32, CPU) + the RUN's LoRA adapter, and the RUN's tokenizer (with its chat template)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from twinbot.models.loading import load_model

    base = load_model(info.base_model, dtype=torch.float32, attn_implementation="eager", device="cpu")
    try:
        model = PeftModel.from_pretrained(base, str(info.adapter_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(info.adapter_dir))
    except Exception as exc:
        raise TwinbotError(
            f"cannot load the adapter onto its base model: {one_line(exc)}; "
            "was the run trained from a different base model?",
            info.adapter_dir,
        ) from exc
    model.eval()
    return model, tokenizer


def check_prompts(tokenizer: PreTrainedTokenizerBase, system_prompt: str | None) -> list[list[int]]:
    """Token ids of the fixed check chats (alternating user/assistant turns, ending with the reply prompt)."""
    prompts = []
    for turns in CHECK_CONVERSATIONS:
        messages = [{"role": "system", "content": system_prompt or DEFAULT_CHECK_SYSTEM_PROMPT}]
        messages += [
            {"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return prompts


@torch.no_grad()
def prompt_logits(model: Any, prompts: list[list[int]]) -> list[torch.Tensor]:
    """fp32 logits [positions, vocab] of each prompt, one prompt per forward pass (no padding involved)."""
    return [model(torch.tensor([ids])).logits[0].float() for ids in prompts]


def compare(
    prompts: list[list[int]], reference: list[torch.Tensor], exported: list[torch.Tensor], precision: str
) -> Verification:
    """Max |delta logit| and top-1 agreement over the distinct prompt prefixes (a prefix shared by several
    prompts, like the system prompt, counts once)."""
    max_delta, agree, exact, positions = 0.0, 0, 0, 0
    seen: set[tuple[int, ...]] = set()
    for ids, ref, out in zip(prompts, reference, exported, strict=True):
        max_delta = max(max_delta, float((ref - out).abs().max()))
        fresh = []
        for position in range(len(ids)):
            prefix = tuple(ids[: position + 1])
            if prefix not in seen:
                seen.add(prefix)
                fresh.append(position)
        ref, out = ref[fresh], out[fresh]
        best, chosen = ref.max(-1).values, out.argmax(-1)
        chosen_ref = ref.gather(-1, chosen[:, None])[:, 0]
        exact += int((chosen == ref.argmax(-1)).sum())
        agree += int((chosen_ref >= best - TOP1_TIE_MARGIN).sum())
        positions += len(fresh)
    return Verification(
        prompts=len(reference),
        positions=positions,
        max_abs_delta=max_delta,
        top1_agreement=agree / positions if positions else 0.0,
        exact_top1_agreement=exact / positions if positions else 0.0,
        max_allowed_delta=MAX_DELTA.get(precision),
        min_top1=MIN_TOP1.get(precision),
    )


def merge(model: PeftModel) -> PreTrainedModel:
    """The adapter folded into the (fp32) base weights: a plain transformers model."""
    merged = model.merge_and_unload()
    merged.eval()
    return merged


# --- merged folder ----------------------------------------------------------------------------------------------


def write_merged(
    merged: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, dtype: torch.dtype
) -> None:
    """save_pretrained (safetensors) in `dtype` plus the tokenizer and chat template, into `out_dir`."""
    original = next(merged.parameters()).dtype
    merged.to(dtype)
    try:
        merged.config.use_cache = True
        merged.save_pretrained(out_dir, safe_serialization=True)
    finally:
        merged.to(original)
    tokenizer.save_pretrained(out_dir)


def load_merged_logits(folder: Path, prompts: list[list[int]]) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation="eager"
    )
    reloaded.eval()
    return prompt_logits(reloaded, prompts)


# --- GGUF -------------------------------------------------------------------------------------------------------


def llama_permute(weights: torch.Tensor, n_head: int, n_head_kv: int) -> torch.Tensor:
    """HF q/k projection rows -> llama.cpp's rotary layout (llama.cpp convert_hf_to_gguf `LlamaModel.permute`)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """The `tokenizer.ggml.pre` name llama.cpp needs to split text like the HF tokenizer does."""
    state = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = state.get("pretokenizers", [state]) if state.get("type") == "Sequence" else [state]
    kinds = [part.get("type") for part in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"  # SmolLM / StarCoder: digits one by one, then GPT-2 byte-level
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def _token_table(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

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
    return tokens, types


def _merges(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    model_state = json.loads(tokenizer.backend_tokenizer.to_str()).get("model") or {}
    if model_state.get("type") != "BPE":
        raise TwinbotError(
            f"GGUF export supports byte-level BPE tokenizers; this one is {model_state.get('type')}; "
            "use `--to merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    merges = model_state.get("merges") or []
    # tokenizers >= 0.20 stores pairs; GGUF stores "left right" with spaces inside a part as U+0120+...
    return [
        " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
        if isinstance(pair, list)
        else pair
        for pair in merges
    ]


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
    tokens, types = _token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(gguf_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(tokenizer))
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
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _tensor_type(name: str, data: np.ndarray, gguf_type: GgufType) -> gguf.GGMLQuantizationType:
    import gguf

    if data.ndim < 2 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32  # norms and other 1-D tensors stay f32 (as llama.cpp does)
    if gguf_type == "f16":
        return gguf.GGMLQuantizationType.F16
    if gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    if gguf_type == "q8_0":
        return gguf.GGMLQuantizationType.F16  # rows not a multiple of the 32-weight block
    return gguf.GGMLQuantizationType.F32


_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # gguf.LlamaFileType ALL_F32 / MOSTLY_F16 / MOSTLY_Q8_0


def write_gguf(
    merged: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    gguf_type: GgufType,
    name: str = "twinbot",
    system_prompt: str | None = None,
) -> None:
    """Write `merged` (a llama-family transformers model) as a GGUF file at `path` (not atomic by itself)."""
    import gguf

    config = merged.config
    check_gguf_support(config)
    n_head, n_head_kv = config.num_attention_heads, config.num_key_value_heads
    n_blocks = config.num_hidden_layers
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    vocab_size = int(config.vocab_size)
    rope = _rope_parameters(config)

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_vocab_size(vocab_size)
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(n_blocks)
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        writer.add_rope_dimension_count(_head_dim(config))
        writer.add_rope_freq_base(float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_file_type(_FILE_TYPES[gguf_type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(writer, tokenizer, vocab_size)
        if system_prompt:
            writer.add_string(GGUF_SYSTEM_PROMPT_KEY, system_prompt)

        tied = bool(getattr(config, "tie_word_embeddings", False))
        for hf_name, tensor in merged.state_dict().items():
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd when output.weight is absent
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise TwinbotError(
                    f"GGUF export: no GGUF name for tensor {hf_name}; use `--to merged` instead"
                )
            data = tensor.detach().to(torch.float32)
            if hf_name.endswith("q_proj.weight"):
                data = llama_permute(data, n_head, n_head)
            elif hf_name.endswith("k_proj.weight"):
                data = llama_permute(data, n_head, n_head_kv)
            array = data.contiguous().numpy()
            qtype = _tensor_type(gguf_name, array, gguf_type)
            if qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(gguf_name, array)
            elif qtype == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(gguf_name, array.astype(np.float16))
            else:
                writer.add_tensor(gguf_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def load_gguf_logits(path: Path, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Reload a GGUF file with transformers (dequantized to fp32) and run the check prompts."""
    from transformers import AutoConfig, AutoModelForCausalLM

    # the config is read from the GGUF metadata once and passed on: each read parses the whole vocabulary
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, config=config, dtype=torch.float32, attn_implementation="eager"
    )
    reloaded.eval()
    return prompt_logits(reloaded, prompts)


# --- Ollama -----------------------------------------------------------------------------------------------------

# ChatML in Ollama's Go template syntax (the format the embedded model and twinbot's training use).
OLLAMA_CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)


def _quoted(text: str) -> str:
    """A Modelfile string value: triple-quoted unless it would end the quote."""
    if '"""' in text:
        return json.dumps(text, ensure_ascii=False)
    return f'"""{text}"""'


def modelfile_text(
    chat_template: str | None, system_prompt: str | None, gguf_name: str = OLLAMA_MODEL_FILE
) -> str:
    """An Ollama Modelfile for a ChatML model: template, stop tokens, persona prompt, sampling defaults."""
    if not chat_template or "<|im_start|>" not in chat_template:
        raise TwinbotError(
            "the Ollama export writes a ChatML template, but this model's chat template is not ChatML; "
            "use `--to gguf` and write the Modelfile TEMPLATE by hand"
        )
    lines = [
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(OLLAMA_CHATML_TEMPLATE)}",
        'PARAMETER stop "<|im_end|>"',
        'PARAMETER stop "<|im_start|>"',
        "PARAMETER temperature 0.7",
        "PARAMETER top_p 0.9",
        "PARAMETER repeat_penalty 1.1",
    ]
    if system_prompt:
        lines.append(f"SYSTEM {_quoted(system_prompt)}")
    return "\n".join(lines) + "\n"


# --- orchestration ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_gguf(final: Path, overwrite: bool) -> Iterator[Path]:
    """A temp `.gguf` path beside `final`, renamed over it on success and removed on error."""
    if final.exists() and not overwrite:
        raise TwinbotError("output file exists; pass --overwrite or pick another", final)
    if final.is_dir():
        raise TwinbotError("output path is a folder; pass a file name ending in .gguf", final)
    with atomic_path(final, suffix=".gguf") as tmp:
        yield tmp


def _check_output(target: ExportTarget, out: Path, run: Path, overwrite: bool) -> None:
    out_resolved, run_resolved = out.resolve(), Path(run).expanduser().resolve()
    if out_resolved == run_resolved or run_resolved in out_resolved.parents:
        raise TwinbotError("the export must not go inside the run folder; pick another output path", out)
    if target == "gguf":
        if out.suffix.lower() != ".gguf":
            raise TwinbotError("a GGUF export needs a file name ending in .gguf", out)
        if out.is_dir():
            raise TwinbotError("output path is a folder; pass a file name ending in .gguf", out)
        if out.exists() and not overwrite:
            raise TwinbotError("output file exists; pass --overwrite or pick another", out)
    else:
        if out.exists() and not out.is_dir():
            raise TwinbotError("output path is a file; pass a folder", out)
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise TwinbotError("output folder exists and is not empty; pass --overwrite or pick another", out)


def _verify(
    prompts: list[list[int]],
    reference: list[torch.Tensor],
    exported: list[torch.Tensor],
    precision: str,
    out: Path,
) -> Verification:
    """Compare the export's logits with the adapter's and say how close; raise (the output is then not
    published) when they are too far apart."""
    verification = compare(prompts, reference, exported, precision)
    say(verification.describe())
    if not verification.passed:
        raise _fail_verification(verification, out)
    return verification


def _fail_verification(verification: Verification, out: Path) -> TwinbotError:
    return TwinbotError(
        f"the exported model does not match the adapter model ({verification.describe()}); "
        "nothing was written; please report this with the base model name",
        out,
    )


def export(
    run: Path,
    target: ExportTarget,
    out: Path,
    dtype: MergedDtype = "bf16",
    gguf_type: GgufType | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export RUN to `target` at `out`, verify it against the adapter model, then publish it."""
    try:
        return _export(run, target, out, dtype, gguf_type, overwrite)
    except TwinbotError:
        raise
    except Exception as exc:  # a library failure (disk full, unreadable weights...) is still one line
        raise TwinbotError(
            f"export failed: {one_line(exc)}; nothing was written (--debug shows details)", out
        ) from exc


def _export(
    run: Path,
    target: ExportTarget,
    out: Path,
    dtype: MergedDtype,
    gguf_type: GgufType | None,
    overwrite: bool,
) -> ExportResult:
    if target not in TARGETS:
        raise TwinbotError(f"unknown export target '{target}'; use one of: {', '.join(TARGETS)}")
    if dtype not in MERGED_DTYPES:
        raise TwinbotError(f"unknown --dtype '{dtype}'; use one of: {', '.join(MERGED_DTYPES)}")
    if gguf_type is not None and gguf_type not in GGUF_TYPES:
        raise TwinbotError(f"unknown --type '{gguf_type}'; use one of: {', '.join(GGUF_TYPES)}")
    if gguf_type is not None and target == "merged":
        raise TwinbotError("--type applies to --to gguf / ollama; use --dtype for a merged folder")
    out = Path(out).expanduser()
    info = read_run(run)
    _check_output(target, out, run, overwrite)
    if target != "merged":
        check_gguf_support(_base_config(info.base_model))

    say("loading the base model and the adapter...")
    model, tokenizer = load_adapter_model(info)
    if target == "ollama":
        modelfile_text(tokenizer.chat_template, info.system_prompt)  # fails early on a non-ChatML template
    prompts = check_prompts(tokenizer, info.system_prompt)
    reference = prompt_logits(model, prompts)
    merged = merge(model)

    if target == "merged":
        with atomic_dir(out, overwrite=overwrite) as tmp:
            say(f"writing the merged model ({dtype}) ...")
            write_merged(merged, tokenizer, tmp, MERGED_DTYPES[dtype])
            write_json(
                tmp / PERSONA_FILE,
                {"base_model": info.base_model, "dtype": dtype, "system_prompt": info.system_prompt},
            )
            verification = _verify(prompts, reference, load_merged_logits(tmp, prompts), dtype, out)
        say(f"merged model written to {out}")
        return ExportResult("merged", out, dtype, verification)

    precision: GgufType = gguf_type or "f16"
    if target == "gguf":
        with _atomic_gguf(out, overwrite) as tmp_file:
            say(f"writing GGUF ({precision}) ...")
            write_gguf(merged, tokenizer, tmp_file, precision, out.stem, info.system_prompt)
            verification = _verify(prompts, reference, load_gguf_logits(tmp_file, prompts), precision, out)
        say(f"GGUF written to {out}")
        return ExportResult("gguf", out, precision, verification)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        say(f"writing GGUF ({precision}) and Modelfile ...")
        model_file = tmp / OLLAMA_MODEL_FILE
        write_gguf(merged, tokenizer, model_file, precision, out.name, info.system_prompt)
        make_user_only(model_file)
        (tmp / OLLAMA_MODELFILE).write_text(
            modelfile_text(tokenizer.chat_template, info.system_prompt), encoding="utf-8"
        )
        verification = _verify(prompts, reference, load_gguf_logits(model_file, prompts), precision, out)
    say(f"Ollama model written to {out}; run: ollama create NAME -f {out / OLLAMA_MODELFILE}")
    return ExportResult("ollama", out, precision, verification)


def run_export(
    run: Path,
    target: str,
    out: Path,
    dtype: str = "bf16",
    gguf_type: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """The `twinbot export` command: validate the option values, export, print where it went."""
    if target not in TARGETS:
        raise TwinbotError(f"unknown --to '{target}'; use one of: {', '.join(TARGETS)}")
    result = export(
        run,
        target,  # type: ignore[arg-type]
        out,
        dtype=dtype,  # type: ignore[arg-type]
        gguf_type=gguf_type,  # type: ignore[arg-type]
        overwrite=overwrite,
    )
    print(f"{result.path}")
    return result
