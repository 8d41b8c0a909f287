"""Pre-filters: which messages never become training text, each with a named reason for the report.

Two kinds:
- per message (`MessageFilter`): system / call / media-only records, bot authors, bot commands (`!play`,
  `/roll 2d6`), link-only messages, empty text, too short / too long text;
- per chat, over messages already in time order (`sequence_drop_reasons`):
  * duplicate: the same author sent the same text (whitespace-trimmed) in the same chat less than
    `duplicate_window_s` seconds earlier (double sends, copy-paste repeats). Default 5 minutes.
  * spam_burst: more than `burst_max_messages` messages of one author within `burst_window_s` seconds
    (sliding window over all of that author's messages that reached this stage); every message past the
    limit is dropped, the first `burst_max_messages` of the burst are kept. Default: more than 8 within
    5 seconds, which no one types by hand. Chats whose timestamps carry no seconds (WhatsApp on Android
    writes HH:MM) cannot tell a burst from a fast typist, so the burst filter skips them.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from twinbot.data.records import Message

DropReason = Literal[
    "system",
    "call",
    "media_only",
    "bot",
    "bot_command",
    "empty",
    "link_only",
    "too_short",
    "too_long",
    "duplicate",
    "spam_burst",
]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)

# Well-known chat bots, matched case-insensitively against the display name and the author id.
DEFAULT_BOT_NAMES: frozenset[str] = frozenset(
    {
        "mee6",
        "dyno",
        "carl-bot",
        "rythm",
        "groovy",
        "fredboat",
        "hydra",
        "mudae",
        "dank memer",
        "tatsu",
        "unbelievaboat",
        "pokétwo",
        "poketwo",
        "statbot",
        "arcane",
        "yagpdb.xyz",
        "slackbot",
        "ifttt",
        "zapier",
        "github",
    }
)

# One whitespace-free token that is a link (Discord's "<...>" form too). Messages are split on whitespace
# first: a pattern that repeats links itself backtracks exponentially on "www.www.www...".
_LINK = re.compile(r"<?(?:https?://|www\.)\S+", re.IGNORECASE)
_DISCRIMINATOR = re.compile(r"#\d{4}$")
_US_PER_S = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_S


@dataclass(frozen=True, slots=True)
class FilterOptions:
    drop_system: bool = True
    drop_calls: bool = True
    drop_media_only: bool = True
    drop_bots: bool = True
    bot_names: frozenset[str] = DEFAULT_BOT_NAMES
    drop_bot_commands: bool = True
    command_prefixes: str = "!/"
    drop_link_only: bool = True
    min_chars: int = 1  # after trimming whitespace
    max_chars: int = 2000
    duplicate_window_s: float = 300.0  # 0 disables
    burst_max_messages: int = 8
    burst_window_s: float = 5.0  # 0 disables
    _command: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _bot_names: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        command = None
        if self.drop_bot_commands and self.command_prefixes:
            command = re.compile(rf"[{re.escape(self.command_prefixes)}][A-Za-z][\w-]*(?=\s|$)")
        object.__setattr__(self, "_command", command)
        object.__setattr__(self, "_bot_names", frozenset(name.casefold() for name in self.bot_names))


def is_link_only(text: str) -> bool:
    """Whether `text` is nothing but links."""
    tokens = text.split()
    return bool(tokens) and all(_LINK.fullmatch(token) for token in tokens)


def is_bot_author(message: Message, options: FilterOptions) -> bool:
    if message.is_bot:
        return True
    names = options._bot_names
    if not names:
        return False
    name = message.author.casefold()
    return (
        name in names
        or _DISCRIMINATOR.sub("", name) in names
        or (bool(message.author_id) and message.author_id.casefold() in names)
    )


class MessageFilter:
    """The reason a message alone is not training text (None keeps it), for a stream of messages:
    remembers which authors are bots by name."""

    __slots__ = ("_bot_by_name", "options")

    def __init__(self, options: FilterOptions) -> None:
        self.options = options
        self._bot_by_name: dict[tuple[str, str], bool] = {}

    def __call__(self, message: Message) -> DropReason | None:
        options = self.options
        kind = message.kind
        if kind != "text":
            if kind == "system" and options.drop_system:
                return "system"
            if kind == "call" and options.drop_calls:
                return "call"
            if kind == "media" and options.drop_media_only:
                return "media_only"
        if options.drop_bots:
            if message.is_bot:
                return "bot"
            key = (message.author_id, message.author)
            bot = self._bot_by_name.get(key)
            if bot is None:
                bot = self._bot_by_name[key] = is_bot_author(message, options)
            if bot:
                return "bot"
        text = message.text.strip()
        if not text:
            return "empty"
        command = options._command
        if command is not None and text[0] in options.command_prefixes and command.match(text):
            return "bot_command"
        if options.drop_link_only and ("://" in text or "www." in text.lower()) and is_link_only(text):
            return "link_only"
        if len(text) < options.min_chars:
            return "too_short"
        if len(message.text) > options.max_chars:
            return "too_long"
        return None


def sequence_drop_reasons(
    messages: Sequence[Message], times_us: Sequence[int], options: FilterOptions
) -> list[DropReason | None]:
    """Duplicate and spam-burst reasons for one chat's messages in time order (`times_us[i]` is
    `messages[i]`'s time in microseconds, see `chat_order.time_key`); None keeps the message."""
    reasons: list[DropReason | None] = [None] * len(messages)
    dup_window = int(options.duplicate_window_s * _US_PER_S)
    burst_window = int(options.burst_window_s * _US_PER_S)
    burst_max = options.burst_max_messages
    check_bursts = burst_window > 0 and burst_max > 0 and any(t % _US_PER_MINUTE for t in times_us)
    last_seen: dict[tuple[str, str], int] = {}
    prune_at = 4096  # drop expired last_seen entries whenever the dict doubles: bounded memory, linear time
    recent: dict[str, deque[int]] = {}  # per author: times of the last `burst_max` messages
    for i, message in enumerate(messages):
        now = times_us[i]
        if dup_window > 0:
            key = (message.author_id, message.text.strip())
            previous = last_seen.get(key)
            if previous is not None and now - previous < dup_window:
                reasons[i] = "duplicate"
            last_seen[key] = now
            if len(last_seen) > prune_at:
                last_seen = {k: t for k, t in last_seen.items() if now - t < dup_window}
                prune_at = max(4096, 2 * len(last_seen))
        if check_bursts:
            window = recent.get(message.author_id)
            if window is None:
                window = recent[message.author_id] = deque(maxlen=burst_max)
            # Past the limit when the author's last `burst_max` messages all fall inside the window.
            if len(window) == burst_max and now - window[0] <= burst_window and reasons[i] is None:
                reasons[i] = "spam_burst"
            window.append(now)
    return reasons
