"""`twinbot plan --target-gpu NAME --model ID-or-size`: the peak GPU memory of training, predicted per preset
and precision (the preset's own, and QLoRA's 4-bit base) from the model's config alone, and what fits.

Peak = frozen weights + LoRA weights with their gradients and AdamW state + activations + logits, plus the
CUDA context and the allocator's reserve on a GPU (`torch.cuda.max_memory_allocated` counts neither):

* weights: parameters x 2 bytes (16-bit presets) or 4 (fp32); QLoRA: the decoder's linear layers in NF4 with
  double quantization (0.5 byte + 1/64 byte of 8-bit block scales + their fp32 scales: ~0.516 byte per
  weight), embeddings and the output layer unquantized in bf16, the norms in fp32 (k-bit preparation,
  models/quantization.py), plus one linear layer dequantized at a time;
* LoRA: r x (in + out) per adapted linear layer, 16 bytes each (fp32 weight, gradient, two AdamW moments);
* activations per token and layer, saved for the backward pass: the layer's input and both norms (their fp32
  internals too), query/key/value before and after RoPE, the attention output, and the MLP's gate, up,
  activation and product; with gradient checkpointing, only each layer's input plus one layer recomputed.
  QLoRA saves them in fp32 (fp32 norms, and bitsandbytes' layers answer in their input's dtype): measured on
  an H200, its activations are ~1.6x those of 16-bit LoRA, and 4 bytes a value over-counts them ~10-25%;
* eager attention, where training runs it (`estimate.training_attention`: Gemma 2 without flash-attn, whose
  soft-capped scores sdpa cannot do; an explicit ATTN_IMPLEMENTATION=eager): per row and layer, heads x
  width^2 scores kept by transformers' eager_attention_forward: the softmax's fp32 output, its copy in the
  activations' dtype that multiplies the values (16-bit only), the tanh of soft-capped scores, the dropout
  mask of attention dropout; plus key and value repeated to every query head (grouped-query attention);
  with gradient checkpointing, one layer's worth; and per row the working set of one layer's forward or
  backward: two fp32 score matrices alive at once (an op's input and output). sdpa, packed_sdpa and
  flash-attention keep O(width);
* logits: the supervised positions only (twinbot computes no others) x vocabulary, with their gradient, and
  one block of the blockwise loss in fp32.

`bench/memory.py` checks the formula against measured peaks (BENCHMARKS.md, "Memory planning").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.lora import target_modules
from twinbot.finetune.plan.gpus import GpuSpec
from twinbot.models.loading import flash_attn_available

GIB = 1 << 30
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
LORA_BYTES_PER_PARAM = 16
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # the CUDA context and kernels, outside the caching allocator
ALLOCATOR_RESERVE = 0.10  # reserved beyond allocated: fragmentation of the caching allocator
LOSS_BLOCK_ELEMENTS = 1 << 24  # kernels/loss.py's ACCELERATOR_BLOCK_ELEMENTS: one fp32 block of the loss
LARGEST_AUTO_BATCH = 64
# Eager attention's working set: per score, the two fp32 matrices of one op's input and output (forward or
# backward) alive at once beyond the saved ones
EAGER_WORKING_BYTES_PER_SCORE = 8

Precision = Literal["16-bit", "fp32", "4-bit"]

# Representative configs for `--model 7b` and the like: (the model it stands for, Llama-style shape).
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "135m": (
        "SmolLM2-135M",
        dict(hidden=576, intermediate=1536, layers=30, heads=9, kv=3, vocab=49152, tied=True),
    ),
    "360m": (
        "SmolLM2-360M",
        dict(hidden=960, intermediate=2560, layers=32, heads=15, kv=5, vocab=49152, tied=True),
    ),
    "0.5b": (
        "Qwen2.5-0.5B",
        dict(hidden=896, intermediate=4864, layers=24, heads=14, kv=2, vocab=151936, tied=True),
    ),
    "1b": (
        "Llama-3.2-1B",
        dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv=8, vocab=128256, tied=True),
    ),
    "1.5b": (
        "Qwen2.5-1.5B",
        dict(hidden=1536, intermediate=8960, layers=28, heads=12, kv=2, vocab=151936, tied=True),
    ),
    "3b": (
        "Llama-3.2-3B",
        dict(hidden=3072, intermediate=8192, layers=28, heads=24, kv=8, vocab=128256, tied=True),
    ),
    "7b": (
        "Mistral-7B-v0.3",
        dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv=8, vocab=32768, tied=False),
    ),
    "8b": (
        "Llama-3.1-8B",
        dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv=8, vocab=128256, tied=False),
    ),
    "13b": (
        "Llama-2-13B",
        dict(hidden=5120, intermediate=13824, layers=40, heads=40, kv=40, vocab=32000, tied=False),
    ),
    "14b": (
        "Qwen2.5-14B",
        dict(hidden=5120, intermediate=13824, layers=48, heads=40, kv=8, vocab=152064, tied=False),
    ),
    "32b": (
        "Qwen2.5-32B",
        dict(hidden=5120, intermediate=27648, layers=64, heads=40, kv=8, vocab=152064, tied=False),
    ),
    "70b": (
        "Llama-3.1-70B",
        dict(hidden=8192, intermediate=28672, layers=80, heads=64, kv=8, vocab=128256, tied=False),
    ),
}


@dataclass(frozen=True)
class ArchShape:
    """What training memory depends on, read from a model's config."""

    name: str
    params: int
    linear_params: int  # the decoder's linear layers: quantized by QLoRA, adapted by LoRA
    embedding_params: int
    head_params: int  # an output layer of its own (0 when tied to the embeddings)
    largest_linear: int  # weights of the largest linear layer (QLoRA dequantizes one at a time)
    lora_dims: dict[str, int]  # linear layer name -> sum of (in + out) over the layers of that name
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key/value width per layer (kv heads x head size)
    vocab: int
    heads: int  # query heads
    head_dim: int
    attention_softcapping: bool  # attention scores soft-capped with tanh (Gemma 2): eager keeps the tanh
    attention_dropout: float
    architecture: tuple[type, Any] = field(compare=False, repr=False)  # (model class, config): its attention


@dataclass(frozen=True)
class MemoryEstimate:
    """One preset at one precision: the predicted peak and its parts, in bytes."""

    preset: str
    precision: Precision
    micro_batch: int
    row_tokens: int
    gradient_checkpointing: bool
    attention: str  # the attention training runs (`planned_attention`): eager keeps width^2 scores per head
    weights: int
    lora: int
    activations: int
    logits: int
    overhead: int  # CUDA context and allocator reserve; on a CPU the measured process baseline

    @property
    def peak(self) -> int:
        return self.weights + self.lora + self.activations + self.logits + self.overhead

    @property
    def allocated(self) -> int:
        """What torch.cuda.max_memory_allocated would show: the peak without context and reserve."""
        return self.weights + self.lora + self.activations + self.logits


@dataclass(frozen=True)
class MemoryRow:
    """A line of the memory table: the estimate, whether it fits the target, and if not what does."""

    estimate: MemoryEstimate
    fits: bool
    fix: str | None  # e.g. "QLoRA fits in 9.8 of 12 GiB"
    # The estimate were the target's flash-attn not as this machine's (installed, or not), where that
    # changes the peak (Gemma 2: flash_attention_2 with it, eager without)
    other_flash_attn: MemoryEstimate | None = None


# --- the model's shape --------------------------------------------------------------------------------------


def arch_shape(spec: str | None) -> ArchShape:
    """`--model`: a size from SIZES (7b, 8b, ...), else an HF id, local folder or .gguf read for its config
    (no weights): the model is built on the meta device and counted."""
    from transformers import AutoConfig, LlamaConfig

    from twinbot.models.loading import EMBEDDED_MODEL, resolve_model

    size = SIZES.get((spec or "").strip().lower())
    if size is not None:
        name, s = size
        config = LlamaConfig(
            hidden_size=s["hidden"],
            intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            num_key_value_heads=s["kv"],
            vocab_size=s["vocab"],
            tie_word_embeddings=s["tied"],
        )
        return shape_of_config(config, f"{spec} (shaped like {name})")
    try:
        config = AutoConfig.from_pretrained(resolve_model(spec))
    except TwinbotError:
        raise
    except Exception as exc:
        sizes = ", ".join(SIZES)
        raise TwinbotError(
            f"cannot read the config of --model {spec} ({one_line(exc, limit=120)}); pass a local folder, "
            f"a cached hub id, or a size: {sizes}"
        ) from exc
    return shape_of_config(config, spec or EMBEDDED_MODEL)


def shape_of_config(config: Any, name: str) -> ArchShape:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    linears = [
        (name.rsplit(".", 1)[-1], module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    ]
    lora_dims: dict[str, int] = {}
    for short, module in linears:
        lora_dims[short] = lora_dims.get(short, 0) + module.in_features + module.out_features
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    untied = head is not None and head.weight is not embedding
    return ArchShape(
        name=name,
        params=sum(p.numel() for p in model.parameters()),
        linear_params=sum(m.weight.numel() for _, m in linears),
        embedding_params=embedding.numel(),
        head_params=head.weight.numel() if untied else 0,
        largest_linear=max((m.weight.numel() for _, m in linears), default=0),
        lora_dims=lora_dims,
        layers=int(text.num_hidden_layers),
        hidden=int(text.hidden_size),
        intermediate=int(getattr(text, "intermediate_size", 4 * text.hidden_size)),
        kv_dim=kv_heads * head_dim,
        vocab=int(text.vocab_size),
        heads=heads,
        head_dim=head_dim,
        attention_softcapping=getattr(text, "attn_logit_softcapping", None) is not None,
        attention_dropout=float(getattr(text, "attention_dropout", 0.0) or 0.0),
        architecture=(type(model), config),
    )


# --- the formula --------------------------------------------------------------------------------------------


def lora_params(shape: ArchShape, config: TrainConfig) -> int:
    targets = target_modules(config.lora_target_modules)
    dims = sum(d for name, d in shape.lora_dims.items() if targets == "all-linear" or name in targets)
    return config.lora_r * dims


def predict(
    shape: ArchShape,
    config: TrainConfig,
    precision: Precision,
    micro_batch: int,
    device: Literal["cuda", "cpu"] = "cuda",
    supervised_share: float = 1.0,
    baseline_bytes: int = 0,
    flash_attn: bool | None = None,
) -> MemoryEstimate:
    """The peak of training `config` on `shape`, `micro_batch` rows of the longest row length. On "cpu" the
    overhead is `baseline_bytes` (the process before loading: Python, torch, transformers). Only
    `supervised_share` of the tokens get logits (1.0 when the data is not known: the worst case).
    `flash_attn`: whether the target has the flash-attn package (`planned_attention`)."""
    width = config.row_width
    tokens = micro_batch * width
    attention = planned_attention(shape, config, precision, device, flash_attn)
    quantized = precision == "4-bit"
    activation_bytes = 4 if precision == "fp32" else 2
    if quantized:
        embeddings = shape.embedding_params + shape.head_params
        norms = shape.params - shape.linear_params - embeddings
        weights = (
            int(shape.linear_params * NF4_BYTES_PER_WEIGHT)
            + 2 * embeddings
            + 4 * norms
            + 2 * shape.largest_linear
        )
    else:
        weights = shape.params * activation_bytes
    lora = lora_params(shape, config) * LORA_BYTES_PER_PARAM
    # QLoRA: the norms' weights are fp32 (k-bit preparation) and bitsandbytes returns each layer's output in
    # its input's dtype, so the hidden states a layer saves are fp32 from the first norm on
    saved_bytes = 4 if quantized else activation_bytes
    per_layer = saved_bytes * layer_activation_elements(shape, config) + 16 * shape.hidden  # fp32 norms
    if config.gradient_checkpointing:
        activations = tokens * (shape.layers * shape.hidden * saved_bytes + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    if attention == "eager":
        layers_kept = 1 if config.gradient_checkpointing else shape.layers
        per_row = eager_attention_bytes(shape, activation_bytes, width, device)
        working = EAGER_WORKING_BYTES_PER_SCORE * shape.heads * width * width
        activations += micro_batch * (layers_kept * per_row + working)
    supervised = int(tokens * supervised_share)
    block = min(supervised * shape.vocab, LOSS_BLOCK_ELEMENTS)
    logits = 2 * supervised * shape.vocab * activation_bytes + 4 * block
    allocated = weights + lora + activations + logits
    overhead = baseline_bytes if device == "cpu" else CUDA_CONTEXT_BYTES + int(ALLOCATOR_RESERVE * allocated)
    return MemoryEstimate(
        preset=config.preset,
        precision=precision,
        micro_batch=micro_batch,
        row_tokens=tokens // micro_batch,
        gradient_checkpointing=config.gradient_checkpointing,
        attention=attention,
        weights=weights,
        lora=lora,
        activations=activations,
        logits=logits,
        overhead=overhead,
    )


def layer_activation_elements(shape: ArchShape, config: TrainConfig) -> int:
    """Elements one token leaves saved in one decoder layer for the backward pass (see the module
    docstring): 7 x hidden, 3 x the key/value width, 4 x the MLP width; LoRA dropout keeps a masked copy
    of each adapted layer's input."""
    h, kv, mlp = shape.hidden, shape.kv_dim, shape.intermediate
    elements = 7 * h + 3 * kv + 4 * mlp
    if config.lora_dropout > 0:
        elements += 6 * h + mlp  # q, k, v, o, gate, up take hidden-wide inputs; down the MLP's
    return elements


def planned_attention(
    shape: ArchShape, config: TrainConfig, precision: Precision, device: str, flash_attn: bool | None = None
) -> str:
    """The attention training runs on `shape`'s model (`estimate.training_attention`; QLoRA computes in
    16-bit). On CUDA that depends on the flash-attn package: `flash_attn` says whether the target has it,
    None: as this machine has it."""
    from twinbot.finetune.plan.estimate import training_attention

    dtype = "fp32" if precision == "fp32" else "bf16"
    return training_attention(config, device, dtype, shape.architecture, flash_attn)


def eager_attention_bytes(shape: ArchShape, activation_bytes: int, width: int, device: str) -> int:
    """What transformers' eager_attention_forward keeps for the backward pass in one layer for one row of
    `width` tokens, beyond the query, key, value and output every attention keeps: per head and pair of
    positions the softmax's output (fp32: it upcasts), the matrix multiplied with the values (its copy in
    16-bit, or dropout's output), tanh's output where scores are soft-capped, dropout's mask (bool in CUDA's
    fused kernel, a scaled float mask on CPU); and key and value repeated to every query head."""
    per_score = 4
    if activation_bytes != 4 or shape.attention_dropout > 0:
        per_score += activation_bytes
    if shape.attention_softcapping:
        per_score += activation_bytes
    if shape.attention_dropout > 0:
        per_score += 1 if device == "cuda" else activation_bytes
    query_width = shape.heads * shape.head_dim
    repeated = 2 * query_width * activation_bytes if shape.kv_dim < query_width else 0
    return shape.heads * width * width * per_score + width * repeated


# --- the table ----------------------------------------------------------------------------------------------


def precisions_of(config: TrainConfig) -> list[Precision]:
    """The preset's own precision, and 4-bit QLoRA beside it (a 4-bit preset: that alone)."""
    if config.load_in_4bit:
        return ["4-bit"]
    return ["16-bit" if config.use_fp16 else "fp32", "4-bit"]


def fitting(
    shape: ArchShape, config: TrainConfig, precision: Precision, budget: int, flash_attn: bool | None = None
) -> MemoryEstimate:
    """The estimate at the micro-batch `train` would use: BATCH_SIZE, or for 'auto' the largest power of two
    that fits in `budget` (as the GPU probe finds it), at least 1."""

    def at(size: int) -> MemoryEstimate:
        return predict(shape, config, precision, size, flash_attn=flash_attn)

    if config.batch_size != "auto":
        return at(config.batch_size)
    size = 1
    while size < LARGEST_AUTO_BATCH and at(size * 2).peak <= budget:
        size *= 2
    return at(size)


def memory_rows(shape: ArchShape, configs: dict[str, TrainConfig], gpu: GpuSpec) -> list[MemoryRow]:
    """Each preset at each of its precisions, with the attention training would run with this machine's
    flash-attn (installed or not), and the estimate with the other where its peak differs."""
    budget = int(gpu.memory_gib * GIB)
    flash_here = flash_attn_available()
    rows = []
    for config in configs.values():
        for precision in precisions_of(config):
            estimate = fitting(shape, config, precision, budget)
            other = fitting(shape, config, precision, budget, flash_attn=not flash_here)
            fits = estimate.peak <= budget
            fix = None if fits else find_fix(shape, config, precision, gpu)
            rows.append(MemoryRow(estimate, fits, fix, other if other.peak != estimate.peak else None))
    return rows


def find_fix(shape: ArchShape, config: TrainConfig, precision: Precision, gpu: GpuSpec) -> str:
    """The first change, in order of least cost to training, that makes it fit on `gpu`."""
    budget = int(gpu.memory_gib * GIB)
    changes: list[tuple[str, dict[str, Any], Precision]] = []
    if precision != "4-bit":
        changes.append(("QLoRA (LOAD_IN_4BIT=true)", {}, "4-bit"))
    if not config.gradient_checkpointing:
        changes.append(("GRADIENT_CHECKPOINTING=true", {"gradient_checkpointing": True}, precision))
        if precision != "4-bit":
            changes.append(("QLoRA with gradient checkpointing", {"gradient_checkpointing": True}, "4-bit"))
    both: dict[str, Any] = {"gradient_checkpointing": True, "batch_size": 1}
    for tokens in (512, 256):
        limit = {"row_tokens": tokens, "max_seq_len": min(config.max_seq_len, tokens)}
        changes.append((f"QLoRA, checkpointing, 1 row of {tokens} tokens", {**both, **limit}, "4-bit"))
    for what, update, precision_there in changes:
        estimate = fitting(shape, config.model_copy(update=update), precision_there, budget)
        if estimate.peak <= budget:
            return f"{what} fits in {estimate.peak / GIB:.1f} of {gpu.memory_gib:g} GiB"
    return f"does not fit on {gpu.name} even as 4-bit QLoRA with 1 row of 256 tokens: pick a smaller model or GPU"


def render_memory(shape: ArchShape, rows: list[MemoryRow], gpu: GpuSpec) -> str:
    from twinbot.finetune.plan.render import render_table

    header = [
        "Preset",
        "Precision",
        "Micro-batch",
        "Attention",
        "Weights",
        "LoRA+AdamW",
        "Activations",
        "Logits",
        "Peak",
        "Fits",
    ]
    table = [header]
    for row in rows:
        e = row.estimate
        batch = f"{e.micro_batch} x {e.row_tokens}" + (" ckpt" if e.gradient_checkpointing else "")
        table.append(
            [
                e.preset,
                e.precision,
                batch,
                e.attention,
                *(f"{value / GIB:.2f}" for value in (e.weights, e.lora, e.activations, e.logits, e.peak)),
                "yes" if row.fits else "NO",
            ]
        )
    lines = [
        f"memory on {gpu.name} ({gpu.memory_gib:g} GiB) for {shape.name}: {shape.params / 1e9:.2f} B parameters, "
        f"{shape.layers} layers, hidden {shape.hidden}, vocabulary {shape.vocab:,}; GiB, predicted from the "
        "config (peak includes the CUDA context and allocator reserve; logits for every token: the worst case)",
        "",
        render_table(table),
    ]
    lines += attention_notes(shape, rows)
    lines += [f"{r.estimate.preset} {r.estimate.precision}: {r.fix}" for r in rows if r.fix]
    return "\n".join(lines)


def attention_notes(shape: ArchShape, rows: list[MemoryRow]) -> list[str]:
    """Where eager attention is assumed, or flash-attn on the target would change the attention: which
    attention, why, and the peaks with the target's flash-attn the other way."""
    flash_here = flash_attn_available()
    notes = []
    eager = [f"{r.estimate.preset} {r.estimate.precision}" for r in rows if r.estimate.attention == "eager"]
    if eager:
        where = "every row" if len(eager) == len(rows) else ", ".join(eager)
        notes.append(
            f"attention: eager in {where} ({shape.architecture[0].__name__} with flash-attn "
            f"{'installed' if flash_here else 'not installed'}, as here): heads x row tokens^2 attention "
            "scores per layer and row are in Activations"
        )
    by_attention: dict[str, list[str]] = {}
    for row in rows:
        e = row.other_flash_attn
        if e is not None:
            batch = (
                "" if e.micro_batch == row.estimate.micro_batch else f" ({e.micro_batch} x {e.row_tokens})"
            )
            by_attention.setdefault(e.attention, []).append(
                f"{e.preset} {e.precision} {e.peak / GIB:.2f}{batch}"
            )
    for attention, peaks in by_attention.items():
        notes.append(
            f"with flash-attn {'not installed' if flash_here else 'installed'} on the target: {attention}, "
            f"peak GiB {', '.join(peaks)}"
        )
    return notes


def memory_plan(
    model: str | None, configs: dict[str, TrainConfig], target: str, as_json: bool = False
) -> list[MemoryRow]:
    """`twinbot plan --target-gpu NAME --model ID-or-size` without --data: the memory table on stdout."""
    from twinbot.finetune.plan.gpus import target_gpu

    gpu = target_gpu(target)
    shape = arch_shape(model)
    rows = memory_rows(shape, configs, gpu)
    if as_json:
        records = [
            {
                **asdict(r.estimate),
                "peak": r.estimate.peak,
                "fits": r.fits,
                "fix": r.fix,
                "peak_with_other_flash_attn": r.other_flash_attn.peak if r.other_flash_attn else None,
            }
            for r in rows
        ]
        print(
            json.dumps(
                {
                    "model": shape.name,
                    "gpu": gpu.name,
                    "memory_gib": gpu.memory_gib,
                    "flash_attn_here": flash_attn_available(),
                    "rows": records,
                },
                indent=2,
            )
        )
    else:
        print(render_memory(shape, rows, gpu))
    return rows
