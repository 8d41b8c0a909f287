"""Instagram "Download your information" JSON: the same files as Messenger's (see messenger.py).

Only the detection differs: `messenger.detect_platform` calls a Meta export Instagram when its path says so
(`your_instagram_activity/`, an `instagram-...zip`) or its messages carry Instagram-only fields
(`share.original_content_owner`). Either module labels each thread with the platform its path or fields
show, `meta` when they show neither (messenger.py's docstring lists the evidence).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from twinbot.data.records import Message
from twinbot.data.sources import ParseOptions
from twinbot.data.sources.messenger import detect_platform, parse_meta

NAME = "instagram"


def sniff(path: Path) -> bool:
    return detect_platform(path) == "instagram"


def parse(path: Path, options: ParseOptions | None = None) -> Iterator[Message]:
    return parse_meta(path)
