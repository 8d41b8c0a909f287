"""A run left to train overnight (twinbot.finetune.overnight): RUN/status.json on every way out, staying
awake (with fakes: nothing here stops the machine from sleeping), the options, and a real short run that
notifies a local webhook without its address getting into any output or file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from support.training import make_config
from support.webhooks import webhook_server
from twinbot.errors import TwinbotError
from twinbot.finetune import awake, overnight, status
from twinbot.finetune import recipe as train
from twinbot.finetune.awake import ES_CONTINUOUS, ES_SYSTEM_REQUIRED
from twinbot.finetune.config import TrainConfig
from twinbot.finetune.notify import Delivery, webhook_for
from twinbot.finetune.overnight import OvernightOptions, resolve_overnight, watched_run
from twinbot.finetune.status import StatusFile, read_status
from twinbot.runs import STATUS_FILE

SECRET = "T0KEN-s3cret-part"
QUIET = OvernightOptions(keep_awake=False, desktop_notify=False)


def _config(run: Path) -> TrainConfig:
    return TrainConfig(output_dir=run, preset="fast", base_model="some/model")


def _begin(record: status.RunStatus | None, run: Path) -> StatusFile:
    """What training does once RUN is written: the first status.json of the session."""
    assert record is not None
    run.mkdir(exist_ok=True)
    writer = StatusFile(run, record)
    writer.begin(step=0, total_steps=10, tokens_seen=0, total_tokens=1000, wall_seconds=0.0, eval_loss=None)
    return writer


@pytest.fixture
def announced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, status.RunStatus]]:
    calls: list[tuple[str, status.RunStatus]] = []
    monkeypatch.setattr(overnight, "announce", lambda name, record, *args: calls.append((name, record)))
    return calls


# --- status.json on every way out ------------------------------------------------------------------------


def test_a_finished_run_records_its_progress_and_end(tmp_path: Path, announced: list[Any]) -> None:
    run = tmp_path / "run"
    with watched_run(_config(run), QUIET) as record:
        writer = _begin(record, run)
        on_disk = read_status(run)
        assert on_disk is not None and on_disk.state == "running" and on_disk.total_steps == 10
        writer.progress(4, 400, 12.5, 3.25, force=True)
        assert read_status(run).step == 4  # type: ignore[union-attr]
    final = read_status(run)
    assert final is not None and final.state == "finished" and final.error is None
    assert (final.step, final.tokens_seen, final.wall_seconds, final.eval_loss) == (4, 400, 12.5, 3.25)
    assert (final.pid, final.hostname) == (os.getpid(), socket.gethostname())
    assert (final.preset, final.base_model) == ("fast", "some/model")
    assert final.started <= final.updated and final.started.endswith("+00:00")
    assert (run / STATUS_FILE).stat().st_mode & 0o077 == 0
    assert announced == [("run", final)]


@pytest.mark.parametrize(
    ("raised", "state", "error"),
    [
        (TwinbotError("training diverged; try a lower LEARNING_RATE", Path("runs/me")), "failed", None),
        (RuntimeError("CUDA error: an illegal memory access\nmore lines"), "failed", None),
        (KeyboardInterrupt(), "interrupted", None),
        (SystemExit(130), "interrupted", None),
        (SystemExit(3), "failed", "training exited with code 3"),
    ],
)
def test_every_way_out_records_how_the_run_ended(
    tmp_path: Path, announced: list[Any], raised: BaseException, state: str, error: str | None
) -> None:
    run = tmp_path / "run"
    with pytest.raises(type(raised)), watched_run(_config(run), QUIET) as record:
        _begin(record, run)
        raise raised
    final = read_status(run)
    assert final is not None and final.state == state
    if isinstance(raised, TwinbotError):
        assert final.error == "runs/me: training diverged; try a lower LEARNING_RATE"
    elif isinstance(raised, RuntimeError):
        assert final.error == "RuntimeError: CUDA error: an illegal memory access"
    else:
        assert final.error == error
    assert announced[0][1].state == state


def test_a_run_that_never_began_writes_nothing_but_is_announced(tmp_path: Path, announced: list[Any]) -> None:
    run = tmp_path / "run"
    with pytest.raises(TwinbotError), watched_run(_config(run), QUIET):
        raise TwinbotError("data folder not found; run `twinbot prepare` first")
    assert not run.exists()
    ((name, record),) = announced
    assert name == "run" and record.state == "failed" and record.step == 0 and "not found" in record.error


def test_the_status_of_an_earlier_session_is_left_as_it_was(tmp_path: Path, announced: list[Any]) -> None:
    """A --resume that fails before training begins does not rewrite the run's last status."""
    run = tmp_path / "run"
    earlier = status.new_status("fast", "m")
    earlier.pid, earlier.state, earlier.step = earlier.pid + 1, "interrupted", 7
    run.mkdir()
    status.write_status(run, earlier)
    with pytest.raises(TwinbotError), watched_run(_config(run), QUIET):
        raise TwinbotError("cannot resume: changed since the run started")
    assert read_status(run) == earlier


def test_processes_started_to_train_only_report_progress(
    tmp_path: Path, announced: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    owner = status.new_status("fast", "m")
    monkeypatch.setattr(awake, "hold_awake", lambda: pytest.fail("only the owner keeps the machine awake"))
    options = OvernightOptions(keep_awake=True)
    with pytest.raises(TwinbotError), watched_run(_config(run), options, joined=owner) as record:
        assert record is owner
        _begin(record, run)
        raise TwinbotError("boom")
    assert read_status(run).state == "running"  # type: ignore[union-attr]  # the owner writes the end
    assert announced == []
    monkeypatch.setenv("RANK", "1")  # another rank of `accelerate launch`: its rank 0 owns the run
    with watched_run(_config(run), options) as record:
        assert record is None
    assert announced == []


def test_a_status_write_that_fails_does_not_stop_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert not status.write_status(blocked, status.new_status("fast", "m"))
    assert capsys.readouterr().err.startswith("warning: could not write status.json")


# --- the real thing, on the tiny model --------------------------------------------------------------------


def test_a_trained_run_keeps_its_status_and_notifies_without_showing_the_address(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    config = make_config(tiny_model_dir, run, max_steps=3, save_every=1, eval_every=2)
    seen: list[tuple[str, int]] = []
    original_checkpoint = train.checkpoint

    def checkpoint(run_: Any, session: Any) -> None:
        original_checkpoint(run_, session)
        record = read_status(run)
        assert record is not None
        seen.append((record.state, record.step))

    monkeypatch.setattr(train, "checkpoint", checkpoint)
    with webhook_server() as server:
        hook = webhook_for(f"{server.url}/hooks/{SECRET}")
        options = OvernightOptions(keep_awake=False, webhooks=(hook,), desktop_notify=False)
        summary = train.main(config, overnight=options)
        with pytest.raises(TwinbotError):
            train.main(
                make_config(tiny_model_dir, tmp_path / "other", data=tmp_path / "missing"), overnight=options
            )

    assert seen == [("running", 1), ("running", 2), ("running", 3)]  # kept current at each checkpoint
    final = read_status(run)
    assert final is not None and final.state == "finished" and final.pid == os.getpid()
    assert (final.step, final.total_steps, final.tokens_seen) == (3, 3, summary.tokens_seen)
    assert final.total_tokens == summary.tokens_seen
    assert final.eval_loss == pytest.approx(summary.final_eval_loss)
    assert final.wall_seconds == pytest.approx(summary.wall_seconds, abs=0.01)

    finished, failed = (json.loads(request.body) for request in server.requests)
    assert finished["run"] == "run" and finished["state"] == "finished" and finished["step"] == 3
    assert (
        failed["run"] == "other"
        and failed["state"] == "failed"
        and "data folder not found" in failed["error"]
    )
    assert not (tmp_path / "other").exists()

    printed = capsys.readouterr()
    assert "notified http://127.0.0.1/…" in printed.err
    assert SECRET not in printed.out + printed.err
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# --- staying awake (fakes only) ---------------------------------------------------------------------------


class FakeHelper:
    """A stand-in for the systemd-inhibit / caffeinate process: still running until told to end."""

    started: ClassVar[list[FakeHelper]] = []

    def __init__(self, args: list[str], stdin: Any = None, **kwargs: Any) -> None:
        self.args = args
        self.exit_code = getattr(FakeHelper, "exits_with", None)
        self.stdin = FakeStdin(self) if stdin == subprocess.PIPE else None
        self.terminated = False
        FakeHelper.started.append(self)

    def wait(self, timeout: float | None = None) -> int:
        if self.exit_code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.exit_code

    def terminate(self) -> None:
        self.terminated = True
        self.exit_code = -15

    def kill(self) -> None:
        self.exit_code = -9


class FakeStdin:
    def __init__(self, helper: FakeHelper) -> None:
        self.helper = helper

    def close(self) -> None:
        self.helper.exit_code = 0  # the held child reads EOF and exits, and systemd-inhibit with it


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> list[FakeHelper]:
    FakeHelper.started = []
    monkeypatch.delattr(FakeHelper, "exits_with", raising=False)
    monkeypatch.setattr(awake.subprocess, "Popen", FakeHelper)
    monkeypatch.setattr(awake.shutil, "which", lambda name: f"/usr/bin/{name}")
    return FakeHelper.started


def test_linux_holds_a_systemd_inhibitor_until_the_run_ends(
    monkeypatch: pytest.MonkeyPatch, helpers: list[FakeHelper], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(awake, "current_platform", lambda: "linux")
    with pytest.raises(KeyboardInterrupt), awake.stay_awake():
        (helper,) = helpers
        assert helper.exit_code is None  # held while training
        raise KeyboardInterrupt
    assert helper.args[:5] == [
        "/usr/bin/systemd-inhibit",
        "--what=sleep:idle",
        "--who=twinbot",
        "--why=training a model",
        "--mode=block",
    ]
    assert helper.args[5:7] == [sys.executable, "-c"]
    assert helper.exit_code == 0  # released: its stdin closed
    assert "keeping the machine awake" in capsys.readouterr().err


def test_linux_without_systemd_inhibit_trains_on_and_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers: list[FakeHelper],
    announced: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(awake, "current_platform", lambda: "linux")
    monkeypatch.setattr(awake.shutil, "which", lambda name: None)
    ran = False
    with watched_run(_config(tmp_path / "run"), OvernightOptions(keep_awake=True, desktop_notify=False)):
        ran = True
    assert ran and helpers == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("could not keep the machine awake (systemd-inhibit not found); training goes on")


def test_an_inhibitor_that_is_refused_is_one_line(
    monkeypatch: pytest.MonkeyPatch, helpers: list[FakeHelper], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(awake, "current_platform", lambda: "linux")
    monkeypatch.setattr(FakeHelper, "exits_with", 1, raising=False)  # e.g. logind refused: Access denied
    with awake.stay_awake():
        pass
    assert "could not keep the machine awake (systemd-inhibit exited with code 1)" in capsys.readouterr().err


def test_macos_caffeinates_this_process_until_the_run_ends(
    monkeypatch: pytest.MonkeyPatch, helpers: list[FakeHelper]
) -> None:
    monkeypatch.setattr(awake, "current_platform", lambda: "macos")
    with awake.stay_awake():
        (helper,) = helpers
        assert not helper.terminated
    assert helper.args == ["/usr/bin/caffeinate", "-i", "-w", str(os.getpid())]
    assert helper.terminated


def test_windows_sets_and_resets_the_execution_state(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(awake, "current_platform", lambda: "windows")
    monkeypatch.setattr(awake, "set_thread_execution_state", lambda flags: calls.append(flags) or 1)
    with pytest.raises(TwinbotError), awake.stay_awake():
        assert calls == [ES_CONTINUOUS | ES_SYSTEM_REQUIRED]
        raise TwinbotError("failed mid-run")
    assert calls == [ES_CONTINUOUS | ES_SYSTEM_REQUIRED, ES_CONTINUOUS]


def test_allow_sleep_holds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(awake, "hold_awake", lambda: pytest.fail("asked to let the machine sleep"))
    with awake.stay_awake(enabled=False):
        pass


def test_the_linux_inhibitors_child_ends_when_its_pipe_closes() -> None:
    """What systemd-inhibit holds (run here without it): it exits once this process closes the pipe, as it
    does when this process dies, so the machine is never kept awake after the run."""
    child = subprocess.Popen([sys.executable, "-c", awake._WAIT_FOR_EOF], stdin=subprocess.PIPE)
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.5)
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=10) == 0


# --- options ----------------------------------------------------------------------------------------------


def test_options_come_from_the_command_line_then_the_environment_then_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "ALLOW_SLEEP=true\nNOTIFY_URL=https://hooks.slack.com/services/a, https://ntfy.sh/topic\n",
        encoding="utf-8",
    )
    defaults = resolve_overnight(environ={}, dotenv_path=None)
    assert (defaults.keep_awake, defaults.webhooks, defaults.desktop_notify) == (True, (), True)

    from_file = resolve_overnight(environ={}, dotenv_path=dotenv)
    assert not from_file.keep_awake
    assert [hook.shape for hook in from_file.webhooks] == ["slack", "ntfy"]

    from_env = resolve_overnight(
        environ={
            "ALLOW_SLEEP": "no",
            "NOTIFY_URL": "https://discord.com/api/webhooks/1/x",
            "DESKTOP_NOTIFY": "0",
        },
        dotenv_path=dotenv,
    )
    assert from_env.keep_awake and not from_env.desktop_notify
    assert [hook.shape for hook in from_env.webhooks] == ["discord"]

    from_cli = resolve_overnight(
        allow_sleep=True,
        notify=["https://example.com/hook"],
        desktop_notify=True,
        environ={},
        dotenv_path=dotenv,
    )
    assert not from_cli.keep_awake and from_cli.desktop_notify
    assert [hook.shape for hook in from_cli.webhooks] == ["json"]


def test_bad_options_are_one_line_errors_that_never_show_an_address() -> None:
    with pytest.raises(
        TwinbotError, match=r"ALLOW_SLEEP='maybe' \(from environment\): expected true or false"
    ):
        resolve_overnight(environ={"ALLOW_SLEEP": "maybe"}, dotenv_path=None)
    with pytest.raises(TwinbotError, match=r"NOTIFY_URL \(from environment\)") as info:
        resolve_overnight(environ={"NOTIFY_URL": f"discord.com/api/webhooks/{SECRET}"}, dotenv_path=None)
    assert SECRET not in str(info.value)


def test_train_passes_its_options_to_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from twinbot.cli import app

    received: dict[str, Any] = {}
    monkeypatch.setattr(train, "main", lambda config, **kwargs: received.update(kwargs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALLOW_SLEEP")
    monkeypatch.delenv("DESKTOP_NOTIFY")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--data", "data", "--out", "run"])
    assert result.exit_code == 0, result.output
    assert received["overnight"] == OvernightOptions()  # awake, desktop notification, no webhooks

    url = f"https://ntfy.sh/{SECRET}"
    args = [
        "train",
        "--data",
        "data",
        "--out",
        "run",
        "--allow-sleep",
        "--notify",
        url,
        "--no-desktop-notify",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    options = received["overnight"]
    assert not options.keep_awake and not options.desktop_notify
    assert [hook.url for hook in options.webhooks] == [url] and options.delivery == Delivery()
