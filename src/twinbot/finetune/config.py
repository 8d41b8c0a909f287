"""Training settings: one validated model, four presets, and a resolver that records where each value came from.

Precedence, highest first: command line (named flags and `--set KEY=VALUE`) > environment > `.env` >
YAML (`--config`) > preset > defaults. The preset itself is picked with the same precedence first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from twinbot.errors import TwinbotError

PresetName = Literal["baseline", "optimized", "aggressive", "fast", "qlora"]
DEFAULT_PRESET: PresetName = "fast"


class TrainConfig(BaseModel):
    """Every training setting. Field `foo_bar` is read from the env/.env key `FOO_BAR`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName = Field(
        DEFAULT_PRESET, description="Preset: baseline | optimized | aggressive | fast | qlora."
    )
    base_model: str | None = Field(
        None, description="Base model: HF id, local folder or .gguf; empty = embedded SmolLM2-135M-Instruct."
    )
    data_dir: Path | None = Field(
        None, description="Folder made by `twinbot prepare` (train.jsonl, eval.jsonl)."
    )
    output_dir: Path | None = Field(None, description="Run folder: adapter, checkpoints, logs, summary.json.")
    resume: Literal["no", "yes", "auto"] = Field(
        "no",
        description="A run already in OUTPUT_DIR: no = refuse it; yes = continue it from its last checkpoint; "
        "auto = continue it when unfinished, leave it when finished, start one where there is none.",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps; overrides EPOCHS when set."
    )
    batch_size: int | Literal["auto"] = Field(
        1,
        description="Micro-batch: samples (packing off) or packed rows (packing on) per forward pass; "
        "'auto' = 4 on CPU, largest that fits on GPU.",
    )
    processes: int | Literal["auto"] = Field(
        1,
        description="CPU training processes, each taking an equal share of every micro-batch (BATCH_SIZE must "
        "divide evenly); 'auto' = one per core where the micro-batch splits evenly and memory allows "
        "(1 on Windows). GPUs: 1 (several GPUs: `accelerate launch`).",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step (changes the step size, not the compute)."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of the LoRA weights.")
    use_fp16: bool = Field(
        False,
        description="16-bit mixed precision: bf16 where supported (CPU/GPU), else fp16 with loss scaling.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~30% more compute."
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: the frozen base model in 4-bit NF4 (bitsandbytes, double quantization, 16-bit "
        "compute), LoRA weights in fp32; needs a CUDA GPU and `pip install 'twinbot[qlora]'`.",
    )
    packing: bool = Field(False, description="Pack samples into rows of ROW_TOKENS tokens, without padding.")
    row_tokens: int = Field(1024, ge=16, description="Tokens per packed row (PACKING=true).")
    max_seq_len: int = Field(
        1024, ge=16, description="Max tokens per sample; the oldest context turns are dropped first."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: str = Field(
        "all-linear",
        min_length=1,
        description="'all-linear' or comma-separated module names (q_proj,v_proj).",
    )
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="Share of steps spent warming up the LR.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="LR schedule after warm-up: cosine | linear | constant."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 = no clipping.")
    seed: int = Field(42, description="Random seed (LoRA init, shuffling, dropout).")
    eval_every: int = Field(
        0, ge=0, description="Evaluate every N optimizer steps; 0 = about 10 evaluations per run."
    )
    eval_max_samples: int = Field(200, ge=0, description="Cap on eval samples per evaluation; 0 = all.")
    save_every: int = Field(0, ge=0, description="Checkpoint every N optimizer steps; 0 = about 10 per run.")
    keep_checkpoints: int = Field(2, ge=1, description="How many recent checkpoints to keep.")
    log_every: int = Field(1, ge=1, description="Log loss/throughput every N optimizer steps.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps.")
    attn_implementation: Literal["auto", "sdpa", "packed_sdpa", "flash_attention_2", "eager"] = Field(
        "auto",
        description="auto = flash_attention_2 on CUDA when installed, packed_sdpa for packed rows on CPU, "
        "else sdpa.",
    )
    fused_lora: bool = Field(
        True,
        description="Each LoRA layer as one autograd op (same result, fewer passes over the activations); "
        "applies to layers without LoRA dropout, and not with TORCH_COMPILE (which fuses them itself).",
    )
    torch_compile: bool | Literal["auto"] = Field(
        False,
        description="torch.compile the model: compiles at the first step (needs a C++ compiler; Triton on "
        "GPUs), then faster steps; 'auto' = on for CPU training on Linux where a C++ compiler is found.",
    )

    @field_validator("torch_compile", mode="before")
    @classmethod
    def _bool_or_auto(cls, value: Any) -> Any:
        return "auto" if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_mode(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, str):
            cleaned = value.strip().lower()
            return {"true": "yes", "1": "yes", "false": "no", "0": "no"}.get(cleaned, cleaned)
        return value

    @field_validator("preset", "lr_scheduler", "attn_implementation", "device", mode="before")
    @classmethod
    def _lowercase_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def row_width(self) -> int:
        """The longest row a micro-batch holds: ROW_TOKENS when packing, else MAX_SEQ_LEN."""
        return self.row_tokens if self.packing else self.max_seq_len

    @field_validator("batch_size", "processes", mode="before")
    @classmethod
    def _count_or_auto(cls, value: Any) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError("must be a whole number >= 1 or 'auto'")
        return number

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("base_model")
    @classmethod
    def _base_model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.strip() or None


FIELDS: tuple[str, ...] = tuple(TrainConfig.model_fields)
ENV_KEYS: dict[str, str] = {name: name.upper() for name in FIELDS}
_FIELD_BY_KEY: dict[str, str] = {key: name for name, key in ENV_KEYS.items()}
_NULLABLE = frozenset({"base_model", "data_dir", "output_dir", "max_steps"})

# Only the settings a preset sets; everything else comes from the defaults above.
PRESETS: dict[str, dict[str, Any]] = {
    "baseline": {
        "gradient_accumulation_steps": 16,
        "use_fp16": False,
        "learning_rate": 2e-4,
        "gradient_checkpointing": True,
        "batch_size": 1,
        "epochs": 1,
        "packing": False,
    },
    "optimized": {
        "gradient_accumulation_steps": 32,
        "use_fp16": True,
        "learning_rate": 2.5e-4,
        "gradient_checkpointing": True,
        "batch_size": 1,
        "epochs": 1,
        "packing": False,
    },
    "aggressive": {
        "gradient_accumulation_steps": 64,
        "use_fp16": True,
        "learning_rate": 3e-4,
        "gradient_checkpointing": True,
        "batch_size": 1,
        "epochs": 1,
        "packing": False,
    },
    # Why each choice: docs/training.md, "The fast preset".
    "fast": {
        "packing": True,
        "row_tokens": 512,
        "batch_size": "auto",
        "processes": "auto",
        "gradient_accumulation_steps": 1,
        "use_fp16": True,
        "gradient_checkpointing": False,
        "learning_rate": 2.5e-4,
        "lora_dropout": 0.0,
        "torch_compile": "auto",
        "epochs": 1,
    },
    # fast's settings with the base model in 4-bit on a GPU: the smallest memory (docs/training.md, "QLoRA")
    "qlora": {
        "packing": True,
        "row_tokens": 512,
        "batch_size": "auto",
        "gradient_accumulation_steps": 1,
        "use_fp16": True,
        "gradient_checkpointing": True,
        "learning_rate": 2.5e-4,
        "lora_dropout": 0.0,
        "load_in_4bit": True,
        "epochs": 1,
    },
}


@dataclass(frozen=True)
class _Setting:
    """One raw value from one source, with the key exactly as the user wrote it."""

    value: Any
    key: str
    source: str
    path: Path | None = None


@dataclass
class ResolvedConfig:
    config: TrainConfig
    sources: dict[
        str, str
    ]  # field -> "cli" | "--set" | "environment" | ".env" | "yaml:<path>" | "preset:<name>" | "default"

    def describe(self) -> str:
        """A plain-text table: setting, value, env key, source."""
        rows = [("setting", "value", "env key", "source")]
        for name in FIELDS:
            rows.append((name, _show(name, getattr(self.config, name)), ENV_KEYS[name], self.sources[name]))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths) + "  " + "-" * len("source"))
        return "\n".join(lines)


def _show(name: str, value: Any) -> str:
    if value is None:
        return "(embedded default)" if name == "base_model" else "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve_train_config(
    cli: Mapping[str, Any | None],
    yaml_path: Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = Path(".env"),
) -> ResolvedConfig:
    """Merge every source into one validated TrainConfig, remembering the source of each field.

    `cli` maps field names to values (None = not given). `overrides` are `KEY=VALUE` strings where KEY is a
    field name or env key. Bad values raise TwinbotError naming the key, its source and what to do.
    """
    layers = [
        _cli_layer(cli, overrides),
        _string_layer(os.environ if environ is None else environ, "environment"),
        _dotenv_layer(dotenv_path),
        _yaml_layer(yaml_path),
    ]

    def pick(name: str) -> _Setting | None:
        return next((layer[name] for layer in layers if name in layer), None)

    preset_setting = pick("preset")
    preset = _validate_preset(preset_setting)
    preset_values = PRESETS[preset]

    chosen: dict[str, _Setting] = {}
    for name in FIELDS:
        setting = pick(name)
        if setting is None and name in preset_values:
            setting = _Setting(preset_values[name], name, f"preset:{preset}")
        if setting is not None:
            chosen[name] = setting
    chosen["preset"] = _Setting(preset, "preset", preset_setting.source if preset_setting else "default")

    try:
        config = TrainConfig.model_validate({name: setting.value for name, setting in chosen.items()})
    except pydantic.ValidationError as exc:
        raise _validation_error(exc, chosen) from None
    sources = {name: chosen[name].source if name in chosen else "default" for name in FIELDS}
    return ResolvedConfig(config=config, sources=sources)


def _validate_preset(setting: _Setting | None) -> str:
    if setting is None:
        return DEFAULT_PRESET
    name = str(setting.value).strip().lower()
    if name not in PRESETS:
        raise TwinbotError(
            f"{setting.key}={setting.value!r} (from {setting.source}) is not a preset; "
            f"use one of {', '.join(PRESETS)}",
            setting.path,
        )
    return name


def _validation_error(exc: pydantic.ValidationError, chosen: Mapping[str, _Setting]) -> TwinbotError:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    message = error["msg"].removeprefix("Value error, ")
    setting = chosen.get(name)
    if setting is None:  # a default can't be invalid, but keep the message useful regardless
        return TwinbotError(f"setting {ENV_KEYS.get(name, name)}: {message}")
    return TwinbotError(
        f"{setting.key}={setting.value!r} (from {setting.source}): {message}; "
        f"fix or remove it there (see docs/training.md)",
        setting.path,
    )


def _field_for(key: str) -> str | None:
    """Accept a field name (`learning_rate`) or an env key (`LEARNING_RATE`), case-insensitively."""
    cleaned = key.strip().replace("-", "_")
    return _FIELD_BY_KEY.get(cleaned.upper())


def _from_string(name: str, raw: str) -> Any:
    """Strings from env/.env/--set: empty = not set; 'none'/'null' clear an optional setting."""
    value = raw.strip()
    if name in _NULLABLE and value.lower() in {"none", "null"}:
        return None
    return value


def _cli_layer(cli: Mapping[str, Any | None], overrides: Sequence[str]) -> dict[str, _Setting]:
    layer: dict[str, _Setting] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        name = _field_for(key)
        if not sep or not key.strip():
            raise TwinbotError(f"--set {item!r}: expected KEY=VALUE, e.g. --set LEARNING_RATE=1e-4")
        if name is None:
            raise TwinbotError(
                f"--set {key.strip()}: unknown setting; use a field name or env key from "
                f"`twinbot train --print-config`"
            )
        if raw.strip():
            layer[name] = _Setting(_from_string(name, raw), key.strip(), "--set")
        else:
            layer.pop(name, None)
    for name, value in cli.items():
        if name not in ENV_KEYS:
            raise ValueError(f"resolve_train_config: unknown cli field {name!r}")
        if value is None:
            continue
        earlier = layer.get(name)
        if earlier is not None and str(earlier.value) != str(value):
            raise TwinbotError(
                f"{name} is given twice on the command line (its own option and --set {earlier.key}); keep one"
            )
        layer[name] = _Setting(value, name, "cli")
    return layer


def _string_layer(
    values: Mapping[str, str | None], source: str, path: Path | None = None
) -> dict[str, _Setting]:
    layer: dict[str, _Setting] = {}
    for name, key in ENV_KEYS.items():
        raw = values.get(key)
        if raw is None or not raw.strip():
            continue
        layer[name] = _Setting(_from_string(name, raw), key, source, path)
    return layer


def _dotenv_layer(path: Path | None) -> dict[str, _Setting]:
    if path is None or not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TwinbotError("cannot read this .env file; check that it is UTF-8 text", path) from exc
    return _string_layer(values, ".env", Path(path))


def _yaml_layer(path: Path | None) -> dict[str, _Setting]:
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TwinbotError(
            f"cannot read config file ({exc.strerror}); check the --config path", path
        ) from exc
    except UnicodeDecodeError as exc:
        raise TwinbotError("config file is not UTF-8 text", path) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TwinbotError("not valid YAML; check the syntax", path, mark.line + 1 if mark else None) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TwinbotError("expected a YAML mapping of setting: value", path)
    source = f"yaml:{path}"
    layer: dict[str, _Setting] = {}
    for key, value in data.items():
        name = _field_for(str(key))
        if name is None:
            raise TwinbotError(f"unknown setting {key!r}; see docs/training.md for the list", path)
        if value is None and name not in _NULLABLE:
            continue
        if isinstance(value, str):
            value = _from_string(name, value)
            if value == "":
                continue
        layer[name] = _Setting(value, str(key), source, path)
    return layer
