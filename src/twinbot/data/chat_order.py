"""Time order inside a chat: one sort key for naive and aware timestamps, and the stable per-chat sort.

`time_key` is integer microseconds since the Unix epoch: aware timestamps on the UTC clock, naive ones
(local wall-clock time, e.g. WhatsApp) read as if they were UTC. So a chat that mixes both kinds orders
without `TypeError`, gaps are whole numbers (no `timedelta.seconds` trap) and equal times stay equal.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from twinbot.data.records import Message

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_timestamp_of = attrgetter("timestamp")


def time_key(ts: datetime) -> int:
    """Microseconds since 1970-01-01 (UTC for aware timestamps, the naive wall clock read as UTC)."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        return (ts.replace(tzinfo=None) - _EPOCH_NAIVE) // _ONE_US
    return (ts - UNIX_EPOCH) // _ONE_US


def sort_chat(messages: list[Message]) -> list[Message]:
    """Sort one chat's messages by time in place, stable for equal times (no work when already sorted)."""
    try:  # fast path: all aware or all naive, compared directly
        if any(b.timestamp < a.timestamp for a, b in itertools.pairwise(messages)):
            messages.sort(key=_timestamp_of)
    except TypeError:  # a mix of aware and naive timestamps
        messages.sort(key=lambda m: time_key(m.timestamp))
    return messages
