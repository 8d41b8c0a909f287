"""`twinbot discord RUN`: the persona as a Discord bot (discord.py).

Who it answers: in servers, messages that mention it and every message of the channels given with
--channel; direct messages only with --dms (without it a DM gets no reply at all, not even a refusal, so
strangers cannot tell the bot is there). --allow-guild limits the servers and --allow-user the people (in
servers and DMs); messages from anywhere or anyone else are ignored silently. With --dms and no
--allow-user, a warning at start says that anyone who can DM the bot can question the model.

It ignores bots (itself included), rate-limits each user, shows "typing..." while it generates (off the
event loop), and remembers a short per-channel history. At most --max-pending messages wait for (or are
in) generation; past that a message is dropped with one short "busy" reply, at most one per user per
minute (or per --rate-limit, if longer), so a flood cannot make the bot spam. A reply made of several
lines goes out as several messages, the way the persona writes, but never more than
--max-messages-per-reply: the lines past the last one allowed join it, and whatever would not fit in its
2,000 characters (Discord's limit, at which long lines are split) is dropped.

The token comes only from the DISCORD_TOKEN environment variable, and is never printed.
DISCORD_ALLOW_USERS and DISCORD_ALLOW_GUILDS (comma-separated ids) fill an allow-list not given on the
command line. Nothing here logs message text.

`TwinDiscordBot.handle` holds all message logic and needs no network: tests drive it with fake messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from twinbot.bot.generate import GenerationSettings
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError

if TYPE_CHECKING:
    from twinbot.bot.backends import Backend

DISCORD_LIMIT = 2000
TOKEN_VARIABLE = "DISCORD_TOKEN"
ALLOW_USERS_VARIABLE = "DISCORD_ALLOW_USERS"
ALLOW_GUILDS_VARIABLE = "DISCORD_ALLOW_GUILDS"
BUSY_REPLY = "busy right now, try again in a minute"
# a user hears BUSY_REPLY at most once per this many seconds (or per rate limit, if longer)
BUSY_REPLY_INTERVAL_SECONDS = 60.0
log = logging.getLogger("twinbot.discord")


@dataclass(frozen=True)
class DiscordOptions:
    channels: frozenset[int] = frozenset()  # channels where the bot answers every message
    history: int = 10  # recent messages per channel in the prompt
    rate_limit_seconds: float = 5.0  # between two replies to the same user
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    allowed_users: frozenset[int] = frozenset()  # when not empty, only these users get replies
    allowed_guilds: frozenset[int] = frozenset()  # when not empty, messages in other servers are ignored
    dms: bool = False  # answer direct messages
    max_pending: int = 8  # messages waiting for (or in) generation; more get a busy reply and are dropped
    max_messages_per_reply: int = 5

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_messages_per_reply < 1:
            raise TwinbotError("--max-pending and --max-messages-per-reply must be at least 1")


@dataclass(frozen=True)
class SeenMessage:
    author_id: int
    author: str
    text: str
    from_bot: bool  # written by this bot


# (history, names of the people in it) -> reply text; runs in a worker thread
Generate = Callable[[list[ChatTurn], tuple[str, ...]], str]


def split_for_discord(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """One message per non-empty line; lines over `limit` split at the last space (else hard) before it."""
    chunks: list[str] = []
    for line in text.split("\n"):
        rest = line.strip()
        while len(rest) > limit:
            cut = rest.rfind(" ", 0, limit + 1)
            if cut <= 0:
                cut = limit
            chunks.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip()
        if rest:
            chunks.append(rest)
    return chunks


def cap_messages(chunks: list[str], max_messages: int, limit: int = DISCORD_LIMIT) -> list[str]:
    """At most `max_messages` messages: the chunks past the last one allowed join it, one per line, cut at
    `limit` characters (at a space or line break, else hard); what does not fit is dropped."""
    if len(chunks) <= max_messages:
        return chunks
    last = "\n".join(chunks[max_messages - 1 :])
    if len(last) > limit:
        cut = max(last.rfind(" ", 0, limit + 1), last.rfind("\n", 0, limit + 1))
        last = last[: cut if cut > 0 else limit].rstrip()
    return [*chunks[: max_messages - 1], last]


class TwinDiscordBot:
    """Decides whether to answer a message and answers it; independent of the discord.py client."""

    def __init__(
        self,
        generate: Generate,
        options: DiscordOptions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generate = generate
        self.options = options
        self.clock = clock
        self.user_id: int | None = None  # set when the client is ready
        self.histories: dict[int, deque[SeenMessage]] = {}
        self.last_reply_at: dict[int, float] = {}
        self.last_busy_reply_at: dict[int, float] = {}
        self.pending = 0  # messages accepted and not answered yet, the one generating included
        self._generation_lock = asyncio.Lock()  # one generation at a time: they share one model

    def is_allowed(self, message: Any) -> bool:
        """--dms and the allow-lists; whatever fails them is ignored without a trace."""
        if message.guild is None:
            if not self.options.dms:
                return False
        elif self.options.allowed_guilds and message.guild.id not in self.options.allowed_guilds:
            return False
        return not self.options.allowed_users or message.author.id in self.options.allowed_users

    def is_addressed(self, message: Any) -> bool:
        if message.guild is None:
            return True
        if message.channel.id in self.options.channels:
            return True
        return self.user_id is not None and any(user.id == self.user_id for user in message.mentions)

    def clean_text(self, content: str) -> str:
        """The message without mentions of this bot."""
        if self.user_id is not None:
            content = re.sub(rf"<@!?{self.user_id}>", " ", content)
        return re.sub(r"[ \t]+", " ", content).strip()

    def _history(self, channel_id: int) -> deque[SeenMessage]:
        history = self.histories.get(channel_id)
        if history is None:
            history = deque(maxlen=max(1, self.options.history))
            self.histories[channel_id] = history
        return history

    def _rate_limited(self, user_id: int) -> bool:
        last = self.last_reply_at.get(user_id)
        return last is not None and self.clock() - last < self.options.rate_limit_seconds

    async def handle(self, message: Any) -> list[str]:
        """Answer `message` if it is for this bot; returns the messages sent (empty when ignored)."""
        author = message.author
        if author.bot or (self.user_id is not None and author.id == self.user_id):
            return []
        if not self.is_allowed(message) or not self.is_addressed(message):
            return []
        text = self.clean_text(message.content or "")
        if not text:
            return []
        if self._rate_limited(author.id):
            return []
        if self.pending >= self.options.max_pending:
            return await self._reply_busy(message)
        # counted before the first await: discord.py runs each message's handler as its own task
        self.pending += 1
        try:
            return await self._answer(message, text)
        finally:
            self.pending -= 1

    async def _reply_busy(self, message: Any) -> list[str]:
        """The message is dropped; its author hears so once per busy-reply interval, not once per message."""
        user_id = message.author.id
        interval = max(self.options.rate_limit_seconds, BUSY_REPLY_INTERVAL_SECONDS)
        last = self.last_busy_reply_at.get(user_id)
        if last is not None and self.clock() - last < interval:
            return []
        self.last_busy_reply_at[user_id] = self.clock()
        await message.channel.send(BUSY_REPLY)
        return [BUSY_REPLY]

    async def _answer(self, message: Any, text: str) -> list[str]:
        author = message.author
        self.last_reply_at[author.id] = self.clock()
        history = self._history(message.channel.id)
        history.append(SeenMessage(author.id, _display_name(author), text, from_bot=False))
        turns = history_turns(list(history))
        speakers = tuple(dict.fromkeys(seen.author for seen in history if not seen.from_bot))
        async with message.channel.typing(), self._generation_lock:
            try:
                reply = await asyncio.to_thread(self.generate, turns, speakers)
            except TwinbotError as exc:
                log.warning("generation failed: %s", exc)
                return []
            except Exception as exc:  # never let one message take the bot down; no text in the log
                log.warning("generation failed: %s", type(exc).__name__)
                return []
        chunks = cap_messages(split_for_discord(reply), self.options.max_messages_per_reply)
        if not chunks:
            return []
        history.append(SeenMessage(self.user_id or 0, "", "\n".join(chunks), from_bot=True))
        for chunk in chunks:
            await message.channel.send(chunk)
        return chunks


def _display_name(author: Any) -> str:
    for attribute in ("display_name", "global_name", "name"):
        value = getattr(author, attribute, None)
        if isinstance(value, str) and value.strip():
            return value.strip().replace("\n", " ")
    return str(author.id)


def history_turns(history: Sequence[SeenMessage]) -> list[ChatTurn]:
    """Channel history as chat turns, as `prepare` builds them: the bot's messages are the assistant's;
    consecutive messages of one side merge with newlines; with several other people each line reads
    "Name: text"."""
    others = {seen.author_id for seen in history if not seen.from_bot}
    name_lines = len(others) > 1
    turns: list[ChatTurn] = []
    for seen in history:
        role = "assistant" if seen.from_bot else "user"
        text = seen.text
        if name_lines and not seen.from_bot:
            text = "\n".join(f"{seen.author}: {line}" for line in seen.text.split("\n"))
        if turns and turns[-1].role == role:
            turns[-1] = ChatTurn(role=role, content=f"{turns[-1].content}\n{text}")
        else:
            turns.append(ChatTurn(role=role, content=text))
    while turns and turns[0].role == "assistant":
        turns.pop(0)
    return turns


def generator_for(backend: Backend, settings: GenerationSettings) -> Generate:
    from twinbot.bot.generate import speakers_in, with_system_prompt

    def generate(turns: list[ChatTurn], speakers: tuple[str, ...]) -> str:
        names = (*speakers, *speakers_in(turns))  # a "Name:" line of any of them ends the reply
        tuned = replace(settings, other_speakers=(*settings.other_speakers, *names))
        return backend.generate(with_system_prompt(backend, turns), tuned)

    return generate


def discord_token(environ: dict[str, str] | None = None) -> str:
    """DISCORD_TOKEN from the environment only; a one-line error when it is not set."""
    environ = dict(os.environ) if environ is None else environ
    token = (environ.get(TOKEN_VARIABLE) or "").strip()
    if not token:
        raise TwinbotError(
            f"set the {TOKEN_VARIABLE} environment variable to your bot's token (Discord developer portal "
            "-> your application -> Bot -> Reset Token); it is never accepted on the command line"
        )
    return token


def ids_from_environment(variable: str, environ: Mapping[str, str]) -> frozenset[int]:
    """Discord ids separated by commas (or spaces) in `variable`; empty when it is not set."""
    ids: set[int] = set()
    for part in re.split(r"[,\s]+", environ.get(variable, "").strip()):
        if not part:
            continue
        if not re.fullmatch(r"[0-9]+", part):  # the value is not echoed: it might be a pasted secret
            raise TwinbotError(
                f"{variable} must be Discord ids (numbers) separated by commas, e.g. "
                "123456789012345678,234567890123456789; fix or unset it"
            )
        ids.add(int(part))
    return frozenset(ids)


def with_environment_allow_lists(
    options: DiscordOptions, environ: Mapping[str, str] | None = None
) -> DiscordOptions:
    """An allow-list not given on the command line comes from DISCORD_ALLOW_USERS / DISCORD_ALLOW_GUILDS."""
    environ = os.environ if environ is None else environ
    return replace(
        options,
        allowed_users=options.allowed_users or ids_from_environment(ALLOW_USERS_VARIABLE, environ),
        allowed_guilds=options.allowed_guilds or ids_from_environment(ALLOW_GUILDS_VARIABLE, environ),
    )


def access_warning(options: DiscordOptions) -> str | None:
    """The warning printed at start when anyone at all can question the model through DMs."""
    if options.dms and not options.allowed_users:
        return (
            "warning: --dms without --allow-user: anyone who can DM the bot can question a model of your "
            f"private chats; add --allow-user ID (or set {ALLOW_USERS_VARIABLE})"
        )
    return None


def make_client(bot: TwinDiscordBot) -> Any:
    """A discord.py client that feeds every message to `bot.handle`."""
    import discord

    intents = discord.Intents.default()
    intents.message_content = True
    # the model's text may contain @everyone or <@id>: its replies never ping anyone
    client = discord.Client(intents=intents, allowed_mentions=discord.AllowedMentions.none())

    @client.event
    async def on_ready() -> None:
        if client.user is not None:
            bot.user_id = client.user.id
            print(f"logged in as {client.user.name} (id {client.user.id}); waiting for messages", flush=True)

    @client.event
    async def on_message(message: Any) -> None:
        await bot.handle(message)

    return client


def run_discord(
    spec: str | None,
    options: DiscordOptions,
    device: str = "auto",
    backend: str = "auto",
    gguf_type: str | None = None,
) -> None:
    from twinbot.bot.backends import load_backend
    from twinbot.console import quiet_transformers

    token = discord_token()
    options = with_environment_allow_lists(options)
    try:
        import discord
    except ImportError as exc:
        raise TwinbotError("discord.py is not installed; run `pip install 'discord.py>=2.3'`") from exc
    quiet_transformers()
    model = load_backend(backend, spec, device=device, gguf_type=gguf_type)
    print(f"loaded {model.describe()}", flush=True)
    warning = access_warning(options)
    if warning is not None:
        print(warning, flush=True)
    bot = TwinDiscordBot(generator_for(model, options.settings), options)
    client = make_client(bot)
    try:
        client.run(token, log_level=logging.WARNING)
    except discord.LoginFailure as exc:
        raise TwinbotError(
            f"Discord rejected the token in {TOKEN_VARIABLE}; reset it in the developer portal"
        ) from exc
    except discord.PrivilegedIntentsRequired as exc:
        raise TwinbotError(
            "enable the Message Content intent for this bot (developer portal -> Bot -> Privileged "
            "Gateway Intents)"
        ) from exc
