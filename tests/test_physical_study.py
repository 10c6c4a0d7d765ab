"""physical-study: a tiny study trained through ngspice (the ideal point and one physical point), read back on a
re-run; bad input refused before any work."""
import json

import numpy as np
import pytest

from circuits.ngspice_runner import library_available
from eqprop_cli.main import main
from experiments.physical_study import physical_study

ngspice = pytest.mark.ngspice
has_library = pytest.mark.skipif(not library_available(), reason="libngspice not found (apt-get install libngspice0)")


@ngspice
@has_library
def test_tiny_study_trains_measures_and_resumes(tmp_path):
    out, folder = tmp_path / "ps", tmp_path / "ps" / "xor"
    kw = dict(seeds=[0], epochs=1, spice={"matrix_solver": "sparse"}, out=out, progress=False)
    summary = physical_study("xor", {"tia_gain": [10.0]}, **kw)
    ideal, clamped, gain = summary["rows"]
    assert (ideal["field"], gain["field"], gain["value"], gain["point"]) == ("ideal", "tia_gain", 10.0, "tia_gain-10")
    assert (clamped["field"], clamped["point"]) == ("clamped", "ideal-clamped")
    for row in (ideal, clamped, gain):  # the accuracy is the Trainer's own final test accuracy of that point
        m = json.loads((folder / row["point"] / "train" / "s0" / "metrics.json").read_text())
        assert len(m["epochs"]) == 1 and row["test_accuracy"] == [1.0 - m["epochs"][-1]["test_error"]]
        assert m["solver"]["level"] == ("physical" if row is gain else "ideal")
        assert m["solver"]["clamp"] == (1e3 if row is clamped else 0.0), "the study's own clamp is none"
    assert gain["vs_ideal"] == pytest.approx(np.mean(gain["test_accuracy"]) - np.mean(ideal["test_accuracy"]))
    # a TIA gain of 10 moves the trained network's equilibrium by tenths of a volt (physical-check: 0.21 V)
    assert ideal["eq_error_v"] == 0.0 and 1e-2 < gain["eq_error_v"] <= 1.0
    assert "| tia_gain | 10 V/V |" in (folder / "summary.md").read_text()
    assert (folder / "accuracy.png").stat().st_size > 1000
    # a re-run reads both finished points back: nothing is trained again
    stamp = (folder / "tia_gain-10" / "result.json").stat().st_mtime_ns
    assert physical_study("xor", {"tia_gain": [10.0]}, **kw)["rows"] == summary["rows"]
    assert (folder / "tia_gain-10" / "result.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="holds another point"):  # other epochs in the same folders
        physical_study("xor", {"tia_gain": [10.0]}, **{**kw, "epochs": 2})


@pytest.mark.parametrize("args, words", [
    (["--sweep", "tia_gian=10"], "unknown non-ideality 'tia_gian'"),
    (["--sweep", "r_wire=10,-1"], "r_wire=-1.0: must not be negative (Ohm per cell)"),
    (["--sweep", "tia_gain=0"], "tia_gain must be > 0 (V/V)"),
    (["--sweep", "preset=nope"], "no physical preset 'nope'"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--sweep", "read_v0=1", "--sweep", "read_v0=2"], "given twice")])
def test_bad_input_is_refused_before_any_work(tmp_path, capsys, args, words):
    out = tmp_path / "ps"
    assert main(["physical-study", *args, "--out", str(out)]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_every_diode_point_has_its_own_folder_and_the_presets_diode_one():
    """Rs, Is and N each name their point; the preset's diode (Rs 100 kOhm, Is 2.52 nA, N 1.752) is one point of
    all three sweeps, trained once."""
    from experiments.physical_study import make_points, point_model
    points, rows = make_points("xor", {"diode_rs": [1e5, 1e4, 1e3], "diode_is": [2.52e-9, 1e-7],
                                       "diode_n": [1.752]}, seeds=[0], epochs=1)
    names = {(f, v): n for f, v, n in rows}
    assert len(points) == 2 + 4, [p.name for p in points]  # ideal, clamped, the preset's diode, Rs 1e4/1e3, Is 1e-7
    preset = names[("diode_rs", 1e5)]
    assert preset == names[("diode_is", 2.52e-9)] == names[("diode_n", 1.752)] == "diode_is-2.52e-09_diode_n-1.752"
    assert names[("diode_rs", 1e3)] == "diode_is-2.52e-09_diode_n-1.752_diode_rs-1000"
    by_name = {p.name: point_model(p.field, p.value) for p in points}
    # the preset with its own nudge is the preset's point; with the other nudge a point of its own
    pts, rows = make_points("xor", {"preset": ["realistic"], "preset_nudge": ["conductance", "current"]}, seeds=[0])
    assert [n for _, _, n in rows[2:]] == ["preset-realistic", "preset-realistic", "preset-realistic_nudge-current"]
    assert len(pts) == 4 and point_model("preset_nudge", "current").nudge == "current"
    with pytest.raises(ValueError, match="nudge"):
        make_points("xor", {"preset_nudge": ["voltage"]}, seeds=[0])
    assert by_name[names[("diode_rs", 1e3)]].diode_rs == 1e3 and by_name[preset].diode_rs == 1e5


def test_a_point_that_stopped_in_its_first_epoch_has_no_accuracy_not_nan(tmp_path):
    """A circuit with no equilibrium (e.g. sinh read devices running away) stops before any epoch: its row says
    '-' and the error, summary.json holds null (not NaN, which is not JSON), and the plot still draws."""
    from experiments.physical_study import Point, summarise, summarise_point
    ideal, bad = Point("xor", "ideal", None, (0, 1)), Point("xor", "read_v0", 0.7, (0, 1))
    epoch = {"epoch": 1, "train_error": 0.25, "test_error": 0.5, "solver": {}}
    ok = [{"config": {"seed": s}, "epochs": [epoch]} for s in (0, 1)]
    stopped = [{"config": {"seed": s}, "epochs": []} for s in (0, 1)]
    error = ("ConvergenceError: example 3, free phase (tran+op): ngspice command 'tran 1e-08 3e-06' failed: "
             "Error: -3.26971e+12 out of range for cosh")
    results = {"ideal": summarise_point(ideal, ok, None, None), bad.name: summarise_point(bad, stopped, None, error)}
    rows = [("ideal", None, "ideal"), ("read_v0", 0.7, bad.name)]
    summary = summarise("xor", rows, results, tmp_path)
    row = summary["rows"][1]
    assert row["test_accuracy"] == [None, None] and row["mean"] is None and row["vs_ideal"] is None
    text = (tmp_path / "summary.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| read_v0"))
    assert "nan" not in line.lower() and "| - | - | - |" in line and "out of range for cosh" in line
    assert "NaN" not in (tmp_path / "summary.json").read_text()
    assert (tmp_path / "accuracy.png").stat().st_size > 0
