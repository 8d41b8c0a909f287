"""Checking an export before it is published: the adapter model's next-token logits on a few fixed chat
prompts are the reference; the written export must reproduce them within what the precision it was stored in
allows. A merged folder is reloaded with plain transformers; a GGUF file is run by llama.cpp itself (the
`llama-cpp-python` package), which must also tokenize the prompts' text to the same ids; without
llama-cpp-python, the GGUF is read back with transformers instead."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twinbot.console import say
from twinbot.errors import TwinbotError
from twinbot.models.tokenizers import render_chat

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

# Verification thresholds. Logits are compared at every position of the check prompts, with the exported
# weights computed in fp32 on CPU, so the differences measure only the precision the weights were stored in.
# f32 differs from the adapter model only by float reassociation of the merge; 16-bit weights round each
# weight (relative error 2^-11 for fp16/f16, 2^-8 for bf16), q8_0 by up to 1/254 of each 32-weight block.
MAX_DELTA: dict[str, float] = {"fp32": 1e-3, "f32": 1e-3, "fp16": 0.25, "f16": 0.25, "bf16": 1.0}
# q8_0 as llama.cpp runs it also rounds the activations to 8 bits for every matrix product: on the embedded
# SmolLM2-135M with a briefly trained LoRA its top-1 agreement measured 96.2%, 97.5%, 98.3% and 99.2% for four
# adapters (f16: 100%). Writer mistakes are caught by the f32 export's exact comparison (tests), not here.
# llama.cpp's k-quants (4-6 bits a weight): on SmolLM2-135M, whose 576-wide rows fall back to q5_0 (q4_k_m),
# q5_1 (q5_k_m) or q8_0 (q6_k), measured on two adapters (bundled sample / Telegram group): q6_k 96.2% / 97.1%,
# q5_k_m 64.9% / 90.8%, q4_k_m 85.4% / 92.1% (the same within 1% when transformers dequantizes the file, so
# it is the weights, not llama.cpp's kernels). An export under its bound is refused with the advice to take
# a larger type.
MIN_TOP1: dict[str, float] = {
    "fp16": 0.99, "f16": 0.99, "bf16": 0.99, "q8_0": 0.93, "q6_k": 0.90, "q5_k_m": 0.80, "q4_k_m": 0.80,
}  # fmt: skip
# The types that round weights to a few bits, smallest first: failing their bound is their precision.
LOSSY_TYPES: tuple[str, ...] = ("q4_k_m", "q5_k_m", "q6_k", "q8_0")
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
class Reference:
    """The check prompts and the adapter model's logits on them: what every export must reproduce."""

    prompts: list[list[int]]
    logits: list[torch.Tensor]  # [positions, vocab] per prompt, fp32
    # texts and their ids from the RUN's tokenizer: the rendered chats and llama.cpp's pre-tokenizer check
    token_checks: list[tuple[str, list[int]]] = field(default_factory=list)


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
    verifier: str = "transformers"  # what ran the export: "transformers", "llama.cpp (llama-cpp-python X)"
    tokenization_mismatches: int = 0  # check texts the export's own tokenizer splits differently

    @property
    def passed(self) -> bool:
        delta_ok = self.max_allowed_delta is None or self.max_abs_delta <= self.max_allowed_delta
        top1_ok = self.min_top1 is None or self.top1_agreement >= self.min_top1
        return delta_ok and top1_ok and self.tokenization_mismatches == 0

    def describe(self) -> str:
        limits = []
        if self.max_allowed_delta is not None:
            limits.append(f"max |delta logit| <= {self.max_allowed_delta:g}")
        if self.min_top1 is not None:
            limits.append(f"top-1 >= {self.min_top1:.0%}")
        verdict = "ok" if self.passed else "FAILED"
        tokenization = (
            f", {self.tokenization_mismatches} texts tokenized differently"
            if self.tokenization_mismatches
            else ""
        )
        return (
            f"verify: checked in {self.verifier}{tokenization}: "
            f"{self.prompts} prompts, {self.positions} positions: max |delta logit| "
            f"{self.max_abs_delta:.3g}, top-1 agreement {self.top1_agreement:.2%} "
            f"({self.exact_top1_agreement:.2%} exact) "
            f"(need {' and '.join(limits)}): {verdict}"
        )


# --- the reference ------------------------------------------------------------------------------------------


def check_texts(tokenizer: PreTrainedTokenizerBase, system_prompt: str | None) -> list[str]:
    """The fixed check chats rendered with the chat template, ending with the reply prompt."""
    texts = []
    for turns in CHECK_CONVERSATIONS:
        messages = [{"role": "system", "content": system_prompt or DEFAULT_CHECK_SYSTEM_PROMPT}]
        messages += [
            {"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)
        ]
        texts.append(render_chat(tokenizer, messages, add_generation_prompt=True))
    return texts


def reference_logits(model: Any, tokenizer: PreTrainedTokenizerBase, system_prompt: str | None) -> Reference:
    """The adapter model's logits on the check chats, rendered with the persona's system prompt."""
    from twinbot.export.gguf.tokenizer import PRE_TOKENIZER_CHECK_TEXT

    texts = check_texts(tokenizer, system_prompt)
    prompts = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    token_checks = [
        (text, list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        for text in [*texts, PRE_TOKENIZER_CHECK_TEXT]
    ]
    # A process's first fp32 forward pass is sometimes off: on a 2-core AMX Xeon (torch 2.13 CPU) it was
    # 0.0066 logits from every later pass in 2 of 5 processes, later passes agreeing with each other and with
    # llama.cpp to 5e-05, which would fail a correct f32 export. The reference comes after one warm-up pass.
    prompt_logits(model, prompts[:1])
    return Reference(prompts, prompt_logits(model, prompts), token_checks)


@torch.no_grad()
def prompt_logits(model: Any, prompts: list[list[int]]) -> list[torch.Tensor]:
    """fp32 logits [positions, vocab] of each prompt, one prompt per forward pass (no padding involved)."""
    return [model(torch.tensor([ids])).logits[0].float() for ids in prompts]


# --- the export, reloaded -----------------------------------------------------------------------------------


def load_merged_logits(folder: Path, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Reload a merged model folder with transformers (fp32) and run the check prompts."""
    return _reloaded_logits(prompts, folder)


def gguf_verifier() -> str:
    """What checks a GGUF export here: llama.cpp when llama-cpp-python is installed, else transformers."""
    try:
        import llama_cpp
    except ImportError:
        return "transformers"
    return f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"


def load_gguf_logits(
    path: Path, reference: Reference, config: PretrainedConfig
) -> tuple[list[torch.Tensor], int]:
    """Run the check prompts in the GGUF file: (logits per prompt, check texts it tokenizes differently).
    In llama.cpp when installed, else read back with transformers (dequantized to fp32, with the merged
    model's config: transformers does not read every setting llama.cpp does from the file; the tokenizer is
    the run's own, so there is nothing to compare)."""
    if gguf_verifier() == "transformers":
        from twinbot.models.gguf_import import gguf_decoded_once

        _say_once("verify: llama-cpp-python is not installed, so transformers reads the GGUF back instead")

        with gguf_decoded_once():
            return _reloaded_logits(reference.prompts, path.parent, gguf_file=path.name, config=config), 0
    return llama_cpp_logits(path, reference)


@functools.cache
def _say_once(message: str) -> None:
    say(message)


def llama_cpp_logits(path: Path, reference: Reference) -> tuple[list[torch.Tensor], int]:
    """The GGUF file run by llama.cpp on CPU: the logits at every position of each check prompt (the same
    token ids as the reference), and how many check texts llama.cpp's own tokenizer splits differently."""
    from twinbot.models.llama_context import LlamaContext

    longest = max(len(ids) for ids in reference.prompts)
    context = LlamaContext(path, longest, 1, torch.get_num_threads(), "cpu", n_batch=longest, exact=True)
    mismatches = sum(context.tokenize(text) != ids for text, ids in reference.token_checks)
    logits = []
    for ids in reference.prompts:
        context.clear()
        indices = [context.add(token, position, 0, True) for position, token in enumerate(ids)]
        context.decode()
        logits.append(torch.cat([context.logits(index) for index in indices]).clone())
    return logits, mismatches


def _reloaded_logits(prompts: list[list[int]], folder: Path, **source: Any) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(
        str(folder), **source, dtype=torch.float32, attn_implementation="eager"
    )
    reloaded.eval()
    return prompt_logits(reloaded, prompts)


# --- the comparison -----------------------------------------------------------------------------------------


def compare_logits(
    reference: Reference,
    exported: list[torch.Tensor],
    precision: str,
    verifier: str = "transformers",
    tokenization_mismatches: int = 0,
) -> Verification:
    """Max |delta logit| and top-1 agreement over the distinct prompt prefixes (a prefix shared by several
    prompts, like the system prompt, counts once)."""
    max_delta, agree, exact, positions = 0.0, 0, 0, 0
    seen: set[tuple[int, ...]] = set()
    for ids, ref, out in zip(reference.prompts, reference.logits, exported, strict=True):
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
        prompts=len(reference.logits),
        positions=positions,
        max_abs_delta=max_delta,
        top1_agreement=agree / positions if positions else 0.0,
        exact_top1_agreement=exact / positions if positions else 0.0,
        max_allowed_delta=MAX_DELTA.get(precision),
        min_top1=MIN_TOP1.get(precision),
        verifier=verifier,
        tokenization_mismatches=tokenization_mismatches,
    )


def verify_gguf(
    path: Path, reference: Reference, config: PretrainedConfig, precision: str, out: Path
) -> Verification:
    """Run the GGUF file at `path` (llama.cpp, or transformers without it) and check it like `verify_export`."""
    exported, mismatches = load_gguf_logits(path, reference, config)
    return verify_export(reference, exported, precision, out, gguf_verifier(), mismatches)


def verify_export(
    reference: Reference,
    exported: list[torch.Tensor],
    precision: str,
    out: Path,
    verifier: str = "transformers",
    tokenization_mismatches: int = 0,
) -> Verification:
    """Compare the export's logits with the adapter's and say how close; raise (the output is then not
    published) when they are too far apart."""
    verification = compare_logits(reference, exported, precision, verifier, tokenization_mismatches)
    say(verification.describe())
    if not verification.passed and precision in LOSSY_TYPES and verification.tokenization_mismatches == 0:
        larger = (*LOSSY_TYPES[LOSSY_TYPES.index(precision) + 1 :], "f16")
        raise TwinbotError(
            f"the {precision} export keeps too few of the adapter model's next tokens "
            f"({verification.top1_agreement:.1%}, need {verification.min_top1:.0%}); nothing was written; "
            f"use a larger --type ({', '.join(larger)})",
            out,
        )
    if not verification.passed:
        raise TwinbotError(
            f"the exported model does not match the adapter model ({verification.describe()}); "
            "nothing was written; please report this with the base model name",
            out,
        )
    return verification
