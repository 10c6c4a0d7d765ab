"""Variability sweeps: points validated before any work, per-layer rates, the lost-update probe
against hand-made updates, and `eqprop variability` end to end (folders, summary, plots, resume,
bad input)."""
import dataclasses
import json

import pytest
import torch

from circuits.device_solver import DeviceEulerSolver
from circuits.devices import load_preset
from eqprop.network import Network
from eqprop.topology import mlff
from eqprop_cli.main import main
from experiments.variability import LostUpdateMeter, Point

IDEAL = dataclasses.asdict(load_preset("ideal"))
TINY = ["--dataset", "iris", "--hidden", "3,3", "--seeds", "1", "--epochs", "1", "--free-steps", "20",
        "--nudged-steps", "4", "--train-limit", "10", "--test-limit", "5", "--workers", "0"]


@pytest.mark.parametrize("fields, message", [
    ({"scheme": "layered"}, "scheme must be one of"),
    ({"overrides": {"bitz": 4}}, r"unknown device fields \['bitz'\]"),
    ({"overrides": {"bits": 0}}, "bits must be"),
    ({"backend": "spice"}, "nudge_form 'gradient'"),
    ({"seeds": (0, 0)}, "seeds must be distinct"),
    ({"hidden": (), "scheme": "mlff-layer"}, "per-layer rates need"),
    ({"lr": -1.0}, "learning rates must be >= 0"),
])
def test_a_point_is_checked_on_construction(fields, message):
    with pytest.raises(ValueError, match=message):
        Point(**{"device": IDEAL, **fields})


def test_per_layer_rates_grow_by_the_factor_towards_the_input():
    p = Point(scheme="mlff-layer", device=IDEAL, hidden=(10,) * 5, lr=0.01)
    assert p.rates() == pytest.approx((10.24, 2.56, 0.64, 0.16, 0.04, 0.01))
    assert Point(scheme="sw", device=IDEAL).rates() == 0.01
    assert Point(device=IDEAL, overrides={"bits": None}).name == "wine_5_mlff_bits-float"


def test_the_meter_counts_the_updates_the_devices_did_not_take():
    dev = load_preset("ideal", bits=4, w_max=2.0)  # one level = 2/15; rounding to the nearest level
    net = Network.stack([Network.init(mlff((2, 2, 2)), seed=0, dtype=torch.float64)])
    meter = LostUpdateMeter(DeviceEulerSolver(dev), dev.lsb_weight)
    meter.prepare(net)
    lsb = dev.lsb_weight
    step = torch.zeros_like(net.W)
    for (i, j), s in {(0, 2): 0.3 * lsb, (1, 3): 0.3 * lsb,  # block 0-1: below half a level, lost
                      (2, 4): 0.8 * lsb, (3, 5): 2.0 * lsb}.items():  # block 1-2: both taken, one below a level
        step[0, i, j] = step[0, j, i] = s
    W0 = net.W.clone()
    meter.apply_update(net, step, torch.zeros_like(net.b), torch.ones_like(net.W), torch.ones_like(net.b))
    rep = meter.report()
    assert rep["update_blocks"][0] == ["0-1", "1-2", "skip"]
    assert rep["lost_fraction"][0] == [1.0, 0.0, None]
    assert rep["below_step_fraction"][0] == [1.0, 0.5, None]
    assert torch.equal(net.W[0, 0, 2], W0[0, 0, 2]) and not torch.equal(net.W[0, 2, 4], W0[0, 2, 4])
    assert meter.report()["lost_fraction"][0] == [None, None, None]  # counted per epoch: reset by report()


def test_cli_sweep_writes_a_folder_per_point_a_summary_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["variability", *TINY, "--scheme", "mlff,sw", "--bits", "3,float", "--out", str(out)]) == 0
    names = ["iris_2_mlff_bits-3", "iris_2_mlff_bits-float", "iris_2_sw_bits-3", "iris_2_sw_bits-float"]
    for n in names:
        assert (out / n / "s0" / "metrics.json").exists() and (out / n / "result.json").exists()
        assert json.loads((out / n / "point.json").read_text())["overrides"]["bits"] == (None if "float" in n else 3)
    summary = (out / "summary.md").read_text()
    assert all(f"| {n} |" in summary for n in names)
    assert (out / "error_vs_bits.png").stat().st_size > 0 and (out / "lost_vs_bits.png").stat().st_size > 0
    res = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in res] == names
    assert res[0]["lost_fraction_by_block"][0] == 1.0 > res[1]["lost_fraction_by_block"][0]  # 3 bits lose all
    capsys.readouterr()
    assert main(["variability", *TINY, "--scheme", "mlff,sw", "--bits", "3,float", "--out", str(out)]) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().out


def test_a_sweep_file_sets_the_grid_and_the_device(tmp_path, capsys):
    f = tmp_path / "sweep.toml"
    f.write_text('[point]\ndataset = "iris"\nhidden = [4]\nseeds = 2\n[device]\npreset = "taox_hfox_rram"\n'
                 '[sweep]\nscheme = ["mlff", "sw"]\ng_dtod = [0.0, 0.1]\n')
    assert main(["variability", "--sweep", str(f), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("iris_1_mlff_taox_hfox_rram_g_dtod-0: seeds [0, 1]")
    assert len(lines) == 4 and "iris_1_sw_taox_hfox_rram_g_dtod-0.1" in lines[3]


def test_the_bits_study_takes_its_scale_and_rate_from_flags(tmp_path):
    out = tmp_path / "bits"
    assert main(["variability", "--study", "bits", "--dataset", "iris", "--hidden", "3,3", "--scheme", "mlff-layer",
                 "--bits", "float", "--seeds", "1", "--epochs", "1", "--free-steps", "20", "--lr", "0.2",
                 "--train-limit", "10", "--test-limit", "all", "--workers", "0", "--quiet", "--out", str(out)]) == 0
    p = Point.from_dict(json.loads((out / "iris_2_mlff-layer_bits-float" / "point.json").read_text()))
    assert (p.hidden, p.lr, p.free_steps, p.train_limit, p.test_limit) == ((3, 3), 0.2, 20, 10, None)
    assert p.rates() == pytest.approx((3.2, 0.8, 0.2))  # the per-layer rule on the given output rate
    table = (out / "bits_table.md").read_text()  # the study's table: error and lost % per bit depth
    assert "| data | scheme | float |" in table and "| iris | mlff-layer | deepest 0-1 | " in table


@pytest.mark.parametrize("args, message", [
    (["--set", "g_dtod"], "--set: give FIELD=V1,V2"),
    (["--bits", "2,,4"], "--bits: give a comma-separated list"),
    (["--set", "colour=1,2"], "cannot sweep ['colour']"),
    (["--set", "g_dtod=-0.1"], "device ideal: g_dtod must"),
    (["--study", "bits", "--preset", "pcm"], "--study bits is a named sweep: drop ['--preset']"),
    (["--study", "spread", "--bits", "2"], "--study spread is a named sweep: drop ['--bits']"),
    (["--preset", "nope"], "no device preset 'nope'"),
    (["--device-toml", "missing.toml"], "--device-toml: no such file"),
    (["--scheme", "mlff", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers sets local"),
])
def test_bad_sweeps_fail_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["variability", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not out.exists()


def test_a_limit_is_a_count_or_all(capsys):
    with pytest.raises(SystemExit):
        main(["variability", "--train-limit", "some", "--list"])
    assert "--train-limit: must be an integer >= 1 or 'all', got 'some'" in capsys.readouterr().err
    assert main(["variability", "--dataset", "digits", "--train-limit", "all", "--test-limit", "7", "--list"]) == 0


@pytest.mark.ngspice
def test_the_spice_backend_runs_a_point_through_ngspice(tmp_path):
    from circuits.ngspice_runner import library_available
    from experiments.variability import run_point
    if not library_available():
        pytest.skip("libngspice not found (apt-get install libngspice0)")
    p = Point(dataset="iris", hidden=(2,), scheme="mlff", device=IDEAL, overrides={"bits": 4}, seeds=(0,), epochs=1,
              lr=0.1, nudge_form="gradient", backend="spice", train_limit=5, test_limit=5)
    r = run_point(p, tmp_path)
    m = json.loads((tmp_path / p.name / "s0" / "metrics.json").read_text())
    assert m["solver"]["solver"] == "SpiceSolver" and m["solver"]["level"] == "crossbar"
    assert 0 <= r["test_error"] <= 1 and r["below_step_fraction_by_block"][0] is not None
