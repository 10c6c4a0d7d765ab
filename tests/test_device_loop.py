"""The device model in the learning loop, on both sides: ngspice at crossbar level and the
digital surrogate (DeviceEulerSolver) hold the same device instances and must train to
the same weights; the one Trainer runs T > 1 trials through ngspice."""
import dataclasses

import numpy as np
import pytest
import torch

from circuits.device_solver import DeviceEulerSolver
from circuits.devices import load_preset
from circuits.ngspice_runner import library_available
from circuits.spice_solver import SpiceSolver
from eqprop.config import EulerConfig, RunConfig
from eqprop.datasets import load_dataset
from eqprop.trainer import Trainer

needs_ngspice = pytest.mark.skipif(not library_available(), reason="libngspice not found (apt-get install libngspice0)")
EULER = EulerConfig(free_steps=200_000, nudged_steps=200_000, nudge_form="gradient", tol=1e-12)
ASYM = load_preset("ideal", asymmetry=0.4, w_max=2.0)
BITS4 = load_preset("ideal", bits=4, w_max=2.0)
NOISY = load_preset("ideal", bits=6, asymmetry=0.2, write_noise_std=0.002, g_dtod=0.05, w_max=2.0)


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris").head(20, 10)


def run(tmp_path, name, epochs=2, seed=0):
    return RunConfig(dataset="iris", hidden=[5], epochs=epochs, lr=0.1, beta=0.5, batch_size=10, dtype="float64",
                     seed=seed, out=str(tmp_path / name))


def per_epoch_weights(trainer: Trainer, epochs: int) -> list[torch.Tensor]:
    out = []
    for e in range(1, epochs + 1):
        trainer.run(epochs=e, progress=False)
        out.append(trainer.net.W.clone())
    return out


@pytest.mark.parametrize("device", [ASYM, BITS4, NOISY], ids=["asymmetry", "bits4", "noise+d2d"])
@pytest.mark.ngspice
@needs_ngspice
def test_crossbar_spice_equals_the_surrogate_and_differs_from_ideal(tmp_path, iris, device):
    with SpiceSolver(level="crossbar", device=device, timeout=120) as sp:
        spice = per_epoch_weights(Trainer(run(tmp_path, "spice"), iris, solver=sp), 2)
        report = sp.report()
    digital = per_epoch_weights(Trainer(run(tmp_path, "surrogate"), iris, solver=DeviceEulerSolver(device, EULER)), 2)
    ideal = per_epoch_weights(Trainer(run(tmp_path, "ideal"), iris, euler=EULER), 2)
    for e, (a, b, c) in enumerate(zip(spice, digital, ideal)):
        assert float((a - b).abs().max()) <= 1e-6, f"epoch {e + 1}: ngspice and the surrogate disagree"
        assert float((a - c).abs().max()) > 1e-3, f"epoch {e + 1}: the device model changed nothing"
    if device.g_dtod:  # mismatched devices: the realised weights lose their symmetry
        assert report["realised_asymmetry"][0] > 1e-3


def test_surrogate_with_an_ideal_device_is_the_exact_trainer(tmp_path, iris):
    ideal = load_preset("ideal", w_max=4.0)  # continuous, noiseless: only the G -> W round trip
    a = Trainer(run(tmp_path, "a"), iris, solver=DeviceEulerSolver(ideal, EulerConfig(free_steps=60)))
    b = Trainer(run(tmp_path, "b"), iris, euler=EulerConfig(free_steps=60))
    a.run(progress=False)
    b.run(progress=False)
    assert float((a.net.W - b.net.W).abs().max()) <= 1e-9


def test_surrogate_trials_resume_bit_identically_with_noisy_devices(tmp_path, iris):
    cfgs = lambda d, n: [run(tmp_path / d, f"s{s}", epochs=n, seed=s) for s in (0, 1)]  # noqa: E731
    solver = lambda: DeviceEulerSolver(NOISY, EulerConfig(free_steps=60, nudge_form="gradient"))  # noqa: E731
    whole = Trainer(cfgs("whole", 2), iris, solver=solver(), checkpoint=tmp_path / "whole.pt")
    whole.run(progress=False)
    Trainer(cfgs("cut", 1), iris, solver=solver(), checkpoint=tmp_path / "cut.pt").run(progress=False)
    resumed = Trainer(cfgs("cut", 2), iris, solver=solver(), checkpoint=tmp_path / "cut.pt")
    resumed.run(resume=True, progress=False)
    assert torch.equal(resumed.net.W, whole.net.W) and torch.equal(resumed.net.b, whole.net.b)
    assert not torch.equal(whole.net.W[0], whole.net.W[1])  # two trials, two device instances
    r_sp, w_sp = resumed.solver.realised_weights(1), whole.solver.realised_weights(1)
    assert np.array_equal(r_sp, w_sp) and not np.allclose(r_sp, r_sp.T)


@pytest.mark.ngspice
@needs_ngspice
def test_spice_trials_in_one_trainer_equal_separate_runs(tmp_path, iris):
    seeds = (0, 1)
    with SpiceSolver(timeout=120) as sp:
        together = Trainer([run(tmp_path / "t", f"s{s}", epochs=1, seed=s) for s in seeds], iris, solver=sp,
                           checkpoint=tmp_path / "t.pt")
        together.run(progress=False)
        assert sp.last_stats["trials"] == 2
    for t, s in enumerate(seeds):
        with SpiceSolver(timeout=120) as sp:
            alone = Trainer(run(tmp_path / "a", f"s{s}", epochs=1, seed=s), iris, solver=sp)
            alone.run(progress=False)
        assert float((alone.net.W[0] - together.net.W[t]).abs().max()) <= 1e-12


@pytest.mark.ngspice
@needs_ngspice
def test_spice_train_cli_runs_seeds_as_trials(tmp_path, capsys):
    import json

    from eqprop_cli.main import main
    out = tmp_path / "st"
    rc = main(["spice-train", "--dataset", "xor", "--hidden", "3", "--epochs", "1", "--seeds", "0,1",
               "--level", "crossbar", "--device-preset", "ideal", "--clip-weights", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out / "s0") in printed and str(out / "s1") in printed
    cfg = json.loads((out / "s1" / "config.json").read_text())
    assert cfg["trials"] == 2 and cfg["solver"]["solver"] == "SpiceSolver" and cfg["solver"]["level"] == "crossbar"
    assert "free_steps" not in cfg["solver"] and cfg["run"]["seed"] == 1  # no Euler settings that played no part
    assert (out / "checkpoint.pt").exists()
    m = json.loads((out / "s0" / "metrics.json").read_text())
    assert m["epochs"][0]["solver"]["clipped_weights"] > 0  # xor's init exceeds w_max 1: saturated, counted


def test_device_solver_needs_prepare(iris):
    from eqprop.network import Network
    from eqprop.topology import mlff
    net = Network.init(mlff((4, 5, 3)), dtype=torch.float64)
    s = DeviceEulerSolver(BITS4, EULER)
    with pytest.raises(RuntimeError, match="prepare"):
        s.relax(net, torch.rand(2, 4, dtype=torch.float64))
    s.prepare(net)
    lsb = BITS4.lsb_weight
    on_grid = np.abs(net.W.numpy() / lsb - np.rint(net.W.numpy() / lsb)).max()
    assert on_grid < 1e-9  # the network now holds the 4-bit weights the devices hold
    assert dataclasses.asdict(BITS4) == s.describe()["device"]
