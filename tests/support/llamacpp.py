"""Helpers for tests of the llama.cpp backend."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch


def pick_a_word_slowly(backend: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Makes `backend`'s llama.cpp decoder always pick the word " la" (a random model could end its reply
    early), a step at most every 20 ms: long replies that a test can stop midway. Returns the count of the
    logits it gave, under "scores"."""
    word = backend.tokenizer.encode(" la", add_special_tokens=False)[0]
    counted = {"scores": 0}
    real = backend.decoder._scores

    def scores(row: Any, index: int) -> torch.Tensor:
        counted["scores"] += 1
        time.sleep(0.02)
        logits = real(row, index).clone()
        logits[0, word] += 1000.0
        return logits

    monkeypatch.setattr(backend.decoder, "_scores", scores)
    return counted
