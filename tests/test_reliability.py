"""Nothing wrong passes silently: non-finite data, divergence, two runs on one folder, an
unsettled circuit."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from eqprop.config import EulerConfig, RunConfig
from eqprop.datasets import Dataset, load_dataset
from eqprop.run_files import RunFolderBusy, RunLock
from eqprop.trainer import Trainer, TrainingDiverged

EULER = EulerConfig(free_steps=20, nudged_steps=4)


def test_dataset_refuses_nan_rows_naming_them():
    x = np.zeros((3, 2), np.float32)
    x[1, 1] = np.nan
    y = np.eye(2, dtype=np.float32)[[0, 1, 0]]
    with pytest.raises(ValueError, match=r"x_train has 1 non-finite values \(first at row 1, column 1\)"):
        Dataset("t", "classification", x, y, x.copy(), y, np.array([0, 1, 0]), np.array([0, 1, 0]))


@pytest.mark.parametrize("field,value", [("lr", float("inf")), ("beta", float("nan")), ("lr", float("nan")),
                                         ("p", float("nan"))])
def test_non_finite_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        RunConfig(**{field: value})


def test_divergence_stops_the_run_naming_epoch_batch_and_trial(tmp_path):
    data = load_dataset("xor")
    cfg = RunConfig(dataset="xor", hidden=[4], epochs=2, lr=1e30, out=str(tmp_path / "x"))
    tr = Trainer(cfg, data, euler=EULER)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch 1 of 1 \(trial 0, seed 0.*nothing was saved"):
        tr.run(progress=False)
    assert not (tmp_path / "x" / "metrics.json").exists()  # no epoch of NaN weights written as a result


def test_divergence_after_a_good_epoch_keeps_its_checkpoint(tmp_path):
    data = load_dataset("xor")
    cfg = RunConfig(dataset="xor", hidden=[4], epochs=2, lr=0.1, out=str(tmp_path / "x"))
    tr = Trainer(cfg, data, euler=EULER)
    tr.run(epochs=1, progress=False)
    saved = torch.load(tr.checkpoint, weights_only=False)["W"].clone()
    tr.lr_W.mul_(1e35)  # blow the rates up mid-run
    with pytest.raises(TrainingDiverged, match="holds the last good epoch"):
        tr.run(epochs=2, progress=False)
    assert torch.equal(torch.load(tr.checkpoint, weights_only=False)["W"], saved)


def test_a_second_run_on_the_same_folder_is_refused_with_the_holders_pid(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from eqprop.run_files import RunLock\n"
        f"RunLock({str(folder)!r}).acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = RunConfig(dataset="xor", hidden=[3], epochs=1, out=str(folder))
        with pytest.raises(RunFolderBusy, match=f"in use by another run \\(pid {holder.pid}\\)"):
            Trainer(cfg, load_dataset("xor"), euler=EULER).run(progress=False)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # the holder was killed: its lock went with it (no stale lock), the run goes ahead
    Trainer(RunConfig(dataset="xor", hidden=[3], epochs=1, out=str(folder)), load_dataset("xor"),
            euler=EULER).run(progress=False)


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()


@pytest.mark.ngspice
def test_an_unsettled_transient_raises_unless_told_to_warn():
    from circuits.errors import SimulationError
    from circuits.ngspice_runner import library_available
    from circuits.spice_solver import SpiceSolver
    from eqprop.network import Network
    from eqprop.topology import mlff
    if not library_available():
        pytest.skip("libngspice not found (apt-get install libngspice0)")
    net = Network.init(mlff((8, 30, 30, 6)), seed=0, dtype=torch.float64)
    x = torch.rand(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with SpiceSolver(method="tran", t_free=5, max_extend=0) as s:
        with pytest.raises(SimulationError, match="had not settled after 1 x 5 tau"):
            s.relax(net, x)
    with SpiceSolver(method="tran", t_free=5, max_extend=0, on_unsettled="warn") as s:
        s.relax(net, x)
        assert s.last_stats["unsettled"] == 2


def test_cli_maps_divergence_and_bad_folders_to_one_line(tmp_path, capsys):
    from eqprop_cli.main import main
    base = ["train", "--dataset", "xor", "--hidden", "3", "--epochs", "1", "--free-steps", "20", "--quiet"]
    assert main(base + ["--lr", "1e30", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "training diverged at epoch 1" in err and "Traceback" not in err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(base + ["--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(blocker) in err and "Traceback" not in err


@pytest.mark.ngspice
def test_workers_are_recycled_and_solve_the_same():
    from circuits.ngspice_runner import library_available
    from circuits.spice_solver import SpiceSolver
    from eqprop.network import Network
    from eqprop.topology import mlff
    if not library_available():
        pytest.skip("libngspice not found (apt-get install libngspice0)")
    net = Network.init(mlff((4, 6, 3)), seed=1, dtype=torch.float64)
    x = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with SpiceSolver(recycle_after=3) as s:
        first = s.relax(net, x)
        pid = s._slots[0][0].session.pid
        again = s.relax(net, x)  # 3 solves done: this call starts on a fresh process
        assert s.last_stats["recycled"] == 1 and s._slots[0][0].session.pid not in (None, pid)
    assert torch.equal(first, again)


def test_reproduce_goes_past_a_truncated_metrics_json(tmp_path, capsys):
    import dataclasses
    import json

    import experiments.table1 as table1
    from experiments.common import run_all, run_batched
    runs = [dataclasses.replace(r, euler=dataclasses.replace(r.euler, free_steps=10, nudged_steps=2))
            for r in table1.runs(epochs=1, seeds=[0], only="wine") if r.label == "wine-5-sw"]
    for runner in (run_all, run_batched):
        out = tmp_path / runner.__name__
        _, before = runner("t", runs, out, progress=False)
        mfile = out / "wine-5-sw" / "s0" / "metrics.json"
        mfile.write_text(mfile.read_text()[:40])  # a kill mid-write of an older, non-atomic version
        _, after = runner("t", runs, out, progress=False)
        assert f"{mfile} is damaged" in capsys.readouterr().err
        assert after["wine-5-sw"][0]["epochs"] == before["wine-5-sw"][0]["epochs"]  # from the checkpoint
        assert json.loads(mfile.read_text())["epochs"] == before["wine-5-sw"][0]["epochs"]
