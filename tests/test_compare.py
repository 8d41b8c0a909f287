"""`twinbot compare` on hand-made run folders: table, plot, relative quality, and the file `plan` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinbot.errors import TwinbotError
from twinbot.finetune.plan.recommendation import read_quality
from twinbot.quality.compare import PLOT_FILE, TABLE_FILE, run_compare, share_of_gain


def _model(
    loss: float, distance: float, memorised: float = 0.0, auc: tuple[float, float, float] | None = None
) -> dict:
    model: dict = {
        "eval_loss": loss,
        "style_distance": {"score": distance, "gaps": []},
        "memorisation": {"memorised_share": memorised, "placeholders": 0, "canaries_found": []},
    }
    if auc is not None:  # (AUC, low, high) of the twin detector
        model["detection"] = {"auc": auc[0], "auc_ci": [auc[1], auc[2]], "verdict": "distinguishable"}
    return model


def make_run(
    root: Path,
    name: str,
    preset: str,
    data: Path,
    loss: float,
    distance: float,
    wall: float = 100.0,
    auc: tuple[float, float, float] | None = None,
) -> Path:
    run = root / name
    (run / "eval").mkdir(parents=True)
    summary = {"wall_seconds": wall, "tokens_per_second": 1000 / wall, "config": {"preset": preset}}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    from twinbot.runs import file_sha256

    result = {
        "twinbot_eval": 1,
        "data_dir": str(data),
        "train_sha256": file_sha256(data / "train.jsonl"),
        "base": _model(3.0, 0.5, auc=None if auc is None else (0.97, 0.94, 0.99)),
        "adapter": _model(loss, distance, memorised=0.25 if preset == "fast" else 0.0, auc=auc),
    }
    (run / "eval" / "eval.json").write_text(json.dumps(result), encoding="utf-8")
    return run


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"messages": []}\n', encoding="utf-8")
    return folder


def test_share_of_gain() -> None:
    assert share_of_gain(3.0, 2.0, 2.0) == 100
    assert share_of_gain(3.0, 2.0, 2.5) == 50
    assert share_of_gain(3.0, 2.0, 1.5) == 150
    assert share_of_gain(3.0, 3.5, 2.0) is None  # the reference got worse than the base model: no scale
    assert share_of_gain(None, 2.0, 2.0) is None


def test_compare_table_plot_and_plan_quality(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture
) -> None:
    runs_root = tmp_path / "runs"
    fast = make_run(runs_root, "fast", "fast", data, loss=2.5, distance=0.35, wall=50, auc=(0.81, 0.7, 0.9))
    baseline = make_run(
        runs_root, "baseline", "baseline", data, loss=2.0, distance=0.3, wall=200
    )  # no detector
    results = run_compare([fast, baseline])

    by_name = {r.name: r for r in results}
    assert by_name["baseline"].loss_quality == 100 and by_name["baseline"].style_quality == 100
    assert by_name["fast"].reference == "baseline"  # the baseline preset, not the first run
    assert by_name["fast"].loss_quality == 50  # (3.0 - 2.5) / (3.0 - 2.0)
    assert by_name["fast"].style_quality == 75  # (0.5 - 0.35) / (0.5 - 0.3)

    table = (runs_root / TABLE_FILE).read_text(encoding="utf-8")
    assert (
        "| fast | fast | 2.500 (base 3.000) | 0.350 (base 0.500) | 0.81 (0.70-0.90; base 0.97) | 25.0% |"
        in table
    )
    assert "| baseline | baseline | 2.000 (base 3.000) | 0.300 (base 0.500) | - | 0.0% |" in table
    assert "detector AUC: how well a classifier" in table
    assert "50.0%" in table and "75.0%" in table and "eval loss (mean cross-entropy" in table
    assert (runs_root / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "compare.json" in capsys.readouterr().out

    quality = read_quality(data)  # what `twinbot plan` reads
    assert quality.measured
    assert {(r.preset, r.eval_loss, r.style_distance) for r in quality.results} == {
        ("fast", 2.5, 0.35),
        ("baseline", 2.0, 0.3),
    }
    by_preset = {r.preset: r for r in quality.results}
    assert (by_preset["fast"].detection_auc, by_preset["fast"].detection_auc_low) == (0.81, 0.7)
    assert by_preset["fast"].detection_auc_high == 0.9 and by_preset["baseline"].detection_auc is None


def test_compare_without_baseline_uses_first_run(tmp_path: Path, data: Path) -> None:
    one = make_run(tmp_path, "one", "optimized", data, loss=2.2, distance=0.4)
    two = make_run(tmp_path, "two", "fast", data, loss=2.6, distance=0.45)
    results = run_compare([one, two], out=tmp_path / "out")
    assert [r.reference for r in results] == ["one", "one"]
    assert results[1].loss_quality == 50 and results[1].style_quality == 50
    assert (tmp_path / "out" / TABLE_FILE).is_file()


def test_compare_needs_an_evaluated_run(tmp_path: Path, data: Path) -> None:
    run = make_run(tmp_path, "r", "fast", data, 2.0, 0.3)
    (run / "eval" / "eval.json").unlink()
    with pytest.raises(TwinbotError, match=r"run `twinbot eval .*r` first"):
        run_compare([run])
    (run / "eval" / "eval.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TwinbotError, match=r"unreadable eval\.json"):
        run_compare([run])
    with pytest.raises(TwinbotError, match="not a finished"):
        run_compare([tmp_path / "missing"])


def test_plan_ignores_compare_for_other_data(tmp_path: Path, data: Path) -> None:
    run = make_run(tmp_path, "r", "fast", data, 2.0, 0.3)
    (data / "train.jsonl").write_text('{"messages": [1]}\n', encoding="utf-8")  # data changed after eval
    run_compare([run])
    assert not (data / "compare.json").exists()
    assert not read_quality(data).measured
