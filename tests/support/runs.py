"""The trained RUN folders that several test modules read, and how each is made. conftest.py builds each one
once per test run (`tiny_run`, `embedded_run`); a test that changes a run works on a copy (`copy_run`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from support.training import FIXTURE_DATA, make_config
from twinbot.finetune.config import ResolvedConfig, TrainConfig, resolve_train_config
from twinbot.runs import CHECKPOINTS_DIR


@dataclass(frozen=True)
class TrainedRun:
    """A RUN folder that `twinbot train` finished, and the settings it trained with."""

    path: Path
    config: TrainConfig


def copy_run(run: TrainedRun, destination: Path) -> Path:
    """A copy of `run`'s folder (without its checkpoints) to change, e.g. by evaluating it."""
    shutil.copytree(run.path, destination, ignore=shutil.ignore_patterns(CHECKPOINTS_DIR))
    return destination


# --- the tiny model ------------------------------------------------------------------------------------------

TINY_RUN_STEPS = 2


def tiny_run_config(model_dir: Path, root: Path) -> TrainConfig:
    """The test settings for TINY_RUN_STEPS steps on a copy of the fixture data (train and eval samples)."""
    return make_config(model_dir, root / "run", root / "data", max_steps=TINY_RUN_STEPS)


def train_tiny_run(config: TrainConfig) -> None:
    from twinbot.finetune.recipe import main as train_main

    assert config.data_dir is not None
    shutil.copytree(FIXTURE_DATA, config.data_dir)
    train_main(config)


# --- the embedded default model -----------------------------------------------------------------------------

# `twinbot train`'s default `fast` preset (packed rows, shared beginnings) with short rows so that many
# optimizer steps fit in the time, and a higher learning rate than the preset's 2.5e-4: enough for the
# adapter to move the style towards the persona reliably (test_evaluate). One process (the batch of 2 is the one 2 processes would share: the same update) and no
# torch.compile (compiling the 135M model takes ~35 s on 2 cores, more than the 24 steps themselves):
# test_workers and test_train check that several processes and a compiled run train the same adapter.
EMBEDDED_STEPS = 24
EMBEDDED_OVERRIDES = (
    "BATCH_SIZE=2",
    "PROCESSES=1",
    "TORCH_COMPILE=off",
    "ROW_TOKENS=128",
    "MAX_SEQ_LEN=128",
    "LEARNING_RATE=1e-3",
    "SEED=0",
    f"EVAL_EVERY={EMBEDDED_STEPS}",
    "EVAL_MAX_SAMPLES=4",
    f"SAVE_EVERY={EMBEDDED_STEPS}",
)


def embedded_run_settings(root: Path) -> ResolvedConfig:
    """The `fast` preset with EMBEDDED_OVERRIDES for the bundled sample prepared into `root`/data."""
    cli = {
        "preset": "fast",
        "data_dir": root / "data",
        "output_dir": root / "run",
        "max_steps": EMBEDDED_STEPS,
    }
    return resolve_train_config(cli=cli, overrides=list(EMBEDDED_OVERRIDES), environ={}, dotenv_path=None)


def train_embedded_run(settings: ResolvedConfig) -> None:
    """The bundled sample (persona Juno) prepared, then the embedded SmolLM2-135M trained on it."""
    from twinbot.demo import prepare_sample
    from twinbot.finetune.recipe import main as train_main

    assert settings.config.data_dir is not None
    prepare_sample(settings.config.data_dir)
    train_main(settings.config, sources=settings.sources)
