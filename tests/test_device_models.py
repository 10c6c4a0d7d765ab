"""The device model's fields (pulse rule, soft bounds, rounding, sub-step updates, hidden
parameters, stuck devices, drift, read noise), presets, device files and the CSV builder;
and the two backends (ngspice at crossbar level and the digital surrogate) holding the same
instance of a preset with noise, quantisation and asymmetry on."""
import dataclasses

import numpy as np
import pytest
import torch

from circuits.device_solver import DeviceEulerSolver
from circuits.devices import (
    DeviceArray,
    DeviceModel,
    instance_seed,
    list_presets,
    load_device,
    load_device_file,
    load_preset,
    weights_to_conductances,
)
from circuits.ngspice_runner import library_available
from circuits.spice_solver import SpiceSolver
from eqprop.config import EulerConfig, RunConfig
from eqprop.datasets import load_dataset
from eqprop.topology import mlff
from eqprop.trainer import Trainer

needs_ngspice = pytest.mark.skipif(not library_available(), reason="libngspice not found (apt-get install libngspice0)")
TOPO = mlff((3, 4, 2))


def array(device, seed=0):
    return DeviceArray(device, TOPO.mask, instance_seed(seed, 0), topology=TOPO)


def pulse(**kw):
    return DeviceModel(**{"g_min": 1e-6, "g_max": 1e-5, "update_rule": "pulse", "dg_min": 0.01, **kw})


def test_pulse_steps_linear_and_soft_bounds():
    lin = array(pulse())
    lin.program(np.zeros(TOPO.mask.shape))
    lin.update(np.where(TOPO.mask, 0.034, 0.0))  # 3.4 steps of 0.01 -> 3 pulses (nearest)
    assert np.allclose(lin.nominal_weights()[TOPO.mask], 0.03)
    soft = array(pulse(nonlinearity_up=1.0))
    soft.program(np.zeros(TOPO.mask.shape))
    for _ in range(400):  # aihwkit soft bounds: the step shrinks toward g_max, never reaching it
        soft.update(np.where(TOPO.mask, 0.05, 0.0))
    w = soft.nominal_weights()[TOPO.mask]
    assert 0.95 < w.min() and w.max() < 1.0
    half = array(pulse(nonlinearity_up=0.5))  # first step 0.01, at mid-range 0.0075
    half.program(np.where(TOPO.mask, 0.5, 0.0))
    half.update(np.where(TOPO.mask, 0.01, 0.0))
    assert np.allclose(half.nominal_weights()[TOPO.mask], 0.5075)


def test_pulse_asymmetry_and_hidden_parameters_are_per_device():
    dev = pulse(asymmetry=0.4, dg_min_dtod=0.2, asymmetry_dtod=0.1, range_dtod=0.1, nonlinearity_dtod=0.1)
    a, b = array(dev, 0), array(dev, 0)
    c = array(dev, 1)
    for k in ("step", "asymmetry", "g_hi", "k_up", "k_down"):  # per device, per instance seed
        assert np.array_equal(getattr(a.hidden, k), getattr(b.hidden, k))
        assert not np.array_equal(getattr(a.hidden, k), getattr(c.hidden, k)) and np.ndim(getattr(a.hidden, k)) == 3
    a.program(np.zeros(TOPO.mask.shape))
    a.update(np.where(TOPO.mask, 0.2, 0.0))
    assert np.unique(np.round(a.nominal_weights()[TOPO.mask], 12)).size > 5  # the same request, spread outcomes
    const = array(pulse(asymmetry=0.4))
    const.program(np.zeros(TOPO.mask.shape))
    const.update(np.where(TOPO.mask, 0.1, 0.0))  # 10 pulses of 0.01 * 1.2 up
    assert np.allclose(const.nominal_weights()[TOPO.mask], 0.12)
    const.update(np.where(TOPO.mask, -0.1, 0.0))  # 10 down on G+ at 0.8 -> 0.04 left
    assert np.allclose(const.nominal_weights()[TOPO.mask], 0.04)


def test_sub_step_updates_lost_or_accumulated_and_counted_per_block():
    step = np.where(TOPO.mask, 0.004, 0.0)  # 0.4 of a step
    lost = array(pulse())
    lost.program(np.zeros(TOPO.mask.shape))
    acc = array(pulse(sub_step="accumulate"))
    acc.program(np.zeros(TOPO.mask.shape))
    for _ in range(5):
        lost.update(step)
        acc.update(step)
    assert np.abs(lost.nominal_weights()).max() == 0  # every request fell below one step
    assert np.allclose(acc.nominal_weights()[TOPO.mask], 0.02)  # 2.0 steps accumulated, 2 pulses
    assert lost.lost_fraction() == {"0-1": 1.0, "1-2": 1.0}
    frac = acc.lost_fraction()
    assert 0 < frac["0-1"] < 1 and lost.lost_fraction() == {"0-1": None, "1-2": None}  # reset by the call


def test_stochastic_rounding_is_unbiased():
    dev = pulse(rounding="stochastic", w_max=4.0)
    arr = array(dev, 3)
    arr.program(np.zeros(TOPO.mask.shape))
    for _ in range(200):
        arr.update(np.where(TOPO.mask, 0.01, 0.0))  # 0.25 of a step (dg_min 0.01 of range 4)
    w = arr.nominal_weights()[TOPO.mask]
    assert abs(w.mean() - 2.0) < 0.2 and w.std() > 0  # 200 x 0.01 asked, whole pulses of 0.04 given


def test_stuck_devices_and_drift_and_read_noise():
    dev = DeviceModel(stuck_min_fraction=0.3, stuck_max_fraction=0.2, drift_nu=0.1, drift_dt=10.0, drift_t0=1.0,
                      read_noise_std=0.05)
    arr = array(dev, 5)
    arr.program(np.where(TOPO.mask, 0.3, 0.0))
    st = arr.hidden.stuck[:, TOPO.mask]
    assert (st == -1).any() and (st == 1).any()
    assert np.all(arr.prog.Gp[TOPO.mask][st[0] == 1] == dev.g_max)
    arr.update(np.zeros(TOPO.mask.shape))  # time passes, nothing written: every device drifts
    r1, r2 = arr.read(), arr.read()
    assert not np.array_equal(r1.Gp, r2.Gp)  # read noise: a fresh draw per solve
    ratio = np.median(np.stack([r1.Gp, r2.Gp])[:, TOPO.mask] / arr.prog.Gp[TOPO.mask])
    assert ratio == pytest.approx(11.0 ** -0.1, rel=0.05)  # ((t0 + 10 s) / t0)^-nu
    twin = array(dev, 5)  # the same instance reads the same noise: backends agree
    twin.program(np.where(TOPO.mask, 0.3, 0.0))
    twin.update(np.zeros(TOPO.mask.shape))
    assert np.array_equal(twin.read().Gp, r1.Gp)


def test_defaults_keep_the_level_rule_and_its_random_stream():
    dev = load_preset("ideal", bits=6, asymmetry=0.2, write_noise_std=0.002, g_dtod=0.05, w_max=2.0)
    arr = array(dev, 2)
    rng = np.random.default_rng(instance_seed(2, 0))  # the stream as before the new fields existed
    from circuits.devices import sample_dtod
    gains = sample_dtod(TOPO.mask.shape, dev, rng)
    assert np.array_equal(arr.dtod[0], gains[0]) and arr.hidden is None and arr.residual is None
    W = np.where(TOPO.mask, 0.5, 0.0)
    assert np.array_equal(arr.program(W).Gp, weights_to_conductances(W, dev, rng, mask=TOPO.mask, dtod=gains).Gp)


@pytest.mark.parametrize("field, value, message", [
    ("read_noise_std", -0.1, r"read_noise_std must lie in \[0, 0.5\]"),
    ("nonlinearity_up", 1.5, r"nonlinearity_up must lie in \[-10, 1\]"),
    ("stuck_min_fraction", 0.7, "stuck_min_fraction \\+ stuck_max_fraction must be <= 1"),
    ("rounding", "up", "rounding must be one of"),
    ("dg_min", 0.01, "dg_min is a field of the pulse rule"),
    ("drift_t0", 0.0, r"drift_t0 must lie in \(0, inf\]"),
    ("g_max", 10.0, r"g_max 10.0 S is no synaptic device .* conductances are in siemens"),
])
def test_every_field_is_validated(field, value, message):
    kw = {field: value, **({"stuck_max_fraction": 0.5} if field == "stuck_min_fraction" else {})}
    with pytest.raises(ValueError, match=message):
        DeviceModel(**kw)
    with pytest.raises(ValueError, match="pulse.*needs dg_min"):
        DeviceModel(update_rule="pulse")


def test_device_files_name_themselves_in_errors(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('g_min = 1e-6\ng_max = 2e-5\nupdate_rule = "pulse"\ndg_min = 0.02\nsource = "my bench"\n')
    dev = load_device(str(good))
    assert dev.name == "mine" and dev.dg_min == 0.02 and load_device_file(good, bits=3).bits == 3
    bad = tmp_path / "bad.toml"
    bad.write_text("g_min = 1e-6\ng_max = 2e-5\nread_noise_std = 2.0\n")
    with pytest.raises(ValueError, match=r"device file .*bad.toml: device bad: read_noise_std must lie in"):
        load_device(str(bad))
    bad.write_text("g_minn = 1e-6\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown fields \['g_minn'\]"):
        load_device(str(bad))


def test_presets_cite_and_cover_the_technologies():
    names = set(list_presets())
    assert {"ideal", "taox_hfox_rram", "pcm", "ecram", "fefet"} <= names
    for name in names:
        dev = load_preset(name)
        assert dev.source and dev.name == name
    assert load_preset("fefet").levels == 32 and load_preset("pcm").read_varies


# -- the two backends ------------------------------------------------------------------------
EULER = EulerConfig(eps=0.1, free_steps=200_000, nudged_steps=200_000, nudge_form="gradient", tol=1e-12)
BACKEND_PRESETS = {  # noise (write, read), quantisation (levels, whole pulses), asymmetry on
    "taox_hfox_rram": dict(w_max=2.0, read_noise_std=0.01),
    "fefet": dict(w_max=2.0, read_noise_std=0.01, g_dtod=0.03),
}


@pytest.mark.parametrize("preset", sorted(BACKEND_PRESETS))
@pytest.mark.ngspice
@needs_ngspice
def test_spice_and_surrogate_hold_the_same_instance(tmp_path, preset):
    dev = load_preset(preset, **BACKEND_PRESETS[preset])
    assert dev.asymmetry != 0 and dev.bits and dev.write_noise_std > 0 and dev.read_noise_std > 0
    data = load_dataset("iris").head(20, 10)

    def cfg(name):
        return RunConfig(dataset="iris", hidden=[5], epochs=2, lr=0.1, beta=0.5, batch_size=10, dtype="float64",
                         seed=0, out=str(tmp_path / name))
    weights = {}
    with SpiceSolver(level="crossbar", device=dev, timeout=120) as sp:
        tr = Trainer(cfg("spice"), data, solver=sp)
        for e in (1, 2):
            tr.run(epochs=e, progress=False)
            weights[("spice", e)] = tr.net.W.clone()
        lost_sp = tr.history[0][-1].solver["lost_fraction"]
    su = DeviceEulerSolver(dev, EULER)
    tr = Trainer(cfg("surrogate"), data, solver=su)
    for e in (1, 2):
        tr.run(epochs=e, progress=False)
        weights[("surrogate", e)] = tr.net.W.clone()
    for e in (1, 2):
        assert float((weights[("spice", e)] - weights[("surrogate", e)]).abs().max()) <= 1e-6, f"epoch {e}"
    assert float((weights[("spice", 2)] - weights[("spice", 1)]).abs().max()) > 1e-3  # it trained
    assert tr.history[0][-1].solver["lost_fraction"] == lost_sp and set(lost_sp) == {"0-1", "1-2"}
    assert dataclasses.asdict(dev) == su.describe()["device"]
    assert torch.isfinite(tr.net.W).all()


# -- a preset from measured data ---------------------------------------------------------------
def synthetic_table(path, s_up=0.02, k_up=0.5, s_dn=0.015, k_dn=0.2, pulses=80):
    """A pulse-response table of a known pulse-rule device (1-10 uS, both sweeps saturating), noiseless."""
    R, rows, y = 9e-6, ["direction,pulse,g", "up,0,1e-06"], 0.0
    for p in range(1, pulses + 1):
        y = min(y + s_up * R * (1 - k_up * y / R), R)
        rows.append(f"up,{p},{1e-6 + y!r}")
    rows.append(f"down,0,{1e-6 + y!r}")
    for p in range(1, pulses + 1):
        y = max(y - s_dn * R * (1 - k_dn * (R - y) / R), 0.0)
        rows.append(f"down,{p},{1e-6 + y!r}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_fit_recovers_a_known_device_and_round_trips(tmp_path):
    from circuits.device_csv import device_to_toml, fit_pulse_table
    dev = fit_pulse_table(synthetic_table(tmp_path / "bench.csv"))
    R = dev.g_max - dev.g_min
    assert dev.update_rule == "pulse" and dev.name == "bench" and dev.g_min == pytest.approx(1e-6)
    s_up, s_dn = dev.dg_min * (1 + dev.asymmetry / 2), dev.dg_min * (1 - dev.asymmetry / 2)
    assert s_up * R / 9e-6 == pytest.approx(0.02, rel=1e-6) and s_dn * R / 9e-6 == pytest.approx(0.015, rel=1e-6)
    assert dev.nonlinearity_up * 9e-6 / R == pytest.approx(0.5, rel=1e-6)
    assert dev.dg_min_std < 1e-9  # noiseless data: no step spread
    (tmp_path / "bench.toml").write_text(device_to_toml(dev, "fitted"))
    assert load_device(str(tmp_path / "bench.toml")) == dev
    example = fit_pulse_table("spice_models/examples/pulse_response_example.csv")
    assert 0.5 < example.nonlinearity_up < 0.7 and example.asymmetry < 0  # the example's generating values: 0.6, < 0


@pytest.mark.parametrize("text, message", [
    ("pulse,g\n1,2\n", "header must be direction,pulse,g"),
    ("direction,pulse,g\nsideways,0,1e-6\n", "data row 1: direction must be up or down"),
    ("direction,pulse,g\nup,0,-1e-6\n", "data row 1: g must be a finite conductance > 0"),
    ("direction,pulse,g\nup,0,abc\n", "data row 1: pulse and g must be numbers"),
    ("direction,pulse,g\nup,0,1e-6\nup,1,2e-6\ndown,0,2e-6\n", "need at least 4 points of the up sweep"),
])
def test_csv_errors_name_the_file_and_row(tmp_path, text, message):
    from circuits.device_csv import fit_pulse_table
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"pulse table .*t.csv.*{message}"):
        fit_pulse_table(path)


def test_device_fit_cli_writes_a_loadable_preset(tmp_path, capsys):
    import argparse

    from eqprop_cli.device import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "mine.toml"
    args = parser.parse_args(["device", "fit", str(synthetic_table(tmp_path / "b.csv")), "--out", str(out)])
    assert args.func(args) == 0 and load_device(str(out)).name == "mine"
    assert "asymmetry" in capsys.readouterr().out
    with pytest.raises(ValueError, match="exists; give --force"):
        args.func(args)

