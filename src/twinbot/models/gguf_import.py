"""Importing a `.gguf` model once into a plain Hugging Face folder in the twinbot cache.

The import holds the dequantized fp32 `model.safetensors`, `config.json`, the tokenizer files and the chat
template. It drops the quantization flag that transformers attaches to GGUF-loaded models, because the HF
Trainer and peft refuse to fine-tune models flagged as quantized; the weights are the exact dequantized
GGUF weights.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, BinaryIO

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.fileio import USER_ONLY_DIR, cache_dir, make_user_only, write_json
from twinbot.models.tokenizers import finish_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Bump when the import output changes, so stale cached imports are redone.
IMPORT_FORMAT_VERSION = 2  # 2: settings transformers' GGUF loader leaves out are set back
IMPORT_MARKER = "twinbot-import.json"  # written last: a cached folder without it is incomplete

# What to do when a model cannot be loaded.
LOAD_HINT = "pass --model with a local folder or .gguf file"
# What to do when transformers cannot read a GGUF file as llama.cpp runs it (`transformers_reading`).
GGUF_PROBLEM_HINT = (
    "use the model's Hugging Face folder instead (`twinbot export RUN DIR --to merged` writes one)"
)

# GGUF `tokenizer.ggml.pre` values whose Hugging Face tokenizer splits digits one by one before byte-level
# BPE (SmolLM / StarCoder family). transformers' GGUF converter builds a plain GPT-2 byte-level
# pre-tokenizer for them, which differs from the original tokenizer on inputs like " 5".
_DIGIT_SPLITTING_PRE_TOKENIZERS = {"smollm", "starcoder", "refact"}


def imported_dir_for(gguf_path: Path) -> Path:
    """Where the import of `gguf_path` lives in the cache: keyed by file name, size and mtime."""
    stat = gguf_path.stat()
    key_source = f"{gguf_path.name}|{stat.st_size}|{stat.st_mtime_ns}|v{IMPORT_FORMAT_VERSION}"
    key = hashlib.sha256(key_source.encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf_path.stem}-{key}"


def is_complete_import(out_dir: Path) -> bool:
    return (out_dir / IMPORT_MARKER).is_file()


# --- reading the GGUF header ---------------------------------------------------------------------------

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_NESTING = 4  # arrays of arrays: real files use one level
_GGML_FLOAT_TYPES = {0: "<f4", 1: "<f2"}  # F32, F16: the types small 1-d tensors are stored in


class _BadHeader(Exception):
    pass


class _HeaderReader:
    """Reads a GGUF header that may be crafted: every length and count is checked against the bytes left in
    the file before it is used, nesting is bounded, and the loops over items run only as long as each item
    takes bytes. gguf.GGUFReader decodes every field (the 49k-token vocabulary included): seconds."""

    def __init__(self, fh: BinaryIO, file_size: int) -> None:
        self.fh, self.file_size = fh, file_size

    def left(self) -> int:
        return self.file_size - self.fh.tell()

    def read(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.fh.read(size)
        if len(data) != size:
            raise _BadHeader
        return struct.unpack(fmt, data)[0]

    def skip(self, size: int) -> None:
        if size > self.left():
            raise _BadHeader
        self.fh.seek(size, os.SEEK_CUR)

    def string(self) -> str:
        size = self.read("<Q")
        if size > self.left():
            raise _BadHeader
        return self.fh.read(size).decode("utf-8", errors="replace")

    def skip_value(self, value_type: int, depth: int = 0) -> None:
        if value_type == _GGUF_STRING:
            self.skip(self.read("<Q"))
        elif value_type == _GGUF_ARRAY:
            item_type, count = self.read("<I"), self.read("<Q")
            if item_type in _GGUF_SCALARS:
                self.skip(struct.calcsize(_GGUF_SCALARS[item_type]) * count)
            else:
                nested = item_type in (_GGUF_STRING, _GGUF_ARRAY) and depth < _GGUF_MAX_NESTING
                if not nested or count > self.left() // 8:  # each string or array item takes 8 bytes at least
                    raise _BadHeader
                for _ in range(count):
                    self.skip_value(item_type, depth + 1)
        elif value_type in _GGUF_SCALARS:
            self.read(_GGUF_SCALARS[value_type])
        else:
            raise _BadHeader

    def value(self, value_type: int) -> Any:
        """A scalar or string value; arrays are skipped (None)."""
        if value_type == _GGUF_STRING:
            return self.string()
        if value_type in _GGUF_SCALARS:
            return self.read(_GGUF_SCALARS[value_type])
        self.skip_value(value_type)
        return None

    def field_keys(self) -> Iterator[tuple[str, int]]:
        """(key, value type) of each metadata field; the caller reads or skips each value."""
        if self.fh.read(4) != b"GGUF" or self.read("<I") < 2:
            raise _BadHeader
        self.tensor_count = self.read("<Q")
        field_count = self.read("<Q")
        if field_count > self.left() // 12:  # a key length and a type at least
            raise _BadHeader
        for _ in range(field_count):
            key = self.string()
            yield key, self.read("<I")


def gguf_string_field(gguf_path: Path, wanted: str) -> str | None:
    """One string from a GGUF header, read by skipping the other fields; None when absent or unreadable."""
    try:
        with open(gguf_path, "rb") as fh:
            reader = _HeaderReader(fh, gguf_path.stat().st_size)
            for key, value_type in reader.field_keys():
                if key == wanted and value_type == _GGUF_STRING:
                    return reader.string()
                reader.skip_value(value_type)
    except (OSError, _BadHeader, struct.error):
        return None
    return None


@dataclass(frozen=True)
class GgufTensor:
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the file


@dataclass(frozen=True)
class GgufHeader:
    """A GGUF file's scalar and string metadata (arrays, such as the vocabulary, are left out) and where
    each tensor's data lies."""

    path: Path
    fields: dict[str, Any]
    tensors: dict[str, GgufTensor]

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture") or "")

    def model_field(self, key: str) -> Any:
        """The architecture's own field `key` (`llama.rope.freq_base` for key `rope.freq_base`)."""
        return self.fields.get(f"{self.architecture}.{key}")

    def vector(self, name: str) -> list[float] | None:
        """The values of a small 1-d F32/F16 tensor (RoPE factors); None when absent or stored otherwise."""
        import numpy as np

        tensor = self.tensors.get(name)
        if tensor is None or len(tensor.shape) != 1 or tensor.ggml_type not in _GGML_FLOAT_TYPES:
            return None
        dtype = np.dtype(_GGML_FLOAT_TYPES[tensor.ggml_type])
        size = tensor.shape[0] * dtype.itemsize
        if size > 1 << 20 or tensor.offset + size > self.path.stat().st_size:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(tensor.offset)
            return np.frombuffer(fh.read(size), dtype=dtype).astype(np.float64).tolist()


def read_gguf_header(gguf_path: Path) -> GgufHeader | None:
    """The metadata and tensor directory of a GGUF file (milliseconds); None when it is not readable as one."""
    try:
        file_size = gguf_path.stat().st_size
        with open(gguf_path, "rb") as fh:
            reader = _HeaderReader(fh, file_size)
            fields = {key: reader.value(value_type) for key, value_type in reader.field_keys()}
            if reader.tensor_count > reader.left() // 24:  # a name length, dims, type and offset at least
                raise _BadHeader
            placed = []
            for _ in range(reader.tensor_count):
                name, dims = reader.string(), reader.read("<I")
                if dims > 8:
                    raise _BadHeader
                shape = tuple(reader.read("<Q") for _ in range(dims))
                placed.append((name, shape, reader.read("<I"), reader.read("<Q")))
            alignment = int(fields.get("general.alignment") or 32)
            data_start = -(-fh.tell() // alignment) * alignment
    except (OSError, _BadHeader, struct.error, ValueError, ZeroDivisionError):
        return None
    tensors = {
        name: GgufTensor(shape, ggml_type, data_start + offset) for name, shape, ggml_type, offset in placed
    }
    return GgufHeader(gguf_path, fields, tensors)


# --- what transformers' GGUF loader leaves out -----------------------------------------------------------

# Llama 3.x's RoPE scaling, which llama.cpp's converters (and twinbot's) store only as the per-frequency
# divisors they compute (`rope_freqs.weight`): a file's divisors are checked against these settings.
LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


@dataclass(frozen=True)
class TransformersReading:
    """How transformers' GGUF loader reads a file: the config settings it leaves out, which the import sets
    back from the file's metadata (`rope`: the RoPE parameters of the full-attention layers,
    `sliding_rope`: of Gemma 3's sliding-window layers), or why it cannot be read as llama.cpp runs it."""

    fields: dict[str, Any]
    rope: dict[str, Any]
    sliding_rope: dict[str, Any]
    problem: str | None = None  # "transformers reads llama GGUF files without ..."


def transformers_reading(header: GgufHeader) -> TransformersReading:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = header.architecture
    if arch.replace("moe", "_moe").replace("-", "_") not in GGUF_SUPPORTED_ARCHITECTURES:
        return TransformersReading({}, {}, {}, f"transformers cannot read {arch or 'this'} GGUF files")
    fields: dict[str, Any] = {}
    rope: dict[str, Any] = {}
    sliding_rope: dict[str, Any] = {}
    problems: list[str] = []
    key_length = header.model_field("attention.key_length")
    if arch == "qwen3" and key_length:  # transformers keeps Qwen3Config's default head size (128)
        fields["head_dim"] = int(key_length)
    if (theta := header.model_field("rope.freq_base")) is not None:
        rope["rope_theta"] = float(theta)
    rope_dims, head_size = header.model_field("rope.dimension_count"), key_length
    if arch == "phi3" and rope_dims and head_size and rope_dims != head_size:
        rope["partial_rotary_factor"] = rope_dims / head_size
    scaling = header.model_field("rope.scaling.type")
    if scaling == "linear":
        rope.update(rope_type="linear", factor=float(header.model_field("rope.scaling.factor")))
    elif scaling not in (None, "none"):
        problems.append(f"{scaling} RoPE scaling")
    if "rope_freqs.weight" in header.tensors:
        llama3 = _llama3_rope(header, rope.get("rope_theta", 10000.0))
        if llama3 is None:
            problems.append("RoPE frequency factors (rope_freqs) other than Llama 3.x's")
        else:
            rope.update(llama3)
    if "rope_factors_long.weight" in header.tensors:
        longrope = _longrope(header, fields)
        if longrope is None:
            problems.append("LongRoPE factors stored as quantized tensors")
        else:
            rope.update(longrope)
    if arch == "llama":  # llama.cpp runs LLAMA files (Mistral's too) without a sliding window
        fields["sliding_window"] = None  # transformers' Mistral, for files named so, would default to 4096
    if arch in ("gemma2", "gemma3"):
        fields["query_pre_attn_scalar"] = _gemma_query_scalar(header)
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if (softcap := header.model_field(key)) is not None:
                fields[key] = float(softcap)
        if (local_theta := header.model_field("rope.freq_base_swa")) is not None:
            sliding_rope["rope_theta"] = float(local_theta)
    problem = f"transformers reads {arch} GGUF files without {', '.join(problems)}" if problems else None
    return TransformersReading(fields, rope, sliding_rope, problem)


def _llama3_rope(header: GgufHeader, theta: float) -> dict[str, Any] | None:
    """Llama 3.x's RoPE settings when the file's `rope_freqs` divisors are theirs (the largest divisor is
    the scaling factor), else None."""
    from twinbot.export.gguf.families import llama3_rope_factors

    divisors = header.vector("rope_freqs.weight")
    rope_dims = header.model_field("rope.dimension_count")
    if not divisors or not rope_dims:
        return None
    settings = {"rope_type": "llama3", "rope_theta": theta, "factor": max(divisors), **LLAMA3_ROPE}
    expected = llama3_rope_factors(SimpleNamespace(head_dim=int(rope_dims), rope_parameters=settings))
    matches = len(expected) == len(divisors) and torch.allclose(
        expected, torch.tensor(divisors, dtype=torch.float32), rtol=1e-5, atol=0.0
    )
    return settings if matches else None


def _longrope(header: GgufHeader, fields: dict[str, Any]) -> dict[str, Any] | None:
    """Phi-3's LongRoPE from its two factor tensors, original context and attention factor; None when the
    factors cannot be read."""
    original = header.model_field("rope.scaling.original_context_length")
    long_factor = header.vector("rope_factors_long.weight")
    short_factor = header.vector("rope_factors_short.weight")
    if long_factor is None or short_factor is None:
        return None
    settings: dict[str, Any] = {
        "rope_type": "longrope",
        "long_factor": long_factor,
        "short_factor": short_factor,
    }
    if original:
        settings["original_max_position_embeddings"] = fields["original_max_position_embeddings"] = int(
            original
        )
    if (attention_factor := header.model_field("rope.scaling.attn_factor")) is not None:
        settings["attention_factor"] = float(attention_factor)
    return settings


def _gemma_query_scalar(header: GgufHeader) -> int:
    """The query scale llama.cpp applies to Gemma 2/3 (1/sqrt of this): the head size, or hidden size /
    heads for the largest model of each (gemma_pytorch's rule; the GGUF writer refuses other scales)."""
    from twinbot.export.gguf.families import FAMILIES

    family = next(family for family in FAMILIES.values() if family.arch.lower() == header.architecture)
    layers, heads = header.model_field("block_count"), header.model_field("attention.head_count")
    if layers == family.large_layers:
        return int(header.model_field("embedding_length")) // int(heads)
    return int(header.model_field("attention.key_length"))


def gguf_reading(gguf_path: Path) -> TransformersReading:
    """How transformers reads `gguf_path` (`transformers_reading`), from its header (milliseconds); a file
    whose header is unreadable is left to transformers, which says why it cannot load it."""
    header = read_gguf_header(gguf_path)
    if header is None:
        return TransformersReading({}, {}, {})
    try:
        return transformers_reading(header)
    except (TypeError, ValueError, ZeroDivisionError):  # a setting missing or of the wrong type
        return TransformersReading({}, {}, {}, f"this {header.architecture} GGUF file has malformed settings")


def _set_back(config: Any, reading: TransformersReading) -> None:
    for key, value in reading.fields.items():
        setattr(config, key, value)
    params = dict(getattr(config, "rope_parameters", None) or {})
    if "full_attention" in params or "sliding_attention" in params:  # Gemma 3: one set per layer type
        params["full_attention"] = {**params.get("full_attention", {}), **reading.rope}
        params["sliding_attention"] = {**params.get("sliding_attention", {}), **reading.sliding_rope}
    else:
        params.update(reading.rope)
    config.rope_parameters = params


# --- converting to a Hugging Face folder ---------------------------------------------------------------


def tokenizer_from_gguf(gguf_path: Path) -> PreTrainedTokenizerBase:
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if gguf_string_field(gguf_path, "tokenizer.ggml.pre") in _DIGIT_SPLITTING_PRE_TOKENIZERS:
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
    return finish_tokenizer(tokenizer)


def _model_from_gguf(gguf_path: Path, reading: TransformersReading) -> PreTrainedModel:
    """The GGUF model dequantized to fp32, with the settings transformers' GGUF loader leaves out set back
    (`reading`) and its GGUF quantization flags removed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    _set_back(config, reading)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32)
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    if hasattr(model.config, "_is_quantized"):
        model.config._is_quantized = False
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    return model


@contextlib.contextmanager
def gguf_decoded_once() -> Iterator[None]:
    """transformers opens a GGUF file several times for one load (config, tokenizer, weights), decoding every
    field each time (the 49k-token vocabulary: seconds), and rebuilds gguf's tensor-name map once per
    tensor: within this block each file is decoded once and each name map built once (a third of the import
    time). Readers are read-only views of their file, so sharing them changes nothing."""
    import gguf

    decode, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, int, int, int], gguf.GGUFReader] = {}

    def reader(path: os.PathLike[str] | str, mode: str = "r") -> gguf.GGUFReader:
        if mode != "r":
            return decode(path, mode)
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in readers:
            readers[key] = decode(path, mode)
        return readers[key]

    gguf.GGUFReader = reader  # type: ignore[misc, assignment]
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = decode, name_map
        readers.clear()


def _write_import(gguf_path: Path, target: Path) -> None:
    started = time.monotonic()
    reading = gguf_reading(gguf_path)
    with gguf_decoded_once():
        tokenizer = tokenizer_from_gguf(gguf_path)
        model = _model_from_gguf(gguf_path, reading)
    tokenizer.model_max_length = model.config.max_position_embeddings
    eos_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    stat = gguf_path.stat()
    write_json(
        target / IMPORT_MARKER,
        {
            "format": IMPORT_FORMAT_VERSION,
            "source": gguf_path.name,
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "import_seconds": round(time.monotonic() - started, 2),
        },
    )


def import_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Import `gguf_path` into the HF folder `out_dir` once; safe when several processes race to do it.

    Each process writes its own temp folder beside `out_dir` and renames it into place; a process that
    loses the race discards its copy and uses the winner's.
    """
    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if is_complete_import(out_dir):
        return out_dir
    problem = gguf_reading(gguf_path).problem
    if problem is not None:
        raise TwinbotError(f"{problem}; {GGUF_PROBLEM_HINT}", gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    make_user_only(out_dir.parent)
    print(f"importing {gguf_path.name} into {out_dir} (one time)...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        try:
            _write_import(gguf_path, tmp)
        except TwinbotError:
            raise
        except Exception as exc:
            raise TwinbotError(
                f"cannot import this GGUF model: {one_line(exc)}; {LOAD_HINT}", gguf_path
            ) from exc
        for path in tmp.rglob("*"):
            make_user_only(path)
        tmp.chmod(USER_ONLY_DIR)
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _publish(tmp: Path, out_dir: Path) -> None:
    for _attempt in range(3):
        try:
            tmp.rename(out_dir)
            return
        except OSError:
            if is_complete_import(out_dir):
                return  # another process finished first: its copy is identical
            if out_dir.exists():  # an incomplete leftover (not ours): move it aside and retry
                stale = out_dir.with_name(f".{out_dir.name}.stale-{os.getpid()}")
                with contextlib.suppress(OSError):
                    out_dir.rename(stale)
                    shutil.rmtree(stale, ignore_errors=True)
    raise TwinbotError("cannot write the imported model into the cache; check permissions", out_dir)
