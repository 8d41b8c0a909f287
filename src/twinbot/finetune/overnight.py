"""A run left to train unattended: `watched_run` wraps a training job from its start to its end.

It keeps the machine awake (`awake`), keeps RUN/status.json (`status`) and, however the run ends, writes
its end state and tells the owner (`notify`). `recipe.main` runs inside it, once per run: in the process
that owns the run (the only one with a command line), not in the processes it starts to train in.

The settings are `OvernightOptions`: `--allow-sleep`, `--notify URL`, `--no-desktop-notify`, else
ALLOW_SLEEP, NOTIFY_URL (comma-separated) and DESKTOP_NOTIFY from the environment, else from `.env`. They are
not training settings (`TrainConfig`): they change nothing in the result, and a webhook address is a secret
that must not be written into summary.json or a checkpoint with the settings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twinbot import console
from twinbot.errors import TwinbotError, one_line
from twinbot.finetune.awake import stay_awake
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.notify import Delivery, Webhook, announce, webhook_for
from twinbot.finetune.status import RunState, RunStatus, end_status, new_status
from twinbot.finetune.workers import INTERRUPTED

ALLOW_SLEEP_KEY = "ALLOW_SLEEP"
NOTIFY_URL_KEY = "NOTIFY_URL"
DESKTOP_NOTIFY_KEY = "DESKTOP_NOTIFY"
ENV_KEYS: tuple[str, ...] = (ALLOW_SLEEP_KEY, NOTIFY_URL_KEY, DESKTOP_NOTIFY_KEY)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class OvernightOptions:
    keep_awake: bool = True
    webhooks: tuple[Webhook, ...] = ()
    desktop_notify: bool = True
    delivery: Delivery = field(default_factory=Delivery)


# What a run started from code gets (tests, benchmarks, `plan`): a status file, nothing else.
UNATTENDED_OFF = OvernightOptions(keep_awake=False, desktop_notify=False)


def resolve_overnight(
    allow_sleep: bool | None = None,
    notify: Sequence[str] | None = None,
    desktop_notify: bool | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = Path(".env"),
) -> OvernightOptions:
    """The options from the command line (None / empty: not given), else the environment, else `.env`."""
    layers = [("environment", os.environ if environ is None else environ), (".env", _dotenv(dotenv_path))]

    def pick(key: str) -> tuple[str, str] | None:
        for source, values in layers:
            raw = values.get(key)
            if raw is not None and raw.strip():
                return raw.strip(), source
        return None

    if allow_sleep is None:
        allow_sleep = _flag(ALLOW_SLEEP_KEY, pick(ALLOW_SLEEP_KEY), default=False)
    if desktop_notify is None:
        desktop_notify = _flag(DESKTOP_NOTIFY_KEY, pick(DESKTOP_NOTIFY_KEY), default=True)
    if notify:
        webhooks = tuple(webhook_for(url, "--notify") for url in notify)
    else:
        found = pick(NOTIFY_URL_KEY)
        urls = [url for url in found[0].split(",") if url.strip()] if found else []
        source = f"{NOTIFY_URL_KEY} (from {found[1]})" if found else NOTIFY_URL_KEY
        webhooks = tuple(webhook_for(url, source) for url in urls)
    return OvernightOptions(keep_awake=not allow_sleep, webhooks=webhooks, desktop_notify=desktop_notify)


def _flag(key: str, found: tuple[str, str] | None, default: bool) -> bool:
    if found is None:
        return default
    value, source = found
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise TwinbotError(f"{key}={value!r} (from {source}): expected true or false; fix or remove it there")


def _dotenv(path: Path | None) -> Mapping[str, str | None]:
    if path is None or not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    try:
        return dotenv_values(path, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise TwinbotError("cannot read this .env file; check that it is UTF-8 text", path) from exc


@contextlib.contextmanager
def watched_run(
    config: TrainConfig, options: OvernightOptions | None, joined: RunStatus | None = None
) -> Iterator[RunStatus | None]:
    """The run's status record for the training inside this block, which is kept awake (per `options`)
    and whose end is recorded and announced. `joined`: the record of the process that started this one
    to train in, which ends the run itself; this one only trains (and its rank 0 reports progress).
    Yields None in the other processes of a launcher's run (accelerate launch), whose rank 0 owns it."""
    if joined is not None:
        yield joined
        return
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield None
        return
    from twinbot.models.loading import EMBEDDED_MODEL

    options = options or UNATTENDED_OFF
    owner = new_status(config.preset, config.base_model or EMBEDDED_MODEL)
    with stay_awake(options.keep_awake):
        try:
            yield owner
        except BaseException as exc:
            _end(config, owner, options, *outcome_of(exc))
            raise
        _end(config, owner, options, "finished", None)


def outcome_of(exc: BaseException) -> tuple[RunState, str | None]:
    """How a run that raised `exc` ended, and its one-line error."""
    if isinstance(exc, TwinbotError):
        return "failed", exc.render()
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None
    if isinstance(exc, SystemExit):
        if exc.code == INTERRUPTED:
            return "interrupted", None
        if exc.code in (0, None):
            return "finished", None
        return "failed", f"training exited with code {exc.code}"
    return "failed", f"{type(exc).__name__}: {one_line(exc)}"


def _end(
    config: TrainConfig, owner: RunStatus, options: OvernightOptions, state: RunState, error: str | None
) -> None:
    run_dir = Path(config.output_dir).expanduser() if config.output_dir is not None else None
    final = end_status(run_dir, owner, state, error)
    name = run_dir.name if run_dir is not None else "(no --out)"
    try:
        announce(name, final, options.webhooks, options.desktop_notify, options.delivery)
    except Exception as exc:  # a notification must never change how the run ends
        console.say(f"warning: notifications failed ({type(exc).__name__}); the run itself is not affected")
