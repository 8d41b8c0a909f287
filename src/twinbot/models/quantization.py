"""QLoRA (LOAD_IN_4BIT): the frozen base model in 4-bit NF4 through bitsandbytes, as the QLoRA paper trains.

NF4 weights with double quantization (the per-block scales quantized too: ~4.13 bits per weight) and a
16-bit compute dtype; embeddings, norms and the output layer stay unquantized. `prepare_for_4bit_training`
is peft's k-bit preparation (base frozen, its unquantized weights in fp32) with the embeddings and output
layer kept in bf16; the LoRA weights peft adds are fp32. Checkpoints hold the adapter and optimizer only:
the base is quantized the same way again on resume, so a resumed run continues exactly. Export merges the adapter into the unquantized base (exporter.py).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import torch

from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig

QLORA_INSTALL_HINT = "pip install 'twinbot[qlora]'"


def check_4bit_support(device: str) -> None:
    """A one-line TwinbotError unless 4-bit training can run here: a CUDA device and bitsandbytes."""
    if torch.device(device).type != "cuda":
        where = (
            "no CUDA GPU is visible here"
            if torch.device(device).type == "cpu"
            else f"this run is on {device}"
        )
        raise TwinbotError(
            f"LOAD_IN_4BIT needs a CUDA GPU and bitsandbytes, and {where}; set LOAD_IN_4BIT=false "
            "(e.g. --preset fast) to train here, or train on an NVIDIA GPU"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TwinbotError(
            "LOAD_IN_4BIT needs a CUDA GPU and bitsandbytes, and bitsandbytes is not installed; "
            f"run `{QLORA_INSTALL_HINT}`, or set LOAD_IN_4BIT=false"
        )


def four_bit_compute_dtype() -> torch.dtype:
    """bf16 where the GPU supports it (Ampere and newer), else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def four_bit_config(compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """transformers' bitsandbytes settings for QLoRA: NF4, double quantization, `compute_dtype` matmuls."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def prepare_for_4bit_training(model: Any, compute_dtype: torch.dtype) -> Any:
    """peft's k-bit preparation (every base weight frozen, the unquantized ones in fp32 for stable training),
    then the frozen embeddings and output layer back in a bf16 `compute_dtype`: in fp32 they cost 4 bytes a
    weight (3 GB more on a 14B model with a 152k vocabulary) and autocast cast the output layer to 16-bit
    again for the logits (measured on an H200: a 7B model's peak 9.07 -> 8.28 GiB). The norms stay fp32, so
    the hidden states the layers save stay fp32 from the first norm on. With fp16 (GPUs before Ampere) the
    embeddings stay fp32 too: fp16 embeddings can overflow. Gradient checkpointing is left to the caller
    (GRADIENT_CHECKPOINTING decides it, as without 4-bit)."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if compute_dtype == torch.bfloat16:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                module.to(compute_dtype)
    return model
