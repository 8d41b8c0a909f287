"""`twinbot discord`: message handling with discord.py objects faked at the boundary (no network)."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from twinbot.bot.discord_bot import (
    DISCORD_LIMIT,
    DiscordOptions,
    TwinDiscordBot,
    discord_token,
    generator_for,
    history_turns,
    make_client,
    split_for_discord,
)
from twinbot.data.records import ChatTurn
from twinbot.errors import TwinbotError

BOT_ID = 999
SECRET_TEXT = "my bank pin is 4321"  # must never reach a log


@dataclass
class FakeUser:
    id: int
    display_name: str = "someone"
    bot: bool = False
    name: str = "someone"


@dataclass
class FakeTyping:
    channel: FakeChannel

    async def __aenter__(self) -> None:
        self.channel.typing_now = True

    async def __aexit__(self, *exc_info: object) -> None:
        self.channel.typing_now = False


@dataclass
class FakeChannel:
    id: int
    sent: list[str] = field(default_factory=list)
    typing_now: bool = False

    def typing(self) -> FakeTyping:
        return FakeTyping(self)

    async def send(self, content: str) -> None:
        assert len(content) <= DISCORD_LIMIT
        self.sent.append(content)


@dataclass
class FakeMessage:
    author: FakeUser
    channel: FakeChannel
    content: str
    guild: object | None = None
    mentions: list[FakeUser] = field(default_factory=list)


GUILD = object()
ME = FakeUser(BOT_ID, "Twin", bot=True)
ALICE = FakeUser(1, "Alice")
BOB = FakeUser(2, "Bob")


class FakeGenerate:
    """Records the turns it was asked about; checks "typing..." shows while it runs, off the event loop."""

    def __init__(self, reply: str = "hey\nwhat's up", channel: FakeChannel | None = None) -> None:
        self.reply = reply
        self.channel = channel
        self.calls: list[list[ChatTurn]] = []
        self.speakers: list[tuple[str, ...]] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, turns: list[ChatTurn], speakers: tuple[str, ...]) -> str:
        self.calls.append(turns)
        self.speakers.append(speakers)
        self.threads.append(threading.current_thread())
        if self.channel is not None:
            assert self.channel.typing_now
        return self.reply


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_bot(generate: Any, **options: Any) -> tuple[TwinDiscordBot, Clock]:
    clock = Clock()
    bot = TwinDiscordBot(generate, DiscordOptions(**options), clock=clock)
    bot.user_id = BOT_ID
    return bot, clock


def handle(bot: TwinDiscordBot, message: FakeMessage) -> list[str]:
    return asyncio.run(bot.handle(message))


def test_replies_in_dms_with_typing_and_off_the_event_loop() -> None:
    channel = FakeChannel(10)
    generate = FakeGenerate(channel=channel)
    bot, _ = make_bot(generate)
    sent = handle(bot, FakeMessage(ALICE, channel, "hi there"))
    assert sent == ["hey", "what's up"] == channel.sent  # several lines -> several messages
    assert generate.calls == [[ChatTurn("user", "hi there")]]
    assert generate.threads[0] is not threading.main_thread()
    assert not channel.typing_now


def test_in_a_server_only_mentions_and_configured_channels() -> None:
    generate = FakeGenerate()
    bot, _ = make_bot(generate, channels=frozenset({20}), rate_limit_seconds=0)
    other = FakeChannel(21)
    assert handle(bot, FakeMessage(ALICE, other, "just chatting", guild=GUILD)) == []
    assert handle(bot, FakeMessage(ALICE, other, "<@999> you there?", guild=GUILD, mentions=[ME])) != []
    assert generate.calls[-1][-1] == ChatTurn("user", "you there?")  # the bot's mention is stripped
    assert handle(bot, FakeMessage(ALICE, other, "hey <@!999>, ok?", guild=GUILD, mentions=[ME])) != []
    assert generate.calls[-1][-1].content.endswith("hey , ok?")
    configured = FakeChannel(20)
    assert handle(bot, FakeMessage(BOB, configured, "anyone?", guild=GUILD)) != []
    assert handle(bot, FakeMessage(BOB, other, "<@123> not you", guild=GUILD, mentions=[FakeUser(123)])) == []


def test_ignores_bots_and_itself() -> None:
    generate = FakeGenerate()
    bot, _ = make_bot(generate, channels=frozenset({20}))
    channel = FakeChannel(20)
    assert handle(bot, FakeMessage(ME, channel, "my own reply", guild=GUILD)) == []
    assert handle(bot, FakeMessage(FakeUser(5, "Other bot", bot=True), channel, "beep")) == []
    itself_without_flag = FakeUser(BOT_ID, "Twin", bot=False)
    assert handle(bot, FakeMessage(itself_without_flag, channel, "echo", guild=GUILD)) == []
    assert generate.calls == [] and channel.sent == []


def test_only_a_mention_is_not_a_question() -> None:
    generate = FakeGenerate()
    bot, _ = make_bot(generate)
    assert handle(bot, FakeMessage(ALICE, FakeChannel(1), "<@999>", guild=GUILD, mentions=[ME])) == []
    assert generate.calls == []


def test_rate_limit_per_user() -> None:
    generate = FakeGenerate()
    bot, clock = make_bot(generate, rate_limit_seconds=5.0)
    channel = FakeChannel(10)
    assert handle(bot, FakeMessage(ALICE, channel, "one")) != []
    clock.now += 1
    assert handle(bot, FakeMessage(ALICE, channel, "two")) == []  # too soon
    assert handle(bot, FakeMessage(BOB, channel, "three")) != []  # another user is not limited
    clock.now += 5
    assert handle(bot, FakeMessage(ALICE, channel, "four")) != []
    assert len(generate.calls) == 3


def test_long_replies_are_split_at_the_discord_limit() -> None:
    words = " ".join(f"word{i}" for i in range(900))  # ~8k characters on one line
    generate = FakeGenerate(reply=words + "\n" + "x" * 4500)
    bot, _ = make_bot(generate)
    channel = FakeChannel(10)
    sent = handle(bot, FakeMessage(ALICE, channel, "talk a lot"))
    assert all(len(chunk) <= DISCORD_LIMIT for chunk in sent)
    assert " ".join(sent[:-3]) == words  # split at spaces, nothing lost
    assert "".join(sent[-3:]) == "x" * 4500  # no space: hard cuts
    assert channel.sent == sent


def test_split_for_discord_edges() -> None:
    assert split_for_discord("") == []
    assert split_for_discord("a\n\n  \nb") == ["a", "b"]
    assert split_for_discord("abc def", limit=3) == ["abc", "def"]


def test_short_per_channel_history_with_names_for_groups() -> None:
    generate = FakeGenerate(reply="sure")
    bot, _ = make_bot(generate, channels=frozenset({20, 30}), history=4, rate_limit_seconds=0)
    group, other = FakeChannel(20), FakeChannel(30)
    handle(bot, FakeMessage(ALICE, group, "first", guild=GUILD))
    handle(bot, FakeMessage(BOB, group, "second", guild=GUILD))
    handle(bot, FakeMessage(ALICE, other, "elsewhere", guild=GUILD))
    assert generate.calls[-1] == [ChatTurn("user", "elsewhere")]  # channels do not share history
    handle(bot, FakeMessage(ALICE, group, "third", guild=GUILD))
    # 4 remembered messages: Bob's, the reply, Alice's newest (Alice's first and its reply dropped)
    assert generate.calls[-1] == [
        ChatTurn("user", "Bob: second"),
        ChatTurn("assistant", "sure"),
        ChatTurn("user", "Alice: third"),
    ]
    assert generate.speakers[-1] == ("Bob", "Alice")


def test_history_turns_merge_consecutive_messages() -> None:
    from twinbot.bot.discord_bot import SeenMessage

    seen = [
        SeenMessage(BOT_ID, "", "old reply", from_bot=True),
        SeenMessage(1, "Alice", "a", from_bot=False),
        SeenMessage(1, "Alice", "b", from_bot=False),
        SeenMessage(BOT_ID, "", "c", from_bot=True),
    ]
    assert history_turns(seen) == [ChatTurn("user", "a\nb"), ChatTurn("assistant", "c")]


def test_a_failed_generation_sends_nothing_and_logs_no_text(caplog: pytest.LogCaptureFixture) -> None:
    def broken(turns: list[ChatTurn], speakers: tuple[str, ...]) -> str:
        raise RuntimeError(f"exploded on {turns[-1].content}")

    bot, _ = make_bot(broken)
    channel = FakeChannel(10)
    with caplog.at_level(logging.WARNING):
        assert handle(bot, FakeMessage(ALICE, channel, SECRET_TEXT)) == []
    assert channel.sent == [] and not channel.typing_now
    assert "generation failed" in caplog.text and SECRET_TEXT not in caplog.text


def test_the_bot_never_writes_the_other_side_in_a_group(tmp_path: Path, tiny_model_dir: Path) -> None:
    from test_inference import scripted_lm
    from twinbot.bot.generate import GenerationSettings
    from twinbot.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    lm = scripted_lm(tokenizer, ["lol same\nBob: wait what"], filler=" x")
    settings = GenerationSettings(temperature=0, max_new_tokens=30)
    bot, _ = make_bot(generator_for(lm, settings), channels=frozenset({20}), rate_limit_seconds=0)
    group = FakeChannel(20)
    handle(bot, FakeMessage(BOB, group, "anyone up", guild=GUILD))
    assert group.sent == ["lol same"]  # Bob is in the channel: a "Bob:" line is his turn, not the bot's
    group.sent.clear()
    handle(bot, FakeMessage(ALICE, group, "me", guild=GUILD))
    assert group.sent == ["lol same"]
    prompt = tokenizer.decode(lm.model.prompts[-1])  # type: ignore[union-attr]
    assert "You are Sam." in prompt and "Bob: anyone up" in prompt and "Alice: me" in prompt


# --- token and client -------------------------------------------------------------------------------------


def test_token_only_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=from-dotenv\n", encoding="utf-8"
    )  # a file is not the environment
    with pytest.raises(TwinbotError, match="DISCORD_TOKEN environment variable") as info:
        discord_token(environ={})
    assert "\n" not in str(info.value)
    assert discord_token(environ={"DISCORD_TOKEN": " abc.def "}) == "abc.def"


def test_cli_has_no_token_flag_and_fails_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from twinbot.cli import app

    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    runner = CliRunner()
    help_text = runner.invoke(app, ["discord", "--help"]).output
    assert "--token" not in help_text and "--channel" in help_text and "--rate-limit" in help_text
    result = runner.invoke(app, ["discord", "some-run"])
    assert isinstance(result.exception, TwinbotError)
    assert "DISCORD_TOKEN" in str(result.exception)


def test_run_discord_never_shows_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    import discord

    from twinbot.bot import discord_bot, loading

    token = "SECRET-TOKEN-123"
    monkeypatch.setenv("DISCORD_TOKEN", token)
    monkeypatch.setattr(loading, "load_for_inference", lambda *a, **k: FakeLoaded())
    seen: dict[str, Any] = {}

    def fake_run(self: Any, given: str, **kwargs: Any) -> None:
        seen["token"] = given
        seen["intents"] = self.intents
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.setattr(discord.Client, "run", fake_run)
    with pytest.raises(TwinbotError) as info:
        discord_bot.run_discord("run", DiscordOptions())
    assert seen["token"] == token and seen["intents"].message_content
    captured = capsys.readouterr()
    assert token not in str(info.value) + captured.out + captured.err


class FakeLoaded:
    system_prompt = None

    def describe(self) -> str:
        return "fake model"


def test_client_routes_messages_to_the_bot() -> None:
    generate = FakeGenerate(reply="yo")
    bot, _ = make_bot(generate)
    channel = FakeChannel(10)

    async def scenario() -> None:
        client = make_client(bot)
        assert client.intents.message_content
        mentions = client.allowed_mentions
        assert mentions is not None and not (mentions.everyone or mentions.users or mentions.roles)
        await client.on_message(FakeMessage(ALICE, channel, "hello"))  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert channel.sent == ["yo"]
