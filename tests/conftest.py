"""Shared fixtures. Model fixtures are session-scoped: the embedded import and the tiny model are built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never reach the Hugging Face hub: a hub lookup fails at once instead of retrying for a minute.
# (huggingface_hub reads this when first imported, so it is set before any test imports transformers.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def twinbot_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The twinbot cache for this session: `$TWINBOT_CACHE` when set (CI, reuse between runs), else a temp
    folder, so tests never write into the user's real cache."""
    preset = os.environ.get("TWINBOT_CACHE")
    if preset:
        yield Path(preset)
        return
    path = tmp_path_factory.mktemp("twinbot-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TWINBOT_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def embedded_model_dir(twinbot_cache: Path) -> Path:
    """The embedded SmolLM2-135M-Instruct imported into an HF folder (once per session / cache)."""
    from twinbot.models.loading import resolve_model

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

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", seed=0)
