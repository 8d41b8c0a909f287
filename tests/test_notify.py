"""Notifications at the end of a run (twinbot.finetune.notify): webhook shapes, retries, time bound, secrecy,
desktop notifiers. Webhooks are a local HTTP server on 127.0.0.1 (support.webhooks)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from support.webhooks import webhook_server
from twinbot.errors import TwinbotError
from twinbot.finetune import awake, notify
from twinbot.finetune.notify import Delivery, Webhook, announce, deliver, notice_for, shown_url, webhook_for
from twinbot.finetune.status import RunStatus

SECRET = "T0KEN-s3cret-part"  # the part of a webhook address that lets anyone post
FAST = Delivery(timeout_seconds=2.0, attempts=3, backoff_seconds=0.01)


def _status(**changes: Any) -> RunStatus:
    record = RunStatus(
        state="finished",
        pid=1234,
        hostname="box",
        started="2025-06-01T21:00:00+00:00",
        updated="2025-06-02T03:12:00+00:00",
        preset="fast",
        base_model="smollm2-135m-instruct",
        step=1200,
        total_steps=1200,
        tokens_seen=3_000_000,
        total_tokens=3_000_000,
        wall_seconds=22_320.0,
        eval_loss=2.3141,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


@pytest.mark.parametrize(
    ("url", "shape"),
    [
        ("https://discord.com/api/webhooks/123/abc", "discord"),
        ("https://discordapp.com/api/webhooks/123/abc", "discord"),
        ("https://ptb.discord.com/api/webhooks/123/abc", "discord"),
        ("https://discord.com/channels/123", "json"),  # not a webhook path
        ("https://hooks.slack.com/services/T0/B0/xyz", "slack"),
        ("https://ntfy.sh/my-topic", "ntfy"),
        ("https://ntfy.example.org/topic", "ntfy"),
        ("http://ntfy/topic", "ntfy"),
        ("https://example.com/hook", "json"),
        ("https://notdiscord.com/api/webhooks/1/a", "json"),
    ],
)
def test_the_shape_follows_from_the_address(url: str, shape: str) -> None:
    assert webhook_for(url).shape == shape


@pytest.mark.parametrize(
    "url", [f"ftp://files.example/{SECRET}", f"file:///etc/{SECRET}", f"hooks/{SECRET}", ""]
)
def test_an_address_that_is_not_http_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(TwinbotError, match="not an http") as info:
        webhook_for(url, "NOTIFY_URL (from .env)")
    assert SECRET not in str(info.value) and "NOTIFY_URL (from .env)" in str(info.value)


def test_addresses_are_shown_as_scheme_and_host_only() -> None:
    hook = webhook_for(f"https://user:pw@discord.com/api/webhooks/1/{SECRET}")
    assert hook.shown == "https://discord.com/…" == shown_url(hook.url)
    assert SECRET not in repr(hook) and "pw" not in repr(hook)


def test_the_message_says_how_the_run_ended() -> None:
    text = notice_for("me", _status()).text
    assert text.startswith("twinbot: run me finished: 1,200/1,200 steps in 6h 12m")
    assert "eval loss 2.3141" in text and "error" not in text

    failed = notice_for("me", _status(state="failed", step=340, error="data/train.jsonl:3: not valid JSON"))
    assert "failed: 340/1,200 steps" in failed.text and failed.text.endswith(
        "error: data/train.jsonl:3: not valid JSON"
    )
    assert failed.title == "twinbot: me failed"
    stopped = notice_for("me", _status(state="interrupted", style_distance=0.25))
    assert "--resume" in stopped.text and "style distance 0.250" in stopped.text


@pytest.mark.parametrize("shape", ["discord", "slack", "ntfy", "json"])
def test_each_shape_gets_its_body(shape: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = _status()
    notice = notice_for("me", status)
    with webhook_server() as server:
        assert deliver(Webhook(f"{server.url}/hook/{SECRET}", shape), notice, FAST)  # type: ignore[arg-type]
    (request,) = server.requests
    assert request.path == f"/hook/{SECRET}"
    assert request.headers["User-Agent"].startswith("twinbot/")
    if shape == "ntfy":
        assert request.body.decode("utf-8") == notice.text
        assert request.headers["Title"] == "twinbot: me finished"
        assert request.headers["Content-Type"].startswith("text/plain")
        return
    body = json.loads(request.body)
    if shape == "discord":
        assert body == {"content": notice.text}
    elif shape == "slack":
        assert body == {"text": notice.text}
    else:
        assert body["run"] == "me" and body["state"] == "finished" and body["step"] == 1200
        assert body["eval_loss"] == 2.3141 and body["error"] is None and body["message"] == notice.text
        assert set(body) >= {"pid", "hostname", "started", "updated", "wall_seconds", "tokens_seen"}
    err = capsys.readouterr().err
    assert "notified http://127.0.0.1/…" in err and SECRET not in err


def test_ntfy_titles_beyond_latin1_are_encoded_words() -> None:
    notice = notice_for("zwilling-ü-😀", _status())
    request = notify.request_for(Webhook("https://ntfy.sh/topic", "ntfy"), notice)
    assert request.get_header("Title").startswith("=?UTF-8?B?")


def test_server_errors_are_retried(capsys: pytest.CaptureFixture[str]) -> None:
    with webhook_server() as server:
        server.answers = [500, 503]
        assert deliver(Webhook(f"{server.url}/{SECRET}", "json"), notice_for("me", _status()), FAST)
    assert len(server.requests) == 3
    assert SECRET not in capsys.readouterr().err


def test_a_refused_address_is_not_retried_and_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with webhook_server() as server:
        server.answers = [404]
        assert not deliver(Webhook(f"{server.url}/{SECRET}", "json"), notice_for("me", _status()), FAST)
    assert len(server.requests) == 1
    err = capsys.readouterr().err
    assert err == "could not notify http://127.0.0.1/… (HTTP 404, 1 try); the run itself is not affected\n"


def test_giving_up_after_the_last_retry(capsys: pytest.CaptureFixture[str]) -> None:
    with webhook_server() as server:
        server.answers = [500, 500, 500]
        assert not deliver(Webhook(f"{server.url}/{SECRET}", "json"), notice_for("me", _status()), FAST)
    assert len(server.requests) == 3
    assert "(HTTP 500, 3 tries)" in capsys.readouterr().err


def test_a_host_that_does_not_answer_holds_the_run_up_no_longer_than_the_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    delivery = Delivery(timeout_seconds=0.3, attempts=2, backoff_seconds=0.05)
    with webhook_server() as server:
        server.delay_seconds = 5.0
        hooks = [Webhook(f"{server.url}/a/{SECRET}", "json"), Webhook(f"{server.url}/b/{SECRET}", "slack")]
        began = time.monotonic()
        announce("me", _status(), hooks, desktop=False, delivery=delivery)
        took = time.monotonic() - began
    assert took < delivery.bound_seconds() < 2.0  # both addresses at once, each within its tries
    assert len(server.requests) == 4
    err = capsys.readouterr().err
    assert err.count("(timed out, 2 tries)") == 2 and SECRET not in err


def test_an_unreachable_host_is_one_line() -> None:
    with webhook_server() as server:
        url = server.url
    # the server is gone: the port refuses connections
    assert not deliver(Webhook(f"{url}/{SECRET}", "json"), notice_for("me", _status()), FAST)


# --- desktop notifications -----------------------------------------------------------------------------


def test_desktop_commands_per_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    notice = notice_for("me", _status(state="failed", error='bad "quote" $(x)'))
    monkeypatch.setattr(notify.shutil, "which", lambda name: f"/usr/bin/{name}")
    args, env = notify.desktop_command(notice, "linux")  # type: ignore[misc]
    assert args == ["/usr/bin/notify-send", "--app-name=twinbot", notice.title, notice.text] and env is None
    args, env = notify.desktop_command(notice, "macos")  # type: ignore[misc]
    assert args[0] == "/usr/bin/osascript" and args[-2:] == [
        notice.title,
        notice.text,
    ]  # as arguments, not code
    args, env = notify.desktop_command(notice, "windows")  # type: ignore[misc]
    assert args[:4] == ["/usr/bin/powershell", "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    assert env is not None and env["TWINBOT_TOAST_TEXT"] == notice.text
    assert notice.text not in " ".join(args)
    monkeypatch.setattr(notify.shutil, "which", lambda name: None)
    assert notify.desktop_command(notice, "linux") is None


def test_desktop_notification_runs_the_command_and_is_skipped_where_there_is_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(awake, "current_platform", lambda: "linux")
    monkeypatch.setattr(notify.subprocess, "run", lambda args, **kwargs: calls.append(args))
    monkeypatch.setattr(notify.shutil, "which", lambda name: None)
    announce("me", _status(), [], desktop=True, delivery=FAST)
    assert calls == [] and capsys.readouterr().err == ""
    monkeypatch.setattr(notify.shutil, "which", lambda name: f"/usr/bin/{name}")
    announce("me", _status(), [], desktop=True, delivery=FAST)
    assert calls and calls[0][0] == "/usr/bin/notify-send"

    def broken(args: list[str], **kwargs: Any) -> None:
        raise OSError("no display")

    monkeypatch.setattr(notify.subprocess, "run", broken)
    announce("me", _status(), [], desktop=True, delivery=FAST)  # silently
    assert capsys.readouterr().err == ""
