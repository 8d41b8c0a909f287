"""Instagram "Download your information" JSON: the same files as Messenger's (see messenger.py).

Only the platform name and the detection differ. `messenger.detect_platform` calls a Meta export
Instagram when its path says so (`your_instagram_activity/`, an `instagram-...zip`) or, failing that, when
its messages look like Instagram's (`share.original_content_owner`, no `type` field); anything undecidable
is Messenger. Detection tries messenger before instagram, and each accepts only its own platform.
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
    return parse_meta(path, "instagram")
