"""GGUF export: a merged model of a supported family written as one GGUF file for llama.cpp (`writer`), with
each family's layout (`families`) and the tokenizer llama.cpp needs (`tokenizer`)."""

from twinbot.export.gguf.families import FAMILIES, check_gguf_support, supported_families
from twinbot.export.gguf.writer import (
    GGUF_TYPES,
    LLAMA_QUANTIZED,
    GgufType,
    llama_permute,
    require_quantizer,
    write_gguf,
)

__all__ = [
    "FAMILIES",
    "GGUF_TYPES",
    "LLAMA_QUANTIZED",
    "GgufType",
    "check_gguf_support",
    "llama_permute",
    "require_quantizer",
    "supported_families",
    "write_gguf",
]
