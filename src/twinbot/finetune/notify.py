"""Tell the run's owner how it ended: webhooks (`--notify URL`, NOTIFY_URL) and a desktop notification.

A webhook's shape follows from its address: Discord (`{"content": ...}`), Slack (`{"text": ...}`), ntfy
(the text as the body, with a Title header), anything else a JSON object of the status record's fields.
Sending never fails or holds up the run for long: each address gets DELIVERY.attempts tries of
timeout_seconds each, all addresses at once, and a failure is one line. Webhook addresses are secrets (who
has one can post): they are shown as scheme://host/… only and never written to any file.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from twinbot import __version__, console
from twinbot.errors import TwinbotError
from twinbot.finetune.status import RunStatus, duration_text

Shape = Literal["discord", "slack", "ntfy", "json"]
_USER_AGENT = f"twinbot/{__version__} (run notifications)"  # some webhook hosts refuse urllib's default
_DESKTOP_SECONDS = 10.0


@dataclass(frozen=True)
class Delivery:
    """How hard to try: `attempts` tries per address, each waiting up to `timeout_seconds` for an answer,
    `backoff_seconds` before the second try (doubling after)."""

    timeout_seconds: float = 10.0
    attempts: int = 3
    backoff_seconds: float = 1.0

    def bound_seconds(self) -> float:
        """How long sending may hold up the end of the run, at most."""
        waits = sum(self.backoff_seconds * 2**i for i in range(self.attempts - 1))
        return self.attempts * self.timeout_seconds + waits + 1.0


@dataclass(frozen=True)
class Webhook:
    url: str = field(repr=False)  # a secret
    shape: Shape

    @property
    def shown(self) -> str:
        return shown_url(self.url)


@dataclass(frozen=True)
class Notice:
    title: str
    text: str
    record: dict[str, Any]  # the run's name and status record, for plain JSON webhooks


def shown_url(url: str) -> str:
    """scheme://host/… : enough to tell addresses apart, without the part that is the secret."""
    parts = urllib.parse.urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        return "…"
    return f"{parts.scheme}://{parts.hostname}/…"


def webhook_for(url: str, source: str = "--notify") -> Webhook:
    """The webhook at `url` with the shape its address implies; a TwinbotError for what is not http(s)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise TwinbotError(
            f"{source}: {shown_url(url)} is not an http(s) address; pass a webhook URL such as "
            f"https://discord.com/api/webhooks/… , https://hooks.slack.com/… or https://ntfy.sh/TOPIC"
        )
    return Webhook(url.strip(), shape_of(parts.hostname, parts.path))


def shape_of(host: str, path: str) -> Shape:
    host = host.lower()
    discord_host = any(
        host == name or host.endswith("." + name) for name in ("discord.com", "discordapp.com")
    )
    if discord_host and path.startswith("/api/webhooks/"):
        return "discord"
    if host == "hooks.slack.com":
        return "slack"
    if host == "ntfy.sh" or host.startswith("ntfy"):
        return "ntfy"
    return "json"


def notice_for(run_name: str, status: RunStatus) -> Notice:
    """What the owner is told: the run, how it ended, how far it got and how long it took; numbers and the
    error line only."""
    total = f"/{status.total_steps:,}" if status.total_steps is not None else ""
    progress = f"{status.step:,}{total} steps in {duration_text(status.wall_seconds)}"
    parts = [f"twinbot: run {run_name} {status.state}: {progress}"]
    if status.eval_loss is not None:
        parts.append(f"eval loss {status.eval_loss:.4f}")
    if status.style_distance is not None:
        parts.append(f"style distance {status.style_distance:.3f}")
    if status.state == "interrupted":
        parts.append("run the same command with --resume to continue")
    if status.error:
        parts.append(f"error: {status.error}")
    return Notice(
        title=f"twinbot: {run_name} {status.state}",
        text="; ".join(parts),
        record={"run": run_name, **asdict(status)},
    )


def request_for(hook: Webhook, notice: Notice) -> urllib.request.Request:
    headers = {"User-Agent": _USER_AGENT}
    if hook.shape == "ntfy":
        headers.update({"Content-Type": "text/plain; charset=utf-8", "Title": _header_text(notice.title)})
        body = notice.text.encode("utf-8")
    else:
        headers["Content-Type"] = "application/json"
        payload: dict[str, Any]
        if hook.shape == "discord":
            payload = {"content": notice.text}
        elif hook.shape == "slack":
            payload = {"text": notice.text}
        else:
            payload = {**notice.record, "message": notice.text}
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return urllib.request.Request(hook.url, data=body, headers=headers, method="POST")


def _header_text(text: str) -> str:
    """HTTP headers are Latin-1: anything else as an RFC 2047 encoded word (which ntfy decodes)."""
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def deliver(hook: Webhook, notice: Notice, delivery: Delivery) -> bool:
    """POST the notice to `hook`, retrying network errors, timeouts, 429 and 5xx; one line either way."""
    reason = ""
    for attempt in range(delivery.attempts):
        if attempt:
            time.sleep(delivery.backoff_seconds * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(request_for(hook, notice), timeout=delivery.timeout_seconds):
                pass
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                break  # the address or the message is wrong: trying again will not help
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # reasons are named, never printed: some exceptions' text holds the address
            inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            reason = "timed out" if isinstance(inner, TimeoutError) else type(inner).__name__
        else:
            console.say(f"notified {hook.shown}")
            return True
    tries = f"{attempt + 1} tr{'y' if attempt == 0 else 'ies'}"
    console.say(f"could not notify {hook.shown} ({reason}, {tries}); the run itself is not affected")
    return False


def announce(
    run_name: str, status: RunStatus, webhooks: Sequence[Webhook], desktop: bool, delivery: Delivery
) -> None:
    """Send the notice everywhere at once; returns when all are sent or `delivery`'s bound has passed."""
    if not webhooks and not desktop:
        return
    notice = notice_for(run_name, status)
    threads = [
        threading.Thread(target=deliver, args=(hook, notice, delivery), daemon=True, name="twinbot-notify")
        for hook in webhooks
    ]
    if desktop:
        threads.append(threading.Thread(target=desktop_notify, args=(notice,), daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + delivery.bound_seconds()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        console.say("some notifications were not sent in time; the run itself is not affected")


def desktop_command(notice: Notice, platform: str) -> tuple[list[str], dict[str, str] | None] | None:
    """The command that shows `notice` on this desktop (and its environment), or None where there is none."""
    if platform == "linux" and (program := shutil.which("notify-send")):
        return [program, "--app-name=twinbot", notice.title, notice.text], None
    if platform == "macos" and (program := shutil.which("osascript")):
        script = [
            "on run argv",
            "display notification (item 2 of argv) with title (item 1 of argv)",
            "end run",
        ]
        return [program, *(part for line in script for part in ("-e", line)), notice.title, notice.text], None
    if platform == "windows" and (program := shutil.which("powershell")):
        # the texts travel in the environment: nothing of them is parsed as PowerShell or command-line syntax
        environment = {**os.environ, "TWINBOT_TOAST_TITLE": notice.title, "TWINBOT_TOAST_TEXT": notice.text}
        encoded = base64.b64encode(_WINDOWS_TOAST.encode("utf-16-le")).decode("ascii")
        return [program, "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded], environment
    return None


def desktop_notify(notice: Notice) -> None:
    """Best effort: skipped silently where there is no notifier (or no desktop)."""
    from twinbot.finetune.awake import current_platform

    command = desktop_command(notice, current_platform())
    if command is None:
        return
    args, environment = command
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            args,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_DESKTOP_SECONDS,
            check=False,
        )


# A toast through the WinRT API that Windows PowerShell 5 reaches without modules, shown as from PowerShell
# (an app id Windows knows, so the toast is displayed).
_WINDOWS_TOAST = r"""
$null = [Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime]
$template = [Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent([Windows.UI.Notifications.ToastTemplateType]::ToastText02)
$texts = $template.GetElementsByTagName('text')
$null = $texts.Item(0).AppendChild($template.CreateTextNode($env:TWINBOT_TOAST_TITLE))
$null = $texts.Item(1).AppendChild($template.CreateTextNode($env:TWINBOT_TOAST_TEXT))
$appId = '{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\WindowsPowerShell\v1.0\powershell.exe'
[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier($appId).Show([Windows.UI.Notifications.ToastNotification]::new($template))
"""
