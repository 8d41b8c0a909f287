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
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch

from twinbot.errors import TwinbotError, one_line
from twinbot.fileio import USER_ONLY_DIR, cache_dir, make_user_only, write_json
from twinbot.models.tokenizers import finish_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Bump when the import output changes, so stale cached imports are redone.
IMPORT_FORMAT_VERSION = 1
IMPORT_MARKER = "twinbot-import.json"  # written last: a cached folder without it is incomplete

# What to do when a model cannot be loaded.
LOAD_HINT = "pass --model with a local folder or .gguf file"

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

_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_NESTING = 4  # arrays of arrays: real files use one level


class _BadHeader(Exception):
    pass


def gguf_string_field(gguf_path: Path, wanted: str) -> str | None:
    """One string from a GGUF header, read by skipping the other fields; None when absent or unreadable.

    gguf.GGUFReader decodes every field (the 49k-token vocabulary included), which costs seconds. The file
    may be crafted: every length and count is checked against the bytes left in the file before it is
    used, nesting is bounded, and the loops over items run only as long as each item takes bytes.
    """

    def read(fh: BinaryIO, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = fh.read(size)
        if len(data) != size:
            raise _BadHeader
        return struct.unpack(fmt, data)[0]

    def skip(fh: BinaryIO, size: int) -> None:
        if size > file_size - fh.tell():
            raise _BadHeader
        fh.seek(size, os.SEEK_CUR)

    def read_string(fh: BinaryIO) -> bytes:
        size = read(fh, "<Q")
        if size > file_size - fh.tell():
            raise _BadHeader
        return fh.read(size)

    def skip_value(fh: BinaryIO, value_type: int, depth: int = 0) -> None:
        if value_type == _GGUF_STRING:
            skip(fh, read(fh, "<Q"))
        elif value_type == _GGUF_ARRAY:
            item_type, count = read(fh, "<I"), read(fh, "<Q")
            if item_type in _GGUF_SCALAR_SIZES:
                skip(fh, _GGUF_SCALAR_SIZES[item_type] * count)
            else:
                nested = item_type in (_GGUF_STRING, _GGUF_ARRAY) and depth < _GGUF_MAX_NESTING
                # each string or array item takes at least 8 bytes
                if not nested or count > (file_size - fh.tell()) // 8:
                    raise _BadHeader
                for _ in range(count):
                    skip_value(fh, item_type, depth + 1)
        elif value_type in _GGUF_SCALAR_SIZES:
            skip(fh, _GGUF_SCALAR_SIZES[value_type])
        else:
            raise _BadHeader

    try:
        file_size = gguf_path.stat().st_size
        with open(gguf_path, "rb") as fh:
            if fh.read(4) != b"GGUF" or read(fh, "<I") < 2:
                return None
            read(fh, "<Q")  # tensor count
            field_count = read(fh, "<Q")
            if field_count > (file_size - fh.tell()) // 12:  # a key length and a type at least
                return None
            for _ in range(field_count):
                key = read_string(fh).decode("utf-8", errors="replace")
                value_type = read(fh, "<I")
                if key == wanted and value_type == _GGUF_STRING:
                    return read_string(fh).decode("utf-8", errors="replace")
                skip_value(fh, value_type)
    except (OSError, _BadHeader, struct.error):
        return None
    return None


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


def _model_from_gguf(gguf_path: Path) -> PreTrainedModel:
    """The GGUF model dequantized to fp32, with transformers' GGUF quantization flags removed."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
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
    with gguf_decoded_once():
        tokenizer = tokenizer_from_gguf(gguf_path)
        model = _model_from_gguf(gguf_path)
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
