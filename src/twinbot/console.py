"""What the commands print besides their results: status lines on stderr, and quiet libraries."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """One status line on stderr, printed around any progress bar on screen."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def quiet_transformers() -> None:
    """No download bars, info logs or deprecation notices from library internals between our lines."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
