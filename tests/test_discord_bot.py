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
    BUSY_REPLY,
    DISCORD_LIMIT,
    DiscordOptions,
    TwinDiscordBot,
    access_warning,
    cap_messages,
    discord_token,
    generator_for,
    history_turns,
    ids_from_environment,
    make_client,
    split_for_discord,
    with_environment_allow_lists,
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


@dataclass(frozen=True)
class FakeGuild:
    id: int


@dataclass
class FakeMessage:
    author: FakeUser
    channel: FakeChannel
    content: str
    guild: FakeGuild | None = None  # None: a direct message
    mentions: list[FakeUser] = field(default_factory=list)


GUILD = FakeGuild(500)
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
    bot, _ = make_bot(generate, dms=True)
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
    bot, _ = make_bot(generate, channels=frozenset({20}), dms=True)
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
    bot, clock = make_bot(generate, rate_limit_seconds=5.0, dms=True)
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
    bot, _ = make_bot(generate, dms=True, max_messages_per_reply=100)
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

    bot, _ = make_bot(broken, dms=True)
    channel = FakeChannel(10)
    with caplog.at_level(logging.WARNING):
        assert handle(bot, FakeMessage(ALICE, channel, SECRET_TEXT)) == []
    assert channel.sent == [] and not channel.typing_now
    assert "generation failed" in caplog.text and SECRET_TEXT not in caplog.text


def test_the_bot_never_writes_the_other_side_in_a_group(tmp_path: Path, tiny_model_dir: Path) -> None:
    from test_inference import scripted_lm
    from twinbot.bot.backends import TorchBackend
    from twinbot.bot.generate import GenerationSettings
    from twinbot.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    lm = scripted_lm(tokenizer, ["lol same\nBob: wait what"], filler=" x")
    settings = GenerationSettings(temperature=0, max_new_tokens=30)
    bot, _ = make_bot(
        generator_for(TorchBackend(lm), settings), channels=frozenset({20}), rate_limit_seconds=0
    )
    group = FakeChannel(20)
    handle(bot, FakeMessage(BOB, group, "anyone up", guild=GUILD))
    assert group.sent == ["lol same"]  # Bob is in the channel: a "Bob:" line is his turn, not the bot's
    group.sent.clear()
    handle(bot, FakeMessage(ALICE, group, "me", guild=GUILD))
    assert group.sent == ["lol same"]
    prompt = tokenizer.decode(lm.model.prompts[-1])  # type: ignore[union-attr]
    assert "You are Sam." in prompt and "Bob: anyone up" in prompt and "Alice: me" in prompt


# --- who gets answers, and how much -----------------------------------------------------------------------


def test_a_stranger_dm_gets_no_reply_and_leaves_no_trace_by_default(caplog: pytest.LogCaptureFixture) -> None:
    generate = FakeGenerate()
    bot, _ = make_bot(generate)
    dm = FakeChannel(10)
    with caplog.at_level(logging.DEBUG):
        assert handle(bot, FakeMessage(ALICE, dm, SECRET_TEXT)) == []
    assert dm.sent == [] and generate.calls == [] and not dm.typing_now  # not even a refusal
    assert bot.histories == {} and bot.last_reply_at == {}
    assert SECRET_TEXT not in caplog.text
    server = FakeChannel(20)  # servers still work without --dms
    assert handle(bot, FakeMessage(ALICE, server, "<@999> hi", guild=GUILD, mentions=[ME])) != []


def test_dms_are_answered_with_dms() -> None:
    generate = FakeGenerate(reply="hello you")
    bot, _ = make_bot(generate, dms=True)
    dm = FakeChannel(10)
    assert handle(bot, FakeMessage(ALICE, dm, "hi")) == ["hello you"] == dm.sent


def test_the_user_allow_list_applies_in_servers_and_dms() -> None:
    generate = FakeGenerate(reply="ok")
    bot, _ = make_bot(
        generate,
        dms=True,
        allowed_users=frozenset({ALICE.id}),
        channels=frozenset({20}),
        rate_limit_seconds=0,
    )
    server, alice_dm, bob_dm = FakeChannel(20), FakeChannel(11), FakeChannel(12)
    assert handle(bot, FakeMessage(BOB, bob_dm, "let me in")) == []
    assert handle(bot, FakeMessage(BOB, server, "me too", guild=GUILD)) == []
    assert handle(bot, FakeMessage(BOB, server, "<@999> hey", guild=GUILD, mentions=[ME])) == []
    assert bob_dm.sent == [] and server.sent == [] and generate.calls == []
    assert handle(bot, FakeMessage(ALICE, alice_dm, "hi")) == ["ok"]
    assert handle(bot, FakeMessage(ALICE, server, "hello all", guild=GUILD)) == ["ok"]
    assert generate.calls[-1] == [ChatTurn("user", "hello all")]  # Bob's messages are not in the history


def test_the_guild_allow_list_ignores_other_servers() -> None:
    generate = FakeGenerate(reply="ok")
    bot, _ = make_bot(
        generate,
        dms=True,
        allowed_guilds=frozenset({GUILD.id}),
        channels=frozenset({20}),
        rate_limit_seconds=0,
    )
    elsewhere = FakeGuild(501)
    other_server = FakeChannel(20)  # even a --channel id does not let another server in
    assert handle(bot, FakeMessage(ALICE, other_server, "hi", guild=elsewhere)) == []
    assert handle(bot, FakeMessage(ALICE, FakeChannel(21), "<@999> hi", guild=elsewhere, mentions=[ME])) == []
    assert other_server.sent == [] and generate.calls == []
    assert handle(bot, FakeMessage(ALICE, FakeChannel(20), "hi", guild=GUILD)) == ["ok"]
    assert handle(bot, FakeMessage(ALICE, FakeChannel(10), "hi in a DM")) == ["ok"]  # DMs follow --dms


class BlockingGenerate:
    """Holds every generation until `release` is set, so that messages pile up."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, turns: list[ChatTurn], speakers: tuple[str, ...]) -> str:
        self.calls += 1
        assert self.release.wait(timeout=10)
        return "done"


def test_a_full_backlog_gets_one_busy_reply_per_user_then_silence() -> None:
    generate = BlockingGenerate()
    bot, clock = make_bot(generate, dms=True, max_pending=2, rate_limit_seconds=0)
    carol, dave = FakeUser(3, "Carol"), FakeUser(4, "Dave")
    carol_dm, dave_dm = FakeChannel(13), FakeChannel(14)

    async def scenario() -> None:
        waiting = [
            asyncio.create_task(bot.handle(FakeMessage(ALICE, FakeChannel(11), "first"))),
            asyncio.create_task(bot.handle(FakeMessage(BOB, FakeChannel(12), "second"))),
        ]
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            assert bot.pending == 2  # one generating, one waiting for the model
            for _ in range(5):  # a flood: one busy reply, then silence
                await bot.handle(FakeMessage(carol, carol_dm, "hello?"))
            assert carol_dm.sent == [BUSY_REPLY]
            assert await bot.handle(FakeMessage(dave, dave_dm, "hi")) == [BUSY_REPLY]  # per user
            clock.now += 59
            assert await bot.handle(FakeMessage(carol, carol_dm, "still busy?")) == []
            clock.now += 2  # a minute since Carol's busy reply
            assert await bot.handle(FakeMessage(carol, carol_dm, "now?")) == [BUSY_REPLY]
        finally:
            generate.release.set()
        assert await asyncio.gather(*waiting) == [["done"], ["done"]]
        assert bot.pending == 0
        assert await bot.handle(FakeMessage(carol, carol_dm, "and now?")) == ["done"]  # room again

    asyncio.run(scenario())
    assert carol_dm.sent == [BUSY_REPLY, BUSY_REPLY, "done"] and dave_dm.sent == [BUSY_REPLY]
    assert generate.calls == 3  # dropped messages never reach the model


def test_a_reply_never_sends_more_than_max_messages_per_reply() -> None:
    generate = FakeGenerate(reply="one\ntwo\nthree\nfour\nfive\nsix")
    bot, _ = make_bot(generate, dms=True, max_messages_per_reply=3, rate_limit_seconds=0)
    dm = FakeChannel(10)
    sent = handle(bot, FakeMessage(ALICE, dm, "tell me everything"))
    assert sent == dm.sent == ["one", "two", "three\nfour\nfive\nsix"]  # later lines join the last message

    long_reply = " ".join(f"word{i}" for i in range(900)) + "\n" + "x" * 4500
    generate.reply = long_reply
    dm.sent.clear()
    sent = handle(bot, FakeMessage(ALICE, dm, "talk a lot"))
    every_chunk = split_for_discord(long_reply)
    assert len(every_chunk) > 5 and bot.options.max_messages_per_reply == 3
    assert len(dm.sent) == 3 and all(len(chunk) <= DISCORD_LIMIT for chunk in dm.sent)
    assert sent[:2] == every_chunk[:2] and "\n".join(every_chunk[2:]).startswith(sent[2])


def test_the_default_cap_is_five_messages() -> None:
    generate = FakeGenerate(reply="\n".join(f"line {i}" for i in range(12)))
    bot, _ = make_bot(generate, dms=True)
    dm = FakeChannel(10)
    assert len(handle(bot, FakeMessage(ALICE, dm, "go"))) == 5 == len(dm.sent)


def test_cap_messages_edges() -> None:
    assert cap_messages(["a", "b"], 2) == ["a", "b"]
    assert cap_messages(["a", "b", "c"], 1) == ["a\nb\nc"]
    assert cap_messages(["ab", "cd"], 1, limit=3) == ["ab"]  # cut at the line break
    assert cap_messages(["abcd", "ef"], 1, limit=3) == ["abc"]  # nowhere to cut: hard
    assert cap_messages([], 1) == []


def test_limits_must_be_at_least_one() -> None:
    for limits in ({"max_pending": 0}, {"max_messages_per_reply": 0}):
        with pytest.raises(TwinbotError, match="at least 1"):
            DiscordOptions(**limits)


def test_allow_lists_from_the_environment() -> None:
    assert ids_from_environment("DISCORD_ALLOW_USERS", {}) == frozenset()
    assert ids_from_environment("DISCORD_ALLOW_USERS", {"DISCORD_ALLOW_USERS": " 1, 2,,3 4 "}) == {1, 2, 3, 4}
    with pytest.raises(TwinbotError, match="DISCORD_ALLOW_GUILDS must be Discord ids") as info:
        ids_from_environment("DISCORD_ALLOW_GUILDS", {"DISCORD_ALLOW_GUILDS": "12,not-a-secret"})
    assert "not-a-secret" not in str(info.value) and "\n" not in str(info.value)
    environ = {"DISCORD_ALLOW_USERS": "7,8", "DISCORD_ALLOW_GUILDS": "9"}
    filled = with_environment_allow_lists(DiscordOptions(), environ)
    assert filled.allowed_users == {7, 8} and filled.allowed_guilds == {9}
    given = with_environment_allow_lists(DiscordOptions(allowed_users=frozenset({1})), environ)
    assert given.allowed_users == {1} and given.allowed_guilds == {9}  # the command line wins
    assert with_environment_allow_lists(DiscordOptions(), {}) == DiscordOptions()


def test_the_dm_warning_is_only_for_dms_open_to_anyone() -> None:
    warning = access_warning(DiscordOptions(dms=True))
    assert warning is not None and "anyone who can DM the bot" in warning and "--allow-user" in warning
    assert access_warning(DiscordOptions()) is None
    assert access_warning(DiscordOptions(dms=True, allowed_users=frozenset({1}))) is None


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
    for option in ("--allow-user", "--allow-guild", "--dms", "--max-pending", "--max-messages-per-reply"):
        assert option in help_text
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


@pytest.mark.parametrize(("allow_users", "warned"), [(None, True), ("123", False)])
def test_run_discord_warns_once_about_open_dms(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    allow_users: str | None,
    warned: bool,
) -> None:
    import discord

    from twinbot.bot import discord_bot, loading

    monkeypatch.setenv("DISCORD_TOKEN", "SECRET-TOKEN-123")
    monkeypatch.delenv("DISCORD_ALLOW_GUILDS", raising=False)
    if allow_users is None:
        monkeypatch.delenv("DISCORD_ALLOW_USERS", raising=False)
    else:
        monkeypatch.setenv("DISCORD_ALLOW_USERS", allow_users)
    monkeypatch.setattr(loading, "load_for_inference", lambda *a, **k: FakeLoaded())

    def fake_run(self: Any, given: str, **kwargs: Any) -> None:
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.setattr(discord.Client, "run", fake_run)
    with pytest.raises(TwinbotError):
        discord_bot.run_discord("run", DiscordOptions(dms=True))
    assert capsys.readouterr().out.count("anyone who can DM the bot") == (1 if warned else 0)


def test_cli_passes_the_access_and_limit_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from twinbot.bot import discord_bot
    from twinbot.cli import app

    seen: list[DiscordOptions] = []
    gguf_types: list[str | None] = []

    def fake_run_discord(
        run: str, options: DiscordOptions, device: str, backend: str, gguf_type: str | None
    ) -> None:
        seen.append(options)
        gguf_types.append(gguf_type)

    monkeypatch.setattr(discord_bot, "run_discord", fake_run_discord)
    runner = CliRunner()
    result = runner.invoke(app, ["discord", "some-run"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["discord", "some-run", "--gguf-type", "q4_k_m"]).exit_code == 0
    assert gguf_types == [None, "q4_k_m"]
    defaults = seen[-1]
    assert not defaults.dms and not defaults.allowed_users and not defaults.allowed_guilds
    assert defaults.max_pending == 8 and defaults.max_messages_per_reply == 5
    arguments = ["--allow-user", "11", "--allow-user", "12", "--allow-guild", "21", "--dms"]
    arguments += ["--max-pending", "3", "--max-messages-per-reply", "2"]
    result = runner.invoke(app, ["discord", "some-run", *arguments])
    assert result.exit_code == 0, result.output
    given = seen[-1]
    assert given.allowed_users == {11, 12} and given.allowed_guilds == {21} and given.dms
    assert given.max_pending == 3 and given.max_messages_per_reply == 2
    result = runner.invoke(app, ["discord", "some-run", "--max-pending", "0"])
    assert isinstance(result.exception, TwinbotError) and len(seen) == 3


class FakeLoaded:
    system_prompt = None

    def describe(self) -> str:
        return "fake model"


def test_client_routes_messages_to_the_bot() -> None:
    generate = FakeGenerate(reply="yo")
    bot, _ = make_bot(generate, dms=True)
    channel = FakeChannel(10)

    async def scenario() -> None:
        client = make_client(bot)
        assert client.intents.message_content
        mentions = client.allowed_mentions
        assert mentions is not None and not (mentions.everyone or mentions.users or mentions.roles)
        await client.on_message(FakeMessage(ALICE, channel, "hello"))  # type: ignore[attr-defined]

    asyncio.run(scenario())
    assert channel.sent == ["yo"]
