"""Training settings: precedence, provenance, parsing and the user-facing errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinbot.errors import TwinbotError
from twinbot.finetune.config import ENV_KEYS, PRESETS, ResolvedConfig, TrainConfig, resolve_train_config
from twinbot.finetune.overnight import ENV_KEYS as OVERNIGHT_KEYS

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve(
    cli: dict | None = None,
    environ: dict[str, str] | None = None,
    dotenv: str | None = None,
    yaml: str | None = None,
    overrides: tuple[str, ...] = (),
    tmp_path: Path | None = None,
) -> ResolvedConfig:
    dotenv_path = yaml_path = None
    if dotenv is not None:
        assert tmp_path is not None
        dotenv_path = tmp_path / ".env"
        dotenv_path.write_text(dotenv, encoding="utf-8")
    if yaml is not None:
        assert tmp_path is not None
        yaml_path = tmp_path / "train.yaml"
        yaml_path.write_text(yaml, encoding="utf-8")
    return resolve_train_config(
        cli or {}, yaml_path=yaml_path, overrides=overrides, environ=environ or {}, dotenv_path=dotenv_path
    )


def test_defaults_use_fast_preset() -> None:
    resolved = resolve()
    config = resolved.config
    assert config.preset == "fast"
    assert config.packing is True and config.batch_size == "auto" and config.gradient_accumulation_steps == 1
    assert config.use_fp16 is True and config.gradient_checkpointing is False
    assert resolved.sources["packing"] == "preset:fast"
    assert resolved.sources["lora_r"] == "default"
    assert resolved.sources["preset"] == "default"
    assert set(resolved.sources) == set(TrainConfig.model_fields)


@pytest.mark.parametrize(
    ("preset", "ga", "fp16", "lr"),
    [("baseline", 16, False, 2e-4), ("optimized", 32, True, 2.5e-4), ("aggressive", 64, True, 3e-4)],
)
def test_origin_presets(preset: str, ga: int, fp16: bool, lr: float) -> None:
    config = resolve(cli={"preset": preset}).config
    assert (config.gradient_accumulation_steps, config.use_fp16, config.learning_rate) == (ga, fp16, lr)
    assert config.batch_size == 1 and config.epochs == 1 and config.gradient_checkpointing is True
    assert config.packing is False


def test_each_level_beats_the_next(tmp_path: Path) -> None:
    yaml = "learning_rate: 1.0e-5\nlora_r: 4\nseed: 1\nepochs: 3\n"
    dotenv = "LEARNING_RATE=2e-5\nLORA_R=8\nSEED=2\n"
    environ = {"LEARNING_RATE": "3e-5", "LORA_R": "12", "UNRELATED": "x"}
    cli = {"learning_rate": 4e-5, "data_dir": None}
    resolved = resolve(cli=cli, environ=environ, dotenv=dotenv, yaml=yaml, tmp_path=tmp_path)
    config, sources = resolved.config, resolved.sources
    assert (config.learning_rate, sources["learning_rate"]) == (4e-5, "cli")
    assert (config.lora_r, sources["lora_r"]) == (12, "environment")
    assert (config.seed, sources["seed"]) == (2, ".env")
    assert (config.epochs, sources["epochs"]) == (3, f"yaml:{tmp_path / 'train.yaml'}")
    assert (config.gradient_accumulation_steps, sources["gradient_accumulation_steps"]) == (1, "preset:fast")
    assert (config.lora_alpha, sources["lora_alpha"]) == (32, "default")
    assert config.data_dir is None and sources["data_dir"] == "default"  # None on the CLI means "not given"


def test_preset_is_resolved_first_with_same_precedence(tmp_path: Path) -> None:
    # YAML picks baseline, .env picks aggressive: .env wins, and the preset's values follow it.
    resolved = resolve(dotenv="PRESET=aggressive\n", yaml="preset: baseline\n", tmp_path=tmp_path)
    assert resolved.config.preset == "aggressive"
    assert resolved.sources["preset"] == ".env"
    assert resolved.config.gradient_accumulation_steps == 64
    assert resolved.sources["gradient_accumulation_steps"] == "preset:aggressive"
    # A setting given explicitly at any level beats the preset.
    resolved = resolve(cli={"preset": "baseline"}, yaml="gradient_accumulation_steps: 4\n", tmp_path=tmp_path)
    assert resolved.config.gradient_accumulation_steps == 4


def test_set_accepts_field_names_and_env_keys() -> None:
    resolved = resolve(overrides=("LEARNING_RATE=1e-3", "lora_r=8", "max-steps=5"))
    assert resolved.config.learning_rate == 1e-3 and resolved.sources["learning_rate"] == "--set"
    assert resolved.config.lora_r == 8 and resolved.config.max_steps == 5
    # --set is command line: it beats the environment.
    resolved = resolve(environ={"LORA_R": "4"}, overrides=("LORA_R=64",))
    assert resolved.config.lora_r == 64


def test_set_errors() -> None:
    with pytest.raises(TwinbotError, match="NOT_A_SETTING: unknown setting"):
        resolve(overrides=("NOT_A_SETTING=1",))
    with pytest.raises(TwinbotError, match="expected KEY=VALUE"):
        resolve(overrides=("LORA_R",))
    with pytest.raises(TwinbotError, match="given twice"):
        resolve(cli={"epochs": 2.0}, overrides=("EPOCHS=3",))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("TRUE", True),
    ],
)
def test_bool_parsing(raw: str, expected: bool) -> None:
    config = resolve(environ={"USE_FP16": raw, "GRADIENT_CHECKPOINTING": raw, "PACKING": raw}).config
    assert (
        config.use_fp16 is expected
        and config.gradient_checkpointing is expected
        and config.packing is expected
    )


def test_bad_bool_names_key_and_source() -> None:
    with pytest.raises(TwinbotError, match=r"USE_FP16='maybe' \(from environment\)"):
        resolve(environ={"USE_FP16": "maybe"})


def test_torch_compile_is_a_bool_or_auto() -> None:
    assert resolve().config.torch_compile == "auto"  # the fast preset's
    assert resolve(cli={"preset": "baseline"}).config.torch_compile is False
    assert resolve(environ={"TORCH_COMPILE": "AUTO"}).config.torch_compile == "auto"
    assert resolve(environ={"TORCH_COMPILE": "yes"}).config.torch_compile is True
    with pytest.raises(TwinbotError, match=r"TORCH_COMPILE='maybe' \(from environment\)"):
        resolve(environ={"TORCH_COMPILE": "maybe"})


def test_bad_learning_rate_names_key_source_and_file(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError) as info:
        resolve(dotenv="LEARNING_RATE=abc\n", tmp_path=tmp_path)
    message = str(info.value)
    assert "LEARNING_RATE='abc'" in message and "(from .env)" in message
    assert info.value.path == tmp_path / ".env"
    assert "\n" not in message


def test_batch_size_zero_is_an_error() -> None:
    with pytest.raises(TwinbotError, match=r"BATCH_SIZE='0' \(from environment\).*>= 1 or 'auto'"):
        resolve(environ={"BATCH_SIZE": "0"})
    with pytest.raises(TwinbotError, match=r"batch_size=0 \(from cli\)"):
        resolve(cli={"batch_size": 0})
    assert resolve(environ={"BATCH_SIZE": "AUTO"}).config.batch_size == "auto"
    assert resolve(environ={"BATCH_SIZE": "8"}).config.batch_size == 8


def test_range_checks_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match=r"lora_dropout=1\.5 \(from yaml:"):
        resolve(yaml="lora_dropout: 1.5\n", tmp_path=tmp_path)
    with pytest.raises(TwinbotError, match=r"EPOCHS='-1' \(from --set\)"):
        resolve(overrides=("EPOCHS=-1",))
    with pytest.raises(TwinbotError, match="DEVICE='tpu'"):
        resolve(environ={"DEVICE": "tpu"})


def test_unknown_preset() -> None:
    with pytest.raises(
        TwinbotError, match=r"PRESET='turbo' \(from environment\) is not a preset; use one of"
    ):
        resolve(environ={"PRESET": "turbo"})
    with pytest.raises(TwinbotError, match=r"preset='turbo' \(from cli\)"):
        resolve(cli={"preset": "turbo"})


def test_yaml_accepts_field_names_and_env_keys(tmp_path: Path) -> None:
    yaml = "PRESET: optimized\nlearning_rate: 2e-4\nUSE_FP16: no\nmax_steps: 7\nbase_model: my/model\n"
    resolved = resolve(yaml=yaml, tmp_path=tmp_path)
    config = resolved.config
    assert config.preset == "optimized" and config.gradient_accumulation_steps == 32
    assert config.learning_rate == 2e-4  # PyYAML reads 2e-4 as a string; it is still parsed as a number
    assert config.use_fp16 is False and config.max_steps == 7 and config.base_model == "my/model"
    assert resolved.sources["use_fp16"].startswith("yaml:")


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match="unknown setting 'lerning_rate'"):
        resolve(yaml="lerning_rate: 1\n", tmp_path=tmp_path)
    with pytest.raises(TwinbotError, match="expected a YAML mapping"):
        resolve(yaml="- a\n- b\n", tmp_path=tmp_path)
    with pytest.raises(TwinbotError, match="not valid YAML"):
        resolve(yaml="a: [1\n", tmp_path=tmp_path)
    with pytest.raises(TwinbotError, match="cannot read config file"):
        resolve_train_config({}, yaml_path=tmp_path / "missing.yaml", environ={}, dotenv_path=None)


def test_empty_and_none_values(tmp_path: Path) -> None:
    # Empty .env values are "not set": the YAML value below shows through.
    resolved = resolve(dotenv="MAX_STEPS=\nLORA_R=\n", yaml="max_steps: 9\n", tmp_path=tmp_path)
    assert resolved.config.max_steps == 9
    # 'none' clears an optional setting from a lower level.
    resolved = resolve(environ={"MAX_STEPS": "none"}, yaml="max_steps: 9\n", tmp_path=tmp_path)
    assert resolved.config.max_steps is None and resolved.sources["max_steps"] == "environment"


def test_seed_keys_keep_their_names() -> None:
    seed_keys = {
        "base_model": "BASE_MODEL",
        "data_dir": "DATA_DIR",
        "output_dir": "OUTPUT_DIR",
        "epochs": "EPOCHS",
        "batch_size": "BATCH_SIZE",
        "gradient_accumulation_steps": "GRADIENT_ACCUMULATION_STEPS",
        "learning_rate": "LEARNING_RATE",
        "use_fp16": "USE_FP16",
        "gradient_checkpointing": "GRADIENT_CHECKPOINTING",
        "lora_r": "LORA_R",
        "lora_alpha": "LORA_ALPHA",
        "lora_dropout": "LORA_DROPOUT",
    }
    for field, key in seed_keys.items():
        assert ENV_KEYS[field] == key
    config = resolve(environ={key: "2" for key in ("EPOCHS", "BATCH_SIZE", "LORA_R")}).config
    assert (config.epochs, config.batch_size, config.lora_r) == (2, 2, 2)


def test_presets_only_set_known_fields_and_validate() -> None:
    for name, values in PRESETS.items():
        assert set(values) <= set(TrainConfig.model_fields)
        TrainConfig(preset=name, **values)


def test_config_is_frozen_and_strict() -> None:
    config = TrainConfig()
    with pytest.raises(Exception, match="frozen"):
        config.lora_r = 3  # type: ignore[misc]
    with pytest.raises(Exception, match="Extra inputs"):
        TrainConfig(not_a_field=1)  # type: ignore[call-arg]


def test_describe_lists_every_setting_with_key_and_source(tmp_path: Path) -> None:
    resolved = resolve(environ={"LORA_R": "8"}, dotenv="DATA_DIR=mydata\n", tmp_path=tmp_path)
    lines = resolved.describe().splitlines()
    assert lines[0].split() == ["setting", "value", "env", "key", "source"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == set(TrainConfig.model_fields)
    assert rows["lora_r"] == ["lora_r", "8", "LORA_R", "environment"]
    assert rows["data_dir"] == ["data_dir", "mydata", "DATA_DIR", ".env"]
    assert rows["packing"] == ["packing", "true", "PACKING", "preset:fast"]
    assert rows["base_model"][1:] == ["(embedded", "default)", "BASE_MODEL", "default"]


def test_env_example_documents_every_key_and_resolves(tmp_path: Path) -> None:
    example = REPO_ROOT / ".env.example"
    lines = example.read_text(encoding="utf-8").splitlines()
    assignments = {
        line.split("=", 1)[0]: i for i, line in enumerate(lines) if line and not line.startswith("#")
    }
    assert set(assignments) == set(ENV_KEYS.values()) | set(OVERNIGHT_KEYS)  # + the unattended-run keys
    for key, index in assignments.items():
        assert lines[index - 1].startswith("# "), f"{key} has no comment line"
    resolved = resolve_train_config({}, environ={}, dotenv_path=example)
    assert resolved.config.preset == "fast" and resolved.sources["preset"] == ".env"
    # Empty values in the example must not shadow the preset.
    assert resolved.sources["gradient_accumulation_steps"] == "preset:fast"


def _run_train_lora(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS.values()}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "training" / "train_lora.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_train_lora_print_config_reads_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PRESET=baseline\nLEARNING_RATE=1e-4\nDATA_DIR=d\n", encoding="utf-8")
    result = _run_train_lora(["--print-config"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert rows["preset"][1:] == ["baseline", "PRESET", ".env"]
    assert rows["learning_rate"][1:] == ["0.0001", "LEARNING_RATE", ".env"]
    assert rows["gradient_accumulation_steps"][1:] == ["16", "GRADIENT_ACCUMULATION_STEPS", "preset:baseline"]


def test_train_lora_bad_value_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BATCH_SIZE=0\n", encoding="utf-8")
    result = _run_train_lora(["--print-config"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "BATCH_SIZE='0' (from .env)" in result.stderr
    assert "Traceback" not in result.stderr
