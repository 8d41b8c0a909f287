"""`twinbot schedule`: start training at a time of day, and again at login or boot after an interruption.

Every platform gets one job that runs `PYTHON -m twinbot train ARGS --resume auto` in the folder
`twinbot schedule` ran in (where `.env` is read), at the time and at login/boot. `--resume auto`
(`twinbot.finetune.resume`) makes the repeats safe: an interrupted run continues, a finished run is left
alone, and another run's folder is refused. One job, not two, so that the scheduler itself never starts a
second training while one runs:

- Windows: a Task Scheduler task with a CalendarTrigger and a LogonTrigger for this user, imported with
  `schtasks /Create /XML` (`/SC ONLOGON` would need an administrator, as it means any user's logon; `/TR`
  is limited to 261 characters and has no working folder).
- macOS: a LaunchAgent (~/Library/LaunchAgents) with StartCalendarInterval and RunAtLoad.
- Linux: a systemd user timer (OnCalendar, Persistent=true) and its service, also started with the user's
  default.target (at login); cron (`@reboot` and the time, under `flock`) where systemd user units are
  unavailable.

Everything is per user: nothing system-wide, never sudo. Commands are argument lists, and each file format
is escaped by its own rules (XML, plist, systemd's quoting and specifiers, the shell and `%` in crontab).
"""

from __future__ import annotations

import getpass
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from twinbot.errors import TwinbotError, one_line
from twinbot.fileio import atomic_path, cache_dir, make_user_only

Platform = Literal["windows", "macos", "linux", "cron"]
PLATFORMS: tuple[Platform, ...] = ("windows", "macos", "linux", "cron")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")

# `twinbot train` options whose value is a path: made absolute. (--model only when it names a local path.)
PATH_OPTIONS = frozenset({"--data", "--out", "-o", "--config"})
# Options the job cannot take: it adds --resume auto itself, and --overwrite would retrain every night.
REFUSED_OPTIONS = frozenset({"--resume", "--overwrite", "--print-config"})

TASK_NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"
STOP_TIMEOUT_SECONDS = 300  # systemd: time to finish the step and save a checkpoint after SIGINT


@dataclass(frozen=True)
class Job:
    """What the scheduler starts, when, and where."""

    name: str  # `--name`: the task is twinbot-NAME (Windows, systemd, cron), the agent twinbot.NAME (macOS)
    hour: int
    minute: int
    weekdays: tuple[int, ...]  # 0 = Monday; empty = every day
    command: tuple[str, ...]  # PYTHON -m twinbot train ... --resume auto
    working_dir: Path  # where it runs: the folder `twinbot schedule` ran in (its .env is read)
    log_dir: Path  # where launchd and cron write the output, and cron's lock file

    @property
    def task_name(self) -> str:
        return f"twinbot-{self.name}"

    @property
    def when(self) -> str:
        days = "on " + ",".join(WEEKDAYS[day] for day in self.weekdays) if self.weekdays else "every day"
        return f"{self.hour:02d}:{self.minute:02d} {days}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.task_name}.log"


@dataclass(frozen=True)
class JobFile:
    """A file the job consists of, written by --install."""

    path: Path
    text: str
    encoding: str = "utf-8"


def parse_time(text: str) -> tuple[int, int]:
    """`--at`: H:MM or HH:MM, 24-hour clock."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise TwinbotError(f"--at {text!r}: expected a time of day as HH:MM, e.g. --at 23:00")
    return int(match.group(1)), int(match.group(2))


def parse_days(text: str) -> tuple[int, ...]:
    """`--days`: daily, or day names separated by commas (mon,tue or monday,tuesday). Empty = daily."""
    cleaned = text.strip().lower()
    if cleaned in ("daily", "every day", "all"):
        return ()
    days: set[int] = set()
    for part in cleaned.split(","):
        name = part.strip()
        if name in WEEKDAYS:
            days.add(WEEKDAYS.index(name))
        elif name in _FULL_WEEKDAYS:
            days.add(_FULL_WEEKDAYS.index(name))
        else:
            raise TwinbotError(f"--days {text!r}: expected daily, or days like mon,tue,wed (mon ... sun)")
    return () if len(days) == 7 else tuple(sorted(days))


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TwinbotError(f"--name {name!r}: use up to 40 letters, digits, - and _")
    return name


def current_platform() -> Platform:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def option_arguments(named: Mapping[str, object | None], overrides: Sequence[str]) -> list[str]:
    """`twinbot train` arguments from `schedule`'s own train options: {"--data": value, ...} (None: not
    given) and the `--set KEY=VALUE` overrides."""
    given = [part for flag, value in named.items() if value is not None for part in (flag, str(value))]
    return given + [part for item in overrides for part in ("--set", item)]


def train_arguments(args: Sequence[str], working_dir: Path) -> list[str]:
    """The `twinbot train` arguments for the job: path options made absolute (against `working_dir`), the
    options the job sets itself refused, then `--resume auto`."""
    result: list[str] = []
    tokens = list(args)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        option, has_value, value = token.partition("=")
        if option in REFUSED_OPTIONS:
            raise TwinbotError(
                f"{option} cannot be scheduled: the job passes --resume auto, which continues an "
                "unfinished run and leaves a finished one alone; leave it out"
            )
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        setting = value if has_value else following
        if option == "--set" and setting.strip().upper().startswith("RESUME="):
            raise TwinbotError("--set RESUME=... cannot be scheduled: the job passes --resume auto")
        takes_path = option in PATH_OPTIONS or option == "--model"
        if takes_path and has_value:
            result.append(f"{option}={absolute_path(option, value, working_dir)}")
        elif takes_path and index + 1 < len(tokens):
            result += [token, absolute_path(option, tokens[index + 1], working_dir)]
            index += 1
        else:
            result.append(token)
        index += 1
    return [*result, "--resume", "auto"]


def absolute_path(option: str, value: str, working_dir: Path) -> str:
    path = Path(value).expanduser()
    if option == "--model" and not (working_dir / path).exists():
        return value  # a Hugging Face id, not a path
    return str(path if path.is_absolute() else (working_dir / path).absolute())


def make_job(
    name: str,
    at: str,
    days: str,
    train_args: Sequence[str],
    working_dir: Path | None = None,
    python: str | None = None,
) -> Job:
    hour, minute = parse_time(at)
    folder = (working_dir or Path.cwd()).absolute()
    command = (python or sys.executable, "-m", "twinbot", "train", *train_arguments(train_args, folder))
    for part in (*command, str(folder)):
        if "\n" in part or "\r" in part or "\0" in part:
            raise TwinbotError(f"{part!r}: a line break cannot be part of a scheduled command")
    return Job(
        name=check_name(name),
        hour=hour,
        minute=minute,
        weekdays=parse_days(days),
        command=command,
        working_dir=folder,
        log_dir=cache_dir() / "schedule",
    )


# --- Windows: Task Scheduler -------------------------------------------------------------------------------


def windows_user() -> str:
    """DOMAIN\\user, as the LogonTrigger and the principal name this user."""
    user = os.environ.get("USERNAME") or getpass.getuser()
    domain = os.environ.get("USERDOMAIN")
    return f"{domain}\\{user}" if domain else user


def windows_task_xml(job: Job, user: str, now: datetime | None = None) -> str:
    """The task: at the time (daily or on the weekdays) and at this user's logon; one instance at a time,
    on battery too, no time limit (the default stops a task after 72 hours), started late when the
    computer was off at the time (StartWhenAvailable). The XML declaration names no encoding: the file is
    read by its byte order mark (--install writes UTF-16, as Task Scheduler exports) or as UTF-8."""
    ET.register_namespace("", TASK_NAMESPACE)

    def element(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        child = ET.SubElement(parent, f"{{{TASK_NAMESPACE}}}{tag}")
        if text is not None:
            child.text = text
        return child

    task = ET.Element(f"{{{TASK_NAMESPACE}}}Task", {"version": "1.2"})
    info = element(task, "RegistrationInfo")
    element(info, "Description", f"twinbot schedule: twinbot train at {job.when} and at logon")
    triggers = element(task, "Triggers")
    calendar = element(triggers, "CalendarTrigger")
    element(calendar, "StartBoundary", next_start(job, now or datetime.now()).isoformat(timespec="seconds"))
    element(calendar, "Enabled", "true")
    if job.weekdays:
        weekly = element(calendar, "ScheduleByWeek")
        element(weekly, "WeeksInterval", "1")
        days = element(weekly, "DaysOfWeek")
        for day in job.weekdays:
            element(days, _FULL_WEEKDAYS[day].capitalize())
    else:
        element(element(calendar, "ScheduleByDay"), "DaysInterval", "1")
    logon = element(triggers, "LogonTrigger")
    element(logon, "Enabled", "true")
    element(logon, "UserId", user)  # this user's logon: no administrator needed to register it
    principal = element(element(task, "Principals"), "Principal", None)
    principal.set("id", "Author")
    element(principal, "UserId", user)
    element(principal, "LogonType", "InteractiveToken")
    element(principal, "RunLevel", "LeastPrivilege")
    settings = element(task, "Settings")
    for tag, value in (
        ("MultipleInstancesPolicy", "IgnoreNew"),
        ("DisallowStartIfOnBatteries", "false"),
        ("StopIfGoingOnBatteries", "false"),
        ("StartWhenAvailable", "true"),
        ("ExecutionTimeLimit", "PT0S"),
        ("Enabled", "true"),
    ):
        element(settings, tag, value)
    actions = element(task, "Actions")
    actions.set("Context", "Author")
    execute = element(actions, "Exec")
    element(execute, "Command", job.command[0])
    element(execute, "Arguments", subprocess.list2cmdline(job.command[1:]))
    element(execute, "WorkingDirectory", str(job.working_dir))
    ET.indent(task, space="  ")
    return '<?xml version="1.0"?>\n' + ET.tostring(task, encoding="unicode") + "\n"


def next_start(job: Job, now: datetime) -> datetime:
    """The first start from now on: a time already past today starts tomorrow (a start boundary in the past
    could count as a missed start, which StartWhenAvailable would run at once)."""
    today = now.replace(hour=job.hour, minute=job.minute, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)


def windows_files(job: Job) -> list[JobFile]:
    xml = windows_task_xml(job, windows_user())
    return [JobFile(job.log_dir / f"{job.task_name}.xml", xml, encoding="utf-16")]


def windows_install_commands(job: Job) -> list[list[str]]:
    xml_file = str(windows_files(job)[0].path)
    return [["schtasks", "/Create", "/TN", job.task_name, "/XML", xml_file, "/F"]]


def windows_uninstall_commands(job: Job) -> list[list[str]]:
    return [["schtasks", "/Delete", "/TN", job.task_name, "/F"]]


# --- macOS: launchd ----------------------------------------------------------------------------------------


def launchd_label(job: Job) -> str:
    return f"twinbot.{job.name}"


def launch_agent_path(job: Job) -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{launchd_label(job)}.plist"


def launch_agent_plist(job: Job, run_at_load: bool = True) -> str:
    """The agent: at the time (launchd runs a time missed while asleep at wake-up) and when loaded, which
    is at login."""
    moments: list[dict[str, int]] = [
        {"Weekday": (day + 1) % 7, "Hour": job.hour, "Minute": job.minute} for day in job.weekdays
    ] or [{"Hour": job.hour, "Minute": job.minute}]
    agent = {
        "Label": launchd_label(job),
        "ProgramArguments": list(job.command),
        "WorkingDirectory": str(job.working_dir),
        "StartCalendarInterval": moments[0] if len(moments) == 1 else moments,
        "RunAtLoad": run_at_load,
        "StandardOutPath": str(job.log_file),
        "StandardErrorPath": str(job.log_file),
    }
    return plistlib.dumps(agent, sort_keys=False).decode("utf-8")


def launchd_domain() -> str:
    """This user's GUI session, where LaunchAgents run (printed elsewhere: 501, the first user's id)."""
    return f"gui/{os.getuid() if hasattr(os, 'getuid') else 501}"


def macos_install_commands(job: Job) -> list[list[str]]:
    return [["launchctl", "bootstrap", launchd_domain(), str(launch_agent_path(job))]]


def macos_uninstall_commands(job: Job) -> list[list[str]]:
    return [["launchctl", "bootout", f"{launchd_domain()}/{launchd_label(job)}"]]


# --- Linux: systemd user units -------------------------------------------------------------------------------


def systemd_user_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME")
    return (Path(config) if config else Path.home() / ".config") / "systemd" / "user"


def systemd_quote(argument: str) -> str:
    """One ExecStart= argument: `%` and `$` doubled (specifiers, variables), quoted when it has spaces,
    quotes or backslashes (C-style escapes inside double quotes)."""
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if escaped and not re.search(r"[\s\"'\\;]", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_calendar(job: Job) -> str:
    days = ",".join(WEEKDAYS[day].capitalize() for day in job.weekdays)
    return f"{days + ' ' if days else ''}*-*-* {job.hour:02d}:{job.minute:02d}:00"


def systemd_files(job: Job) -> list[JobFile]:
    folder = systemd_user_dir()
    service = "\n".join(
        [
            "[Unit]",
            f"Description=twinbot train, scheduled by twinbot schedule ({job.when} and at login)",
            "",
            "[Service]",
            "Type=simple",
            f"WorkingDirectory={str(job.working_dir).replace('%', '%%')}",
            "ExecStart=" + " ".join(systemd_quote(part) for part in job.command),
            "# stopped (logout, shutdown): Ctrl-C's signal, so training saves a checkpoint first",
            "KillSignal=SIGINT",
            f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )
    timer = "\n".join(
        [
            "[Unit]",
            f"Description=twinbot train at {job.when}, scheduled by twinbot schedule",
            "",
            "[Timer]",
            f"OnCalendar={systemd_calendar(job)}",
            "Persistent=true",
            f"Unit={job.task_name}.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return [
        JobFile(folder / f"{job.task_name}.service", service),
        JobFile(folder / f"{job.task_name}.timer", timer),
    ]


def systemd_install_commands(job: Job) -> list[list[str]]:
    return [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", f"{job.task_name}.service"],
        ["systemctl", "--user", "enable", "--now", f"{job.task_name}.timer"],
    ]


def systemd_uninstall_commands(job: Job) -> list[list[str]]:
    # a training the job started goes on; only the starts to come are removed
    return [
        ["systemctl", "--user", "disable", "--now", f"{job.task_name}.timer"],
        ["systemctl", "--user", "disable", f"{job.task_name}.service"],
    ]


def systemd_user_available() -> bool:
    """Whether this session has a systemd user manager to install units into."""
    if shutil.which("systemctl") is None:
        return False
    try:
        probe = subprocess.run(
            ["systemctl", "--user", "show-environment"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


# --- cron ----------------------------------------------------------------------------------------------------


def cron_quote(argument: str) -> str:
    """A shell word for a crontab line: shell-quoted, and `%` escaped (cron turns a bare one into a newline)."""
    return shlex.quote(argument).replace("%", "\\%")


def cron_block(job: Job) -> str:
    """The crontab lines: at boot and at the time, each under `flock -n` so the two never train at once,
    with the output appended to the log file."""
    lock = job.log_dir / f"{job.task_name}.lock"
    command = " ".join(
        [
            "cd",
            cron_quote(str(job.working_dir)),
            "&&",
            "flock",
            "-n",
            cron_quote(str(lock)),
            *(cron_quote(part) for part in job.command),
            ">>",
            cron_quote(str(job.log_file)),
            "2>&1",
        ]
    )
    days = ",".join(str((day + 1) % 7) for day in job.weekdays) or "*"
    return "\n".join(
        [
            cron_begin(job),
            f"@reboot {command}",
            f"{job.minute} {job.hour} * * {days} {command}",
            cron_end(job),
            "",
        ]
    )


def cron_begin(job: Job) -> str:
    return f"# BEGIN {job.task_name} (twinbot schedule; `twinbot schedule --name {job.name} --uninstall` removes it)"


def cron_end(job: Job) -> str:
    return f"# END {job.task_name}"


def has_cron_block(crontab: str, job: Job) -> bool:
    return any(line.startswith(f"# BEGIN {job.task_name} ") for line in crontab.splitlines())


def without_cron_block(crontab: str, job: Job) -> str:
    """The crontab without this job's lines (from an earlier --install)."""
    kept: list[str] = []
    inside = False
    for line in crontab.splitlines():
        if line.startswith(f"# BEGIN {job.task_name} "):
            inside = True
        elif inside and line.strip() == cron_end(job):
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


# --- what `twinbot schedule` prints and does ------------------------------------------------------------


def job_files(job: Job, platform: Platform) -> list[JobFile]:
    if platform == "windows":
        return windows_files(job)
    if platform == "macos":
        return [JobFile(launch_agent_path(job), launch_agent_plist(job))]
    if platform == "linux":
        return systemd_files(job)
    return []


def install_commands(job: Job, platform: Platform) -> list[list[str]]:
    return {
        "windows": windows_install_commands,
        "macos": macos_install_commands,
        "linux": systemd_install_commands,
        "cron": lambda _: [],
    }[platform](job)


def uninstall_commands(job: Job, platform: Platform) -> list[list[str]]:
    return {
        "windows": windows_uninstall_commands,
        "macos": macos_uninstall_commands,
        "linux": systemd_uninstall_commands,
        "cron": lambda _: [],
    }[platform](job)


def command_line(arguments: Sequence[str], platform: Platform) -> str:
    """An argument list as the platform's shell reads it."""
    return subprocess.list2cmdline(list(arguments)) if platform == "windows" else shlex.join(arguments)


def describe(job: Job, platform: Platform) -> str:
    """The job for `platform`: the command, the files and the commands that install it."""
    kind = {
        "windows": "Task Scheduler task",
        "macos": "launchd agent",
        "linux": "systemd user timer",
        "cron": "crontab lines",
    }[platform]
    again = "boot" if platform == "cron" else "login"
    lines = [
        f"{job.task_name} ({kind}): starts training at {job.when}, and at {again}; "
        f"--resume auto continues an interrupted run and leaves a finished one alone",
        "",
        f"command, run in {job.working_dir}:",
        f"  {command_line(job.command, platform)}",
    ]
    for file in job_files(job, platform):
        lines += ["", f"{file.path}:", *(f"  {line}" for line in file.text.rstrip("\n").splitlines())]
    if platform == "cron":
        lines += [
            "",
            f"crontab lines (`crontab -e`; create {job.log_dir} first):",
            *(f"  {line}" for line in cron_block(job).rstrip("\n").splitlines()),
        ]
    commands = install_commands(job, platform)
    if commands:
        lines += ["", "then:", *(f"  {command_line(command, platform)}" for command in commands)]
    if platform in ("macos", "cron"):
        lines += ["", f"output: {job.log_file}"]
    lines += ["", "`twinbot schedule ... --install` does this for you; `--uninstall` removes it."]
    return "\n".join(lines)


def install(job: Job, platform: Platform) -> list[str]:
    """Write the job's files and register it, for this user; the status lines to print."""
    job.log_dir.mkdir(parents=True, exist_ok=True)
    make_user_only(job.log_dir)
    if platform == "cron":
        write_crontab(without_cron_block(read_crontab(), job) + cron_block(job))
        return [f"installed: crontab lines {job.task_name} (`crontab -l`); output: {job.log_file}"]
    if platform == "macos":
        return install_launch_agent(job)
    files = job_files(job, platform)
    for file in files:
        write_file(file)
    for command in install_commands(job, platform):
        run_tool(command)
    where = ", ".join(str(file.path) for file in files)
    return [f"installed: {job.task_name} ({where}); it starts training at {job.when}, and at login"]


def install_launch_agent(job: Job) -> list[str]:
    """Loading an agent runs a RunAtLoad job at once, which would start training now: it is loaded without
    RunAtLoad, and the file then gets it, for launchd to read at the next login."""
    path = launch_agent_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_tool(macos_uninstall_commands(job)[0], check=False)  # an earlier version of it, if loaded
    write_file(JobFile(path, launch_agent_plist(job, run_at_load=False)))
    for command in macos_install_commands(job):
        run_tool(command)
    write_file(JobFile(path, launch_agent_plist(job, run_at_load=True)))
    return [
        f"installed: {launchd_label(job)} ({path}); it starts training at {job.when} and at login; "
        f"output: {job.log_file}"
    ]


def uninstall(job: Job, platform: Platform) -> list[str]:
    """Unregister the job and delete its files; a missing job is not an error."""
    if platform == "cron":
        crontab = read_crontab()
        if not has_cron_block(crontab, job):
            return [f"nothing to remove: no crontab lines {job.task_name}"]
        write_crontab(without_cron_block(crontab, job))
        return [f"removed: crontab lines {job.task_name}"]
    found = False
    for command in uninstall_commands(job, platform):
        found = run_tool(command, check=False) or found
    for file in job_files(job, platform):
        if file.path.exists():
            file.path.unlink()
            found = True
    if platform == "linux":
        run_tool(["systemctl", "--user", "daemon-reload"], check=False)
    if not found:
        return [f"nothing to remove: no {job.task_name}"]
    if platform == "macos":  # bootout stops the agent's process too
        return [f"removed: {launchd_label(job)}; a training it was running stopped (--resume continues it)"]
    return [f"removed: {job.task_name}; a training it started goes on until it ends"]


def write_file(file: JobFile) -> None:
    file.path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(file.path) as tmp:
        tmp.write_text(file.text, encoding=file.encoding)


def run_tool(arguments: Sequence[str], check: bool = True, input_text: str | None = None) -> bool:
    """Run a scheduler's command-line tool; False (or, with `check`, a TwinbotError) when it fails."""
    try:
        done = subprocess.run(list(arguments), input=input_text, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        if not check:
            return False
        raise TwinbotError(f"{arguments[0]} not found; is this the platform's own scheduler?") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        if not check:
            return False
        raise TwinbotError(f"`{shlex.join(arguments)}` failed ({one_line(exc)})") from exc
    if done.returncode != 0 and check:
        said = (done.stderr or done.stdout or "").strip().splitlines()
        raise TwinbotError(
            f"`{shlex.join(arguments)}` failed (exit {done.returncode}"
            f"{': ' + said[0].strip() if said else ''}); nothing else was changed after it"
        )
    return done.returncode == 0


def read_crontab() -> str:
    try:
        done = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise TwinbotError("crontab not found: install cron, or use systemd user units") from exc
    if done.returncode != 0:
        said = (done.stderr or "").strip()
        if "no crontab" in said.lower():
            return ""
        raise TwinbotError(
            f"`crontab -l` failed (exit {done.returncode}: {said.splitlines()[0] if said else ''})"
        )
    return done.stdout


def write_crontab(text: str) -> None:
    run_tool(["crontab", "-"], input_text=text)


def resolve_platform(requested: str | None, installing: bool) -> Platform:
    """--platform, else this machine's. Linux on this machine: systemd user units when this session has a
    user manager, else cron. --install and --uninstall act on this machine only."""
    machine = current_platform()
    chosen = machine if requested is None else requested.strip().lower()
    if chosen not in PLATFORMS:
        raise TwinbotError(f"--platform {requested!r}: use one of {', '.join(PLATFORMS)}")
    if chosen == "linux" and machine == "linux" and not systemd_user_available():
        chosen = "cron"
    allowed = ("linux", "cron") if machine == "linux" else (machine,)
    if installing and chosen not in allowed:
        raise TwinbotError(
            f"--platform {chosen} only prints the job: --install and --uninstall act on this machine "
            f"({machine}); leave --platform out"
        )
    return chosen  # type: ignore[return-value]


def run_schedule(
    job: Job, platform: str | None = None, install_job: bool = False, uninstall_job: bool = False
) -> str:
    """`twinbot schedule`: the job described for `platform` (default: this machine's), or installed or
    uninstalled for this user; the text to print."""
    if install_job and uninstall_job:
        raise TwinbotError("--install and --uninstall: pass only one")
    chosen = resolve_platform(platform, installing=install_job or uninstall_job)
    if install_job:
        return "\n".join(install(job, chosen))
    if uninstall_job:
        return "\n".join(uninstall(job, chosen))
    return describe(job, chosen)
