"""`twinbot schedule`: the job each platform gets (Task Scheduler XML, launchd plist, systemd units, crontab
lines), quoted by each format's rules, and --install / --uninstall with every tool faked: nothing real is
installed."""

from __future__ import annotations

import plistlib
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from twinbot.errors import TwinbotError
from twinbot.finetune import autostart
from twinbot.finetune.autostart import Job, make_job

NS = {"t": autostart.TASK_NAMESPACE}
PYTHON = "/opt/my python/bin/python3"  # spaces, as in "C:\Program Files\..."


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, the config and cache folders in tmp_path, and no real scheduler tool runs."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("TWINBOT_CACHE", str(folder / "cache"))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: folder))
    return folder


class FakeTools:
    """Stands in for subprocess.run: records each command (and for launchctl, the agent file as it was then)."""

    def __init__(self, crontab: str | None = None, failing: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.crontab = crontab
        self.failing = failing
        self.agent_at_bootstrap: dict[str, Any] | None = None

    def __call__(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        if args[0] in self.failing:
            return subprocess.CompletedProcess(args, 1, "", f"{args[0]}: it failed\nmore")
        if args[:2] == ["crontab", "-l"]:
            if self.crontab is None:
                return subprocess.CompletedProcess(args, 1, "", "no crontab for me\n")
            return subprocess.CompletedProcess(args, 0, self.crontab, "")
        if args[:2] == ["crontab", "-"]:
            self.crontab = kwargs["input"]
        if args[:2] == ["launchctl", "bootstrap"]:
            self.agent_at_bootstrap = plistlib.loads(Path(args[3]).read_bytes())
        return subprocess.CompletedProcess(args, 0, "", "")


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    fake = FakeTools()
    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(autostart, "systemd_user_available", lambda: True)
    return fake


def _job(tmp_path: Path, days: str = "daily", at: str = "23:00") -> Job:
    project = tmp_path / "my project 100%"
    project.mkdir(exist_ok=True)
    return make_job(
        "overnight",
        at,
        days,
        [
            "--data",
            "data",
            "--out=runs/me & co",
            "--model",
            "HuggingFaceTB/SmolLM2-360M",
            "--set",
            "LORA_R=8",
        ],
        working_dir=project,
        python=PYTHON,
    )


# --- the job -------------------------------------------------------------------------------------------------


def test_the_job_runs_train_with_absolute_paths_and_resume_auto(tmp_path: Path) -> None:
    job = _job(tmp_path)
    project = tmp_path / "my project 100%"
    assert job.command == (
        PYTHON,
        "-m",
        "twinbot",
        "train",
        "--data",
        str(project / "data"),
        f"--out={project / 'runs/me & co'}",
        "--model",
        "HuggingFaceTB/SmolLM2-360M",  # a hub id, not a path
        "--set",
        "LORA_R=8",
        "--resume",
        "auto",
    )
    assert job.working_dir == project and (job.hour, job.minute, job.weekdays) == (23, 0, ())
    local_model = project / "models" / "base"
    local_model.mkdir(parents=True)
    relative = make_job("x", "7:05", "sun,MON,tuesday", ["--model", "models/base"], working_dir=project)
    assert relative.command[4:6] == ("--model", str(local_model))
    assert (relative.hour, relative.minute, relative.weekdays) == (7, 5, (0, 1, 6))
    assert relative.command[0] == sys.executable


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "--resume cannot be scheduled"),
        (["--resume=yes"], "--resume cannot be scheduled"),
        (["--overwrite"], "--overwrite cannot be scheduled"),
        (["--set", "resume=yes"], "RESUME=... cannot be scheduled"),
        (["--out", "a\nb"], "a line break cannot be part"),
    ],
)
def test_options_the_job_cannot_take(args: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match=re.escape(message)):
        make_job("overnight", "23:00", "daily", args, working_dir=tmp_path)


@pytest.mark.parametrize(
    ("at", "days", "name", "message"),
    [
        ("24:00", "daily", "overnight", "--at '24:00': expected a time of day as HH:MM"),
        ("11pm", "daily", "overnight", "--at '11pm'"),
        ("23:00", "mon,funday", "overnight", "--days 'mon,funday'"),
        ("23:00", "daily", "../evil", "--name '../evil'"),
    ],
)
def test_bad_times_days_and_names(at: str, days: str, name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(TwinbotError, match=re.escape(message)):
        make_job(name, at, days, [], working_dir=tmp_path)


def test_all_seven_days_is_daily(tmp_path: Path) -> None:
    assert make_job("x", "23:00", "mon,tue,wed,thu,fri,sat,sun", [], working_dir=tmp_path).weekdays == ()


# --- each platform's text -------------------------------------------------------------------------------------


def _windows_argv(line: str) -> list[str]:
    """How the Windows C runtime splits a command line (what python.exe does with the task's Arguments):
    backslashes are literal except before a quote, where 2n of them + quote = n and a quote mark toggling
    quoting, and 2n+1 of them + quote = n and a literal quote."""
    args: list[str] = []
    current: list[str] = []
    quoted = started = False
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\":
            count = len(line[index:]) - len(line[index:].lstrip("\\"))
            index += count
            if line[index : index + 1] == '"':
                current.append("\\" * (count // 2))
                if count % 2:
                    current.append('"')
                    index += 1
            else:
                current.append("\\" * count)
            started = True
            continue
        if char == '"':
            quoted, started = not quoted, True
        elif char in " \t" and not quoted:
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
        index += 1
    if started:
        args.append("".join(current))
    return args


def test_windows_argv_reads_what_list2cmdline_writes() -> None:
    tricky = ["C:\\Program Files\\x", 'say "hi"', "ends\\", "a\\\\b", "", "100% & co"]
    assert _windows_argv(subprocess.list2cmdline(tricky)) == tricky


def test_windows_task_xml(tmp_path: Path) -> None:
    job = _job(tmp_path, days="mon,tue")
    text = autostart.windows_task_xml(job, "PC\\sam", now=datetime(2025, 3, 4, 23, 30))
    task = ET.fromstring(text)
    calendar = task.find("t:Triggers/t:CalendarTrigger", NS)
    assert calendar is not None
    assert calendar.findtext("t:StartBoundary", namespaces=NS) == "2025-03-05T23:00:00"  # 23:00 passed today
    days = calendar.find("t:ScheduleByWeek/t:DaysOfWeek", NS)
    assert days is not None and [d.tag.split("}")[1] for d in days] == ["Monday", "Tuesday"]
    assert task.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=NS) == "PC\\sam"
    assert task.findtext("t:Principals/t:Principal/t:UserId", namespaces=NS) == "PC\\sam"
    assert task.findtext("t:Principals/t:Principal/t:LogonType", namespaces=NS) == "InteractiveToken"
    settings = {child.tag.split("}")[1]: child.text for child in task.find("t:Settings", NS) or []}
    assert settings["MultipleInstancesPolicy"] == "IgnoreNew" and settings["ExecutionTimeLimit"] == "PT0S"
    assert settings["StartWhenAvailable"] == "true" and settings["StopIfGoingOnBatteries"] == "false"
    execute = task.find("t:Actions/t:Exec", NS)
    assert execute is not None
    assert execute.findtext("t:Command", namespaces=NS) == PYTHON
    arguments = execute.findtext("t:Arguments", namespaces=NS) or ""
    assert f'--data "{tmp_path / "my project 100%" / "data"}"' in arguments
    assert _windows_argv(arguments) == list(job.command[1:])
    assert execute.findtext("t:WorkingDirectory", namespaces=NS) == str(job.working_dir)

    daily = ET.fromstring(autostart.windows_task_xml(_job(tmp_path), "sam", now=datetime(2025, 3, 4, 8, 0)))
    assert (
        daily.findtext("t:Triggers/t:CalendarTrigger/t:StartBoundary", namespaces=NS) == "2025-03-04T23:00:00"
    )
    assert daily.findtext("t:Triggers/t:CalendarTrigger/t:ScheduleByDay/t:DaysInterval", namespaces=NS) == "1"


def test_launch_agent_plist(tmp_path: Path, home: Path) -> None:
    job = _job(tmp_path, days="sun,wed")
    agent = plistlib.loads(autostart.launch_agent_plist(job).encode())
    assert agent["Label"] == "twinbot.overnight"
    assert agent["ProgramArguments"] == list(job.command)  # `&`, spaces and `%` survive the XML
    assert agent["WorkingDirectory"] == str(job.working_dir)
    assert agent["StartCalendarInterval"] == [
        {"Weekday": 3, "Hour": 23, "Minute": 0},
        {"Weekday": 0, "Hour": 23, "Minute": 0},
    ]
    assert agent["RunAtLoad"] is True
    assert agent["StandardErrorPath"] == str(home / "cache" / "schedule" / "twinbot-overnight.log")
    daily = plistlib.loads(autostart.launch_agent_plist(_job(tmp_path, at="06:45")).encode())
    assert daily["StartCalendarInterval"] == {"Hour": 6, "Minute": 45}


def _unit_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_systemd_units(tmp_path: Path, home: Path) -> None:
    job = _job(tmp_path, days="mon,fri")
    service, timer = autostart.systemd_files(job)
    assert service.path == home / ".config" / "systemd" / "user" / "twinbot-overnight.service"
    assert timer.path == service.path.with_suffix(".timer")
    unit = _unit_values(service.text)
    # systemd's quoting: double quotes with C escapes, `%` and `$` doubled
    parsed = [part.replace("%%", "%").replace("$$", "$") for part in shlex.split(unit["ExecStart"])]
    assert parsed == list(job.command)
    assert '"--out=' in unit["ExecStart"] and "100%%" in unit["ExecStart"]
    assert unit["WorkingDirectory"] == str(job.working_dir).replace("%", "%%")
    assert unit["KillSignal"] == "SIGINT" and unit["WantedBy"] == "default.target"
    timer_values = _unit_values(timer.text)
    assert timer_values["OnCalendar"] == "Mon,Fri *-*-* 23:00:00"
    assert timer_values["Persistent"] == "true" and timer_values["Unit"] == "twinbot-overnight.service"
    daily = _unit_values(autostart.systemd_files(_job(tmp_path))[1].text)
    assert daily["OnCalendar"] == "*-*-* 23:00:00"


def test_systemd_quote_escapes_what_systemd_would_read() -> None:
    assert autostart.systemd_quote("plain") == "plain"
    assert autostart.systemd_quote("a b") == '"a b"'
    assert autostart.systemd_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert autostart.systemd_quote("$HOME/%h") == "$$HOME/%%h"


def test_cron_lines(tmp_path: Path, home: Path) -> None:
    job = _job(tmp_path, days="sat,sun")
    block = autostart.cron_block(job)
    lines = block.splitlines()
    assert lines[0].startswith("# BEGIN twinbot-overnight ") and lines[-1] == "# END twinbot-overnight"
    assert lines[1].startswith("@reboot cd ") and lines[2].startswith("0 23 * * 6,0 cd ")
    for line in lines[1:3]:
        command = line.split(" ", 1 if line.startswith("@") else 5)[-1]
        assert "%" not in command.replace("\\%", "")  # cron would cut the line at a bare %
        words = shlex.split(command.replace("\\%", "%"))
        lock = home / "cache" / "schedule" / "twinbot-overnight.lock"
        assert words[:6] == ["cd", str(job.working_dir), "&&", "flock", "-n", str(lock)]
        assert words[6 : 6 + len(job.command)] == list(job.command)
        assert words[-3:] == [">>", str(job.log_file), "2>&1"]


def test_describe_names_the_command_files_and_steps(tmp_path: Path, home: Path) -> None:
    job = _job(tmp_path)
    text = autostart.describe(job, "linux")
    assert "starts training at 23:00 every day, and at login" in text
    assert f"command, run in {job.working_dir}:" in text
    assert f"{home / '.config/systemd/user/twinbot-overnight.timer'}:" in text
    assert "  systemctl --user enable --now twinbot-overnight.timer" in text
    windows = autostart.describe(job, "windows")
    assert f"  {subprocess.list2cmdline(job.command)}" in windows
    assert "schtasks /Create /TN twinbot-overnight /XML" in windows
    assert "launchctl bootstrap gui/" in autostart.describe(job, "macos")
    assert "@reboot" in autostart.describe(job, "cron")


# --- --install / --uninstall, with fakes ----------------------------------------------------------------------


def test_install_and_uninstall_systemd(
    tmp_path: Path, home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autostart, "current_platform", lambda: "linux")
    job = _job(tmp_path)
    said = autostart.run_schedule(job, install_job=True)
    units = home / ".config" / "systemd" / "user"
    assert sorted(p.name for p in units.iterdir()) == ["twinbot-overnight.service", "twinbot-overnight.timer"]
    assert tools.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "twinbot-overnight.service"],
        ["systemctl", "--user", "enable", "--now", "twinbot-overnight.timer"],
    ]
    assert said.startswith("installed: twinbot-overnight")
    assert not any("sudo" in part or part == "--system" for call in tools.calls for part in call)

    tools.calls.clear()
    assert autostart.run_schedule(job, uninstall_job=True).startswith("removed: twinbot-overnight")
    assert list(units.iterdir()) == []
    assert tools.calls == [
        ["systemctl", "--user", "disable", "--now", "twinbot-overnight.timer"],
        ["systemctl", "--user", "disable", "twinbot-overnight.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]


def test_install_falls_back_to_cron_and_keeps_other_lines(
    tmp_path: Path, home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autostart, "current_platform", lambda: "linux")
    monkeypatch.setattr(autostart, "systemd_user_available", lambda: False)
    tools.crontab = "MAILTO=me\n5 4 * * * backup\n"
    job = _job(tmp_path)
    autostart.run_schedule(job, install_job=True)
    autostart.run_schedule(job, install_job=True)  # again: replaced, not doubled
    assert tools.crontab == "MAILTO=me\n5 4 * * * backup\n" + autostart.cron_block(job)
    assert (home / "cache" / "schedule").is_dir()  # for the log and the lock
    assert autostart.run_schedule(job, uninstall_job=True) == "removed: crontab lines twinbot-overnight"
    assert tools.crontab == "MAILTO=me\n5 4 * * * backup\n"
    assert autostart.run_schedule(job, uninstall_job=True).startswith("nothing to remove")


def test_install_cron_without_a_crontab(
    tmp_path: Path, home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path)
    autostart.install(job, "cron")
    assert tools.crontab == autostart.cron_block(job)
    assert tools.calls == [["crontab", "-l"], ["crontab", "-"]]


def test_install_launch_agent_is_not_started_by_loading_it(
    tmp_path: Path, home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autostart, "current_platform", lambda: "macos")
    job = _job(tmp_path)
    autostart.run_schedule(job, install_job=True)
    plist = home / "Library" / "LaunchAgents" / "twinbot.overnight.plist"
    domain = autostart.launchd_domain()
    assert tools.calls == [
        ["launchctl", "bootout", f"{domain}/twinbot.overnight"],
        ["launchctl", "bootstrap", domain, str(plist)],
    ]
    assert tools.agent_at_bootstrap is not None and tools.agent_at_bootstrap["RunAtLoad"] is False
    assert plistlib.loads(plist.read_bytes())["RunAtLoad"] is True  # read at the next login

    tools.calls.clear()
    autostart.run_schedule(job, uninstall_job=True)
    assert tools.calls == [["launchctl", "bootout", f"{domain}/twinbot.overnight"]] and not plist.exists()


def test_install_windows_task(
    tmp_path: Path, home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autostart, "current_platform", lambda: "windows")
    job = _job(tmp_path)
    autostart.run_schedule(job, install_job=True)
    xml_file = home / "cache" / "schedule" / "twinbot-overnight.xml"
    assert xml_file.read_bytes()[:2] == b"\xff\xfe"  # UTF-16 with its byte order mark
    assert ET.fromstring(xml_file.read_text(encoding="utf-16")).find("t:Actions/t:Exec", NS) is not None
    assert tools.calls == [["schtasks", "/Create", "/TN", "twinbot-overnight", "/XML", str(xml_file), "/F"]]
    tools.calls.clear()
    autostart.run_schedule(job, uninstall_job=True)
    assert (
        tools.calls == [["schtasks", "/Delete", "/TN", "twinbot-overnight", "/F"]] and not xml_file.exists()
    )


def test_a_failing_tool_is_one_line(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", FakeTools(failing=("systemctl",)))
    monkeypatch.setattr(autostart, "current_platform", lambda: "linux")
    monkeypatch.setattr(autostart, "systemd_user_available", lambda: True)
    with pytest.raises(
        TwinbotError, match=r"`systemctl --user daemon-reload` failed \(exit 1: systemctl: it failed\)"
    ):
        autostart.run_schedule(_job(tmp_path), install_job=True)


def test_install_acts_on_this_machine_only(
    tmp_path: Path, home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autostart, "current_platform", lambda: "linux")
    with pytest.raises(TwinbotError, match="--platform windows only prints the job"):
        autostart.run_schedule(_job(tmp_path), "windows", install_job=True)
    with pytest.raises(TwinbotError, match="pass only one"):
        autostart.run_schedule(_job(tmp_path), install_job=True, uninstall_job=True)
    assert tools.calls == [] and not (home / ".config").exists()
    assert "Task Scheduler" in autostart.run_schedule(_job(tmp_path), "Windows")


# --- the command line -----------------------------------------------------------------------------------------


def _cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    from twinbot.cli import main as cli_main

    monkeypatch.setattr(sys, "argv", ["twinbot", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_prints_the_job_with_train_options_after_the_separator(
    tmp_path: Path,
    home: Path,
    tools: FakeTools,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["schedule", "--platform", "macos", "--at", "23:00", "--data", "my data", "--out", "runs/me"]
    code, out, _ = _cli([*args, "--", "--epochs", "2"], monkeypatch, capsys)
    assert code == 0, out
    expected = [
        sys.executable, "-m", "twinbot", "train", "--data", str(tmp_path / "my data"),
        "--out", str(tmp_path / "runs" / "me"), "--epochs", "2", "--resume", "auto",
    ]  # fmt: skip
    assert f"  {shlex.join(expected)}" in out.splitlines()
    assert tools.calls == []


def test_cli_refuses_options_train_does_not_take(
    tmp_path: Path,
    home: Path,
    tools: FakeTools,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["schedule", "--out", "runs/me", "--", "--epoch", "2"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: No such option: --epoch") and err.count("\n") == 1
    assert "see `twinbot train --help`" in err
    code, _, err = _cli(["schedule", "--", "--overwrite"], monkeypatch, capsys)
    assert code == 2 and "--overwrite cannot be scheduled" in err
