"""Shared fixtures. Models and trained runs are session-scoped and built once per test run: the workers of
`pytest -n 2` (`make test`) share them through the run's temp folder, each built by the first to need it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from support.runs import TrainedRun

# Tests never reach the Hugging Face hub: a hub lookup fails at once instead of retrying for a minute.
# (huggingface_hub reads this when first imported, so it is set before any test imports transformers.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Training in tests (and in the `twinbot train` processes they start) never keeps the machine awake, shows
# desktop notifications or posts to a webhook of the developer's (twinbot.finetune.overnight).
os.environ.update(ALLOW_SLEEP="true", DESKTOP_NOTIFY="false")
# rich wraps tables and summaries at the terminal width (80 in a pipe): a long checkout path must not split
# the words the tests look for
os.environ["COLUMNS"] = "240"
os.environ.pop("NOTIFY_URL", None)

# `make test` runs two pytest-xdist workers, each test module on one of them (`--dist loadfile`), so that its
# module-scoped fixtures are built once. The slowest modules start first, so that the workers end together;
# test_train_e2e first, as it trains the embedded run (`embedded_run`) that test_evaluate and test_export
# read later.
SLOW_MODULES = (
    "test_train_e2e",
    "test_workers",
    "test_train",
    "test_export_families",
    "test_export",
    "test_evaluate",
    "test_plan",
    "test_families",
)


def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker computes on its share of the cores: torch's threads of several workers on the
    same cores would wait on each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: index for index, name in enumerate(SLOW_MODULES)}
        items.sort(key=lambda item: rank.get(item.path.stem, len(SLOW_MODULES)))


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """`name` in the temp folder of this test run, the same for every pytest-xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def build_once(path: Path, build: Callable[[], object]) -> Path:
    """`build()` (which makes `path`) unless a worker of this test run did; the others wait for it."""
    from filelock import FileLock

    done = path.with_name(path.name + ".done")
    with FileLock(path.with_name(path.name + ".lock")):
        if not done.exists():
            build()
            done.touch()
    return path


@pytest.fixture(scope="session", autouse=True)
def twinbot_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The twinbot cache for this session: `$TWINBOT_CACHE` when set (CI, reuse between runs), else a temp
    folder, so tests never write into the user's real cache."""
    preset = os.environ.get("TWINBOT_CACHE")
    if preset:
        yield Path(preset)
        return
    path = shared_dir(tmp_path_factory, "twinbot-cache")
    path.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TWINBOT_CACHE", str(path))
        yield path


@pytest.fixture(scope="session", autouse=True)
def gguf_files_decoded_once() -> Iterator[None]:
    """twinbot decodes a GGUF file once per load (models.gguf_import.gguf_decoded_once); in a test session,
    each unchanged file once for the whole session. (Not on Windows, where a file mapped into memory cannot
    be replaced or deleted.)"""
    if sys.platform == "win32":
        yield
        return
    from twinbot.models.gguf_import import gguf_decoded_once

    with gguf_decoded_once():
        yield


@pytest.fixture(scope="session")
def embedded_model_dir(twinbot_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2-135M-Instruct imported into an HF folder (once per test run / cache)."""
    from filelock import FileLock

    from twinbot.models.loading import resolve_model

    with FileLock(shared_dir(tmp_path_factory, "embedded-import.lock")):
        return Path(resolve_model(None))


@pytest.fixture(scope="session")
def tiny_model_dir(twinbot_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) with the real SmolLM2 tokenizer and chat template.
    `$TWINBOT_TINY_MODEL` names one built beforehand by `make_tiny_model`, for machines that lack the
    embedded model it takes its tokenizer from (the GPU machine that runs tests/test_gpu.py)."""
    from support.tiny import make_tiny_model

    prebuilt = os.environ.get("TWINBOT_TINY_MODEL")
    if prebuilt:
        return Path(prebuilt)
    path = shared_dir(tmp_path_factory, "tiny-model")
    return build_once(path, lambda: make_tiny_model(path, seed=0))


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A RUN of the tiny model trained by `twinbot train` (support.runs.tiny_run_config), shared: read it, or
    change a copy (support.runs.copy_run)."""
    from support.runs import TrainedRun, tiny_run_config, train_tiny_run

    root = shared_dir(tmp_path_factory, "tiny-run")
    config = tiny_run_config(tiny_model_dir, root)
    build_once(root, lambda: train_tiny_run(config))
    return TrainedRun(root / "run", config)


@pytest.fixture(scope="session")
def embedded_run(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A RUN of the embedded default trained by `twinbot train`'s `fast` preset on the bundled sample
    (support.runs.EMBEDDED_OVERRIDES, minutes), shared: read it, or change a copy (support.runs.copy_run)."""
    from support.runs import TrainedRun, embedded_run_settings, train_embedded_run

    root = shared_dir(tmp_path_factory, "embedded-run")
    settings = embedded_run_settings(root)
    build_once(root, lambda: train_embedded_run(settings))
    return TrainedRun(root / "run", settings.config)
