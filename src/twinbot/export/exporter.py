"""`twinbot export`: a trained RUN as a merged Hugging Face folder, a GGUF file, or an Ollama model folder.

Every target starts the same way: the base model plus the RUN's LoRA adapter (fp32, CPU) gives reference
logits on a few fixed chat prompts (`verify`), then the adapter is merged into the base weights. The merged
model is written (safetensors, or GGUF straight from Python: `gguf`, plus a Modelfile for Ollama:
`modelfile`), run again (a merged folder reloaded with plain transformers, a GGUF file in llama.cpp), and its
logits are compared with the reference. The export is published (renamed into place) only when the
comparison passes; a failed check leaves no output behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from twinbot.console import say
from twinbot.errors import TwinbotError, one_line
from twinbot.export.gguf import GGUF_TYPES, GgufType, check_gguf_support, require_quantizer, write_gguf
from twinbot.export.modelfile import OLLAMA_MODEL_FILE, OLLAMA_MODELFILE, ollama_modelfile
from twinbot.export.verify import (
    Reference,
    Verification,
    load_merged_logits,
    reference_logits,
    verify_export,
    verify_gguf,
)
from twinbot.fileio import atomic_dir, atomic_path, check_output_dir, make_user_only, write_json
from twinbot.runs import PERSONA_FILE, adapter_persona, find_adapter

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

ExportTarget = Literal["merged", "gguf", "ollama"]
MergedDtype = Literal["bf16", "fp16", "fp32"]

TARGETS: tuple[ExportTarget, ...] = ("merged", "gguf", "ollama")
MERGED_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEFAULT_GGUF_TYPE: GgufType = "f16"
# The persona travels with the export where `twinbot chat/serve` look for it: a merged folder's PERSONA_FILE,
# and the GGUF metadata string GGUF_SYSTEM_PROMPT_KEY (written by `gguf.writer`).


@dataclass(frozen=True)
class RunInfo:
    """What export needs from a RUN folder (or a bare adapter folder)."""

    adapter_dir: Path
    base_model: str | None  # as the user named it; None = the embedded default
    system_prompt: str | None  # the persona's system prompt from the training data, when it can be found


@dataclass(frozen=True)
class ExportResult:
    target: ExportTarget
    path: Path
    precision: str  # merged: bf16/fp16/fp32; gguf/ollama: f32/f16/q8_0
    verification: Verification


@dataclass(frozen=True)
class _Merged:
    """The adapter folded into its base model, with what every target writes beside it and checks it
    against."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: RunInfo
    reference: Reference


# --- the command --------------------------------------------------------------------------------------------


def run_export(run: Path, target: str, out: Path, **options: Any) -> ExportResult:
    """The `twinbot export` command: check --to, export (`options`: export's dtype, gguf_type, overwrite),
    print where it went."""
    if target not in TARGETS:
        raise TwinbotError(f"unknown --to '{target}'; use one of: {', '.join(TARGETS)}")
    result = export(run, target, out, **options)  # type: ignore[arg-type]
    print(f"{result.path}")
    return result


def export(
    run: Path,
    target: ExportTarget,
    out: Path,
    dtype: MergedDtype = "bf16",
    gguf_type: GgufType | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export RUN to `target` at `out`, verify it against the adapter model, then publish it."""
    with _one_line_errors(out):
        _check_options(target, dtype, gguf_type)
        out_path = Path(out).expanduser()
        info = read_run(run)
        _check_output(target, out_path, run, overwrite)
        if target != "merged":
            check_gguf_support(_base_config(info.base_model))

        say("loading the base model and the adapter...")
        model, tokenizer = load_adapter_model(info)
        # before the merge and the GGUF: a model without a chat template fails here
        modelfile = ollama_modelfile(tokenizer, info.system_prompt) if target == "ollama" else ""
        reference = reference_logits(model, tokenizer, info.system_prompt)
        merged = _Merged(merge(model), tokenizer, info, reference)
        if target == "merged":
            return _export_merged(merged, out_path, dtype, overwrite)
        if target == "gguf":
            return _export_gguf(merged, out_path, gguf_type or DEFAULT_GGUF_TYPE, overwrite)
        return _export_ollama(merged, out_path, gguf_type or DEFAULT_GGUF_TYPE, overwrite, modelfile)


@contextlib.contextmanager
def _one_line_errors(out: Path) -> Iterator[None]:
    """A library failure (disk full, unreadable weights...) is still a one-line TwinbotError."""
    try:
        yield
    except TwinbotError:
        raise
    except Exception as exc:
        raise TwinbotError(
            f"export failed: {one_line(exc)}; nothing was written (--debug shows details)", out
        ) from exc


def _check_options(target: str, dtype: str, gguf_type: str | None) -> None:
    if target not in TARGETS:
        raise TwinbotError(f"unknown export target '{target}'; use one of: {', '.join(TARGETS)}")
    if dtype not in MERGED_DTYPES:
        raise TwinbotError(f"unknown --dtype '{dtype}'; use one of: {', '.join(MERGED_DTYPES)}")
    if gguf_type is not None and gguf_type not in GGUF_TYPES:
        raise TwinbotError(f"unknown --type '{gguf_type}'; use one of: {', '.join(GGUF_TYPES)}")
    if gguf_type is not None and target == "merged":
        raise TwinbotError("--type applies to --to gguf / ollama; use --dtype for a merged folder")
    if gguf_type is not None:
        require_quantizer(gguf_type)


def _check_output(target: ExportTarget, out: Path, run: Path, overwrite: bool) -> None:
    out_resolved, run_resolved = out.resolve(), Path(run).expanduser().resolve()
    # A folder export there could replace the run; a .gguf file cannot (the llama.cpp backend keeps its
    # export in RUN/export/).
    inside = out_resolved == run_resolved or run_resolved in out_resolved.parents
    if inside and target != "gguf":
        raise TwinbotError("the export must not go inside the run folder; pick another output path", out)
    if target == "gguf":
        if out.suffix.lower() != ".gguf":
            raise TwinbotError("a GGUF export needs a file name ending in .gguf", out)
        _check_gguf_file(out, overwrite)
    else:
        check_output_dir(out, overwrite)


def _check_gguf_file(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise TwinbotError("output path is a folder; pass a file name ending in .gguf", out)
    if out.exists() and not overwrite:
        raise TwinbotError("output file exists; pass --overwrite or pick another", out)


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


# --- adapter model and merge --------------------------------------------------------------------------------


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


def merge(model: PeftModel) -> PreTrainedModel:
    """The adapter folded into the (fp32) base weights: a plain transformers model."""
    merged = model.merge_and_unload()
    merged.eval()
    return merged


# --- the targets --------------------------------------------------------------------------------------------


def _export_merged(merged: _Merged, out: Path, dtype: MergedDtype, overwrite: bool) -> ExportResult:
    with atomic_dir(out, overwrite=overwrite, marked=True) as tmp:
        say(f"writing the merged model ({dtype}) ...")
        write_merged(merged.model, merged.tokenizer, tmp, MERGED_DTYPES[dtype])
        info = merged.info
        write_json(
            tmp / PERSONA_FILE,
            {"base_model": info.base_model, "dtype": dtype, "system_prompt": info.system_prompt},
        )
        exported = load_merged_logits(tmp, merged.reference.prompts)
        verification = verify_export(merged.reference, exported, dtype, out)
    say(f"merged model written to {out}")
    return ExportResult("merged", out, dtype, verification)


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


def _export_gguf(merged: _Merged, out: Path, precision: GgufType, overwrite: bool) -> ExportResult:
    _check_gguf_file(out, overwrite)  # again: a file may have appeared while the model loaded
    with atomic_path(out, suffix=".gguf") as tmp_file:
        say(f"writing GGUF ({precision}) ...")
        write_gguf(merged.model, merged.tokenizer, tmp_file, precision, out.stem, merged.info.system_prompt)
        verification = verify_gguf(tmp_file, merged.reference, merged.model.config, precision, out)
    say(f"GGUF written to {out}")
    return ExportResult("gguf", out, precision, verification)


def _export_ollama(
    merged: _Merged, out: Path, precision: GgufType, overwrite: bool, modelfile: str
) -> ExportResult:
    system_prompt = merged.info.system_prompt
    with atomic_dir(out, overwrite=overwrite, marked=True) as tmp:
        say(f"writing GGUF ({precision}) and Modelfile ...")
        model_file = tmp / OLLAMA_MODEL_FILE
        write_gguf(merged.model, merged.tokenizer, model_file, precision, out.name, system_prompt)
        make_user_only(model_file)
        (tmp / OLLAMA_MODELFILE).write_text(modelfile, encoding="utf-8")
        verification = verify_gguf(model_file, merged.reference, merged.model.config, precision, out)
    say(f"Ollama model written to {out}; run: ollama create NAME -f {out / OLLAMA_MODELFILE}")
    return ExportResult("ollama", out, precision, verification)
