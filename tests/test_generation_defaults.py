"""The sampling defaults are defined once (bot/sampling_defaults.py): chat, discord, serve and eval use them."""

from __future__ import annotations

from typing import Any

import typer.main

from test_serve import FakeEngine, client, serve
from twinbot.bot import sampling_defaults
from twinbot.bot.engine import SamplingRequest, request_settings
from twinbot.bot.generate import GenerationSettings
from twinbot.bot.serve import ServeLimits
from twinbot.cli import app
from twinbot.quality.evaluate import EvalOptions

CHAT_DEFAULTS = {
    "temperature": sampling_defaults.TEMPERATURE,
    "top_p": sampling_defaults.TOP_P,
    "repetition_penalty": sampling_defaults.REPETITION_PENALTY,
    "max_new_tokens": sampling_defaults.MAX_NEW_TOKENS,
}


def option_defaults(command: str) -> dict[str, Any]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {param.name: param.default for param in click_command.params}


def test_generation_settings_default_to_the_definition() -> None:
    settings = GenerationSettings()
    assert {name: getattr(settings, name) for name in CHAT_DEFAULTS} == CHAT_DEFAULTS


def test_chat_and_discord_options_default_to_the_definition() -> None:
    for command in ("chat", "discord"):
        defaults = option_defaults(command)
        assert {name: defaults[name] for name in CHAT_DEFAULTS} == CHAT_DEFAULTS, command


def test_eval_samples_as_chat_with_its_own_reply_cap() -> None:
    options = EvalOptions(run_dir=None)  # type: ignore[arg-type]
    assert (options.temperature, options.top_p, options.repetition_penalty) == (
        sampling_defaults.TEMPERATURE,
        sampling_defaults.TOP_P,
        sampling_defaults.REPETITION_PENALTY,
    )
    assert options.max_new_tokens == sampling_defaults.EVAL_MAX_NEW_TOKENS
    assert option_defaults("eval")["max_new_tokens"] == sampling_defaults.EVAL_MAX_NEW_TOKENS


def test_a_request_without_sampling_fields_gets_the_definition() -> None:
    engine = FakeEngine(reply=" ".join(["word"] * 300))
    with serve(engine) as server:
        client(server).chat.completions.create(model="twin", messages=[{"role": "user", "content": "hi"}])
    (_, sampling), *_ = engine.calls
    assert ServeLimits().default_max_tokens == sampling_defaults.MAX_NEW_TOKENS
    # the fake engine's 512-token window caps the reply at half of it, which is above the default
    assert sampling == SamplingRequest(
        temperature=sampling_defaults.TEMPERATURE,
        top_p=sampling_defaults.TOP_P,
        max_new_tokens=sampling_defaults.MAX_NEW_TOKENS,
        seed=None,
    )
    assert request_settings(sampling).repetition_penalty == sampling_defaults.REPETITION_PENALTY
