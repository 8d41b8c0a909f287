"""WhatsApp date order: decided from every line (fields > 12, then the sequence of dates, then the clock
as a stated guess), said in `parse`'s summary and report.json, overridden by --date-order."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import pytest

from twinbot.cli import main
from twinbot.data.sources import ParseOptions, whatsapp
from twinbot.errors import TwinbotError


def write(tmp_path: Path, lines: list[str], name: str = "WhatsApp Chat with Sam.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path: Path, **options: object) -> tuple[list[date], ParseOptions]:
    parse_options = ParseOptions(**options)  # type: ignore[arg-type]
    dates = [m.timestamp.date() for m in whatsapp.parse(path, parse_options)]
    return dates, parse_options


def test_a_first_field_above_12_decides_and_is_counted(tmp_path: Path) -> None:
    lines = [f"0{d}/03/24, 10:00 - Sam: hi" for d in range(1, 10)] + ["14/03/24, 10:00 - Me: later"]
    dates, options = read(write(tmp_path, lines))
    assert dates[0] == date(2024, 3, 1)
    [note] = options.date_notes
    assert (note.order, note.guessed, note.chat_id) == ("dmy", False, "Sam")
    assert note.reason == "1 of 10 dates have a first field > 12"


def test_a_second_field_above_12_means_month_first(tmp_path: Path) -> None:
    _, options = read(write(tmp_path, ["3/1/24, 9:00 AM - Sam: hi", "3/15/24, 9:00 AM - Me: yo"]))
    assert (options.date_notes[0].order, options.date_notes[0].reason) == (
        "mdy",
        "1 of 2 dates have a second field > 12",
    )


def test_sequence_decides_when_every_date_is_ambiguous(tmp_path: Path) -> None:
    # read day-first: 1 Feb, 2 Feb, ..., 12 Feb (each the next day); month-first: 2 Jan, 2 Feb, ...
    lines = [f"{d:02d}/02/24, 23:50 - Sam: day {d}" for d in range(1, 13)]
    dates, options = read(write(tmp_path, lines))
    assert dates[:2] == [date(2024, 2, 1), date(2024, 2, 2)]
    [note] = options.date_notes
    assert (note.order, note.guessed) == ("dmy", False)
    assert "11 of 11 date changes are to the next day read day-first, 0 read month-first" in note.reason


def test_sequence_picks_month_first_when_day_first_would_go_back(tmp_path: Path) -> None:
    # 01/02, 01/03, 02/01: month-first Jan 2, Jan 3, Feb 1 (forward); day-first 1 Feb, 1 Mar, 2 Jan (back)
    lines = ["01/02/24, 10:00 - Sam: a", "01/03/24, 10:00 - Me: b", "02/01/24, 10:00 - Sam: c"]
    dates, options = read(write(tmp_path, lines))
    assert dates == [date(2024, 1, 2), date(2024, 1, 3), date(2024, 2, 1)]
    [note] = options.date_notes
    assert note.order == "mdy" and not note.guessed
    assert "read day-first, 1 of 2 date changes would go back in time" in note.reason


@pytest.mark.parametrize(
    ("lines", "order"),
    [
        (["03/04/20, 10:00 - Alex: every date", "04/05/20, 10:00 - Sam: fits both"], "dmy"),
        (["03/04/20, 10:00 AM - Alex: every date", "04/05/20, 10:00 PM - Sam: fits both"], "mdy"),
    ],
)
def test_no_evidence_is_a_stated_guess_from_the_clock(tmp_path: Path, lines: list[str], order: str) -> None:
    _, options = read(write(tmp_path, lines))
    [note] = options.date_notes
    assert (note.order, note.guessed) == (order, True)
    assert "(a guess)" in note.describe()


def test_overrides_and_the_dayfirst_alias(tmp_path: Path) -> None:
    path = write(tmp_path, ["03/04/20, 10:00 - Alex: x", "04/05/20, 10:00 - Sam: y"])
    assert read(path, date_order="mdy")[0] == [date(2020, 3, 4), date(2020, 4, 5)]
    assert read(path, dayfirst=False)[0] == [date(2020, 3, 4), date(2020, 4, 5)]
    assert read(path, dayfirst=True)[0] == [date(2020, 4, 3), date(2020, 5, 4)]
    dates, options = read(path, date_order="ymd", dayfirst=False)  # --date-order wins over the alias
    assert dates == [date(2003, 4, 20), date(2004, 5, 20)]
    assert options.date_notes[0].reason == "given with --date-order"
    assert read(path, dayfirst=False)[1].date_notes[0].reason == "given with --monthfirst"


def test_contradicting_dates_name_the_new_option(tmp_path: Path) -> None:
    path = write(tmp_path, ["13/01/21, 10:00 - A: day-first", "01/14/21, 10:00 - B: month-first"])
    with pytest.raises(TwinbotError, match="--date-order dmy or mdy") as info:
        read(path)
    assert info.value.line == 2


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["twinbot", *args])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_parse_summary_states_the_order(monkeypatch, capsys, tmp_path: Path) -> None:
    path = write(tmp_path, ["14/03/24, 10:00 - Sam: hi", "15/03/24, 10:00 - Me: yo"])
    code, out, err = run_cli(monkeypatch, capsys, "parse", str(path))
    assert (code, err) == (0, "")
    assert "date order" in out and "day-first: 2 of 2 dates have a first field > 12" in out
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "parse",
        "--date-order",
        "MDY",
        str(write(tmp_path, ["03/04/20, 10:00 - A: x"], "b.txt")),
    )
    assert code == 0 and "month-first: given with --date-order" in out


def test_bad_date_order_is_a_one_line_error(monkeypatch, capsys, tmp_path: Path) -> None:
    path = write(tmp_path, ["14/03/24, 10:00 - Sam: hi"])
    code, out, err = run_cli(monkeypatch, capsys, "parse", "--date-order", "dm", str(path))
    assert (
        code == 2
        and out == ""
        and err.count("\n") == 1
        and "--date-order must be one of dmy, mdy, ymd" in err
    )


def test_prepare_report_states_the_order(monkeypatch, capsys, tmp_path: Path) -> None:
    lines = []
    for day in range(1, 13):
        lines += [
            f"{day:02d}/02/24, 20:00 - Sam: how was day {day}?",
            f"{day:02d}/02/24, 20:01 - Me: fine, thanks {day}",
        ]
    path = write(tmp_path, lines)
    out = tmp_path / "data"
    code, _, err = run_cli(
        monkeypatch, capsys, "prepare", str(path), "--me", "Me", "--out", str(out), "--eval-fraction", "0"
    )
    assert (code, err) == (0, ""), err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    [entry] = report["date_order"]
    assert entry["order"] == "dmy" and entry["guessed"] is False and "next day" in entry["reason"]
    assert "Sam" not in json.dumps(report["date_order"])
