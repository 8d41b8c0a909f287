"""`--resume auto` (RESUME=auto): start a new run, continue an interrupted one, leave a finished one alone,
refuse another run's folder; and the `--resume [yes|auto|no]` option that keeps plain `--resume` working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.runs import TrainedRun
from support.training import assert_same_adapter, make_config, train_only_data
from twinbot.cli import option_value_given
from twinbot.errors import TwinbotError
from twinbot.finetune import recipe as train
from twinbot.finetune.config import ENV_KEYS, TrainConfig, resolve_train_config
from twinbot.finetune.resume import ResumeDecision, decide_auto_resume, resume_argument
from twinbot.runs import list_checkpoints

REPO_ROOT = Path(__file__).resolve().parent.parent


def _short(model_dir: Path, run: Path, data: Path, **changes: object) -> TrainConfig:
    """Two steps, a checkpoint after each, no evaluation: the shortest run that can be interrupted."""
    return make_config(model_dir, run, data, max_steps=2, save_every=1, resume="auto", **changes)


def _interrupt_after_first_step(run: Path) -> None:
    """RUN as a run killed after its first checkpoint: no step-2 checkpoint, adapter or summary."""
    shutil.rmtree(list_checkpoints(run)[-1])
    shutil.rmtree(run / "adapter")
    (run / "summary.json").unlink()


def test_auto_starts_continues_and_leaves_a_finished_run_alone(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = train_only_data(tmp_path)
    run = tmp_path / "run"
    config = _short(tiny_model_dir, run, data)

    first = train.main(config)  # no RUN yet: a new run
    assert first.steps == 2 and (run / "summary.json").is_file()
    straight = shutil.copytree(run / "adapter", tmp_path / "straight-adapter")

    _interrupt_after_first_step(run)
    continued = train.main(config)
    err = capsys.readouterr().err
    assert "resuming from" in err and "step-0000001 (step 1 of 2)" in err
    assert continued.steps == 2
    assert_same_adapter(run / "adapter", straight)

    # finished: nothing is loaded or written, even with other settings (the login start repeats)
    monkeypatch.setattr(train, "setup", lambda *a, **k: pytest.fail("a finished run was trained again"))
    summary_before = (run / "summary.json").read_bytes()
    for again in (config, config.model_copy(update={"lora_r": 8})):
        summary = train.main(again)
        assert summary.steps == 2 and summary.output_dir == run
        assert summary.final_train_loss == continued.final_train_loss
    assert "already finished (2 steps); nothing to train" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == summary_before


def test_auto_refuses_an_unfinished_run_with_other_data_or_settings(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = train_only_data(tmp_path)
    run = tmp_path / "run"
    train.main(_short(tiny_model_dir, run, data))
    _interrupt_after_first_step(run)
    files_before = sorted(p.relative_to(run) for p in run.rglob("*"))

    with pytest.raises(
        TwinbotError, match=r"cannot resume: changed since the run started: LORA_R \(4 -> 8\)"
    ):
        train.main(_short(tiny_model_dir, run, data, lora_r=8))
    (data / "train.jsonl").write_text(
        "".join((data / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:-1]),
        encoding="utf-8",
    )
    with pytest.raises(TwinbotError, match="the training data"):
        train.main(_short(tiny_model_dir, run, data))
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == files_before


def test_auto_decision_for_missing_empty_foreign_and_extended_folders(
    tmp_path: Path, tiny_run: TrainedRun
) -> None:
    assert decide_auto_resume(None).resume is False
    assert decide_auto_resume(tmp_path / "missing").resume is False
    (tmp_path / "empty").mkdir()
    assert decide_auto_resume(tmp_path / "empty").resume is False
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep", encoding="utf-8")
    assert decide_auto_resume(foreign) == ResumeDecision(resume=True, finished=None)  # check_paths refuses it

    finished = decide_auto_resume(tiny_run.path)
    assert finished.resume and finished.finished is not None and finished.finished.steps == 2
    # a finished run extended with --resume and stopped again: its newest checkpoint is past the summary
    extended = shutil.copytree(tiny_run.path, tmp_path / "extended")
    newest = list_checkpoints(extended)[-1]
    later = newest.with_name("step-0000003")
    shutil.copytree(newest, later)
    state = (later / "state.json").read_text(encoding="utf-8").replace('"step": 2', '"step": 3')
    (later / "state.json").write_text(state, encoding="utf-8")
    assert decide_auto_resume(extended).finished is None


def test_auto_on_a_folder_that_is_not_a_run_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(TwinbotError, match="not a twinbot run"):
        train.main(_short(tiny_model_dir, foreign, train_only_data(tmp_path)))
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]


def test_resume_argument_and_where_it_comes_from() -> None:
    auto = TrainConfig(resume="auto")
    assert resume_argument(TrainConfig(), None, False, {}) is False
    assert resume_argument(auto, None, False, {"resume": ".env"}) == "auto"
    assert resume_argument(auto, True, False, {}) is True
    assert resume_argument(TrainConfig(), "AUTO", False, {}) == "auto"
    assert resume_argument(TrainConfig(), "yes", False, {}) is True
    # RESUME kept in .env gives way to --overwrite; given with it on the command line it stays (check_paths
    # then refuses the pair)
    assert resume_argument(auto, None, True, {"resume": ".env"}) is False
    assert resume_argument(auto, None, True, {"resume": "environment"}) is False
    assert resume_argument(auto, None, True, {"resume": "cli"}) == "auto"
    with pytest.raises(TwinbotError, match="expected yes, auto or no"):
        resume_argument(TrainConfig(), "maybe", False, {})
    for text, mode in (("true", "yes"), ("0", "no"), (" Auto ", "auto")):
        assert TrainConfig(resume=text).resume == mode


def test_resume_option_alone_means_yes() -> None:
    assert option_value_given(["--resume"], "--resume", "yes") == ["--resume", "yes"]
    assert option_value_given(["--resume", "--data", "d"], "--resume", "yes") == [
        "--resume",
        "yes",
        "--data",
        "d",
    ]
    assert option_value_given(["--data", "d", "--resume", "auto"], "--resume", "yes") == [
        "--data",
        "d",
        "--resume",
        "auto",
    ]
    assert option_value_given(["--resume=auto"], "--resume", "yes") == ["--resume=auto"]
    assert option_value_given(["--resume", "maybe"], "--resume", "yes") == [
        "--resume",
        "maybe",
    ]  # refused by the setting


def _cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    from twinbot.cli import main as cli_main

    for key in ENV_KEYS.values():
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys, "argv", ["twinbot", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.parametrize(
    ("args", "shown"), [(["--resume"], "yes"), (["--resume", "auto"], "auto"), ([], "no")]
)
def test_train_resume_option_values(
    args: list[str],
    shown: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = _cli(["train", *args, "--print-config"], monkeypatch, capsys)
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert code == 0 and rows["resume"][1:3] == [shown, "RESUME"]


def test_train_resume_bad_value_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["train", "--resume", "maybe", "--print-config"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "resume='maybe' (from cli)" in err


def test_cli_auto_on_a_finished_run_exits_0_without_training(
    tiny_run: TrainedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "setup", lambda *a, **k: pytest.fail("a finished run was trained again"))
    code, _, err = _cli(["train", "--out", str(tiny_run.path), "--resume", "auto"], monkeypatch, capsys)
    assert code == 0 and "already finished" in err and "error" not in err


def test_train_lora_reads_resume_auto_from_dotenv(tiny_run: TrainedRun, tmp_path: Path) -> None:
    """The original entry point with RESUME=auto in .env: the scheduled command leaves a finished run."""
    (tmp_path / ".env").write_text(f"OUTPUT_DIR={tiny_run.path}\nRESUME=auto\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS.values()}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "training" / "train_lora.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "already finished" in result.stderr


def test_print_config_shows_resume_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RESUME=auto\n", encoding="utf-8")
    resolved = resolve_train_config({}, environ={}, dotenv_path=tmp_path / ".env")
    assert resolved.config.resume == "auto" and resolved.sources["resume"] == ".env"
