"""The physical level: its model, netlist, agreement with the ideal level when off, the
surrogate against ngspice, and the settling-time / energy measurement."""
import math

import numpy as np
import pytest
import torch

from circuits.devices import DeviceArray, instance_seed
from circuits.ngspice_runner import library_available
from circuits.physical import PhysicalModel, load_physical, preset_units
from circuits.physical_measure import PassiveElements, energy, settle_time
from circuits.physical_surrogate import physical_activation, surrogate_relax
from circuits.spice_config import SpiceConfig
from circuits.spice_solver import SpiceSolver
from eqprop.network import Network
from eqprop.topology import mlff
from eqprop_cli.main import main
from netlist_gen import build_circuit

ngspice = pytest.mark.ngspice
has_library = pytest.mark.skipif(not library_available(), reason="libngspice not found (apt-get install libngspice0)")
UNITS = {"g0": 1e-5, "c": 1e-13}  # 10 uS, 100 fF: tau = 10 ns


@pytest.fixture(scope="module")
def case():
    net = Network.init(mlff((3, 5, 2)), seed=1, dtype=torch.float64)
    rng = np.random.default_rng(3)
    return net, torch.tensor(rng.random((2, 3))), torch.tensor(rng.random((2, 2)))


@pytest.fixture(scope="module")
def ideal(case):
    """The ideal level's (free, nudged) activations, in normalised units and in UNITS: the reference of several
    tests, solved once."""
    net, x, y = case
    return {"normalised": solve(net, x, y, level="ideal")[:2], "units": solve(net, x, y, level="ideal", **UNITS)[:2]}


def solve(net, x, y, **cfg):
    # Sparse: "auto" would measure KLU against Sparse on every new circuit (four more transients per solver);
    # these tests are about the circuits, not that choice (tests/test_spice_throughput.py tests it)
    cfg = SpiceConfig(**{"matrix_solver": "sparse", **cfg})
    with SpiceSolver(cfg) as s:
        free = s.relax(net, x)
        nudged = s.relax(net, x, free, beta=0.5, target=y)
        rep = s.report()
    n_in = net.topology.n_in
    act = lambda u: torch.cat([u[:, :n_in].clamp(0, 1), physical_activation(u[:, n_in:], cfg.physical)], 1)  # noqa: E731
    return act(free), act(nudged), rep, cfg


# -- the model -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, words", [
    ({"activation": "relu"}, "activation"), ({"r_row": -1.0}, "r_row"), ({"diode_is": 0.0}, "diode_is"),
    ({"tia_gbw": 1e7}, "finite tia_gain"), ({"c_wire": 1e-15}, "c_wire"), ({"v_low": 1.0, "v_high": 0.5}, "v_low"),
    ({"diode_n": float("nan")}, "diode_n"), ({"tia_gain": "big"}, "tia_gain"), ({"nudge": "voltage"}, "nudge")])
def test_model_rejects_bad_values_by_name(kw, words):
    with pytest.raises(ValueError, match=words):
        PhysicalModel(**kw)


def test_presets_and_off():
    assert PhysicalModel().is_off and load_physical("off").is_off
    real = load_physical("realistic")
    assert real.activation == "diode" and real.diode_is == 2.52e-9 and "1N4148" in real.source
    assert preset_units("realistic") == {"g0": 1e-5, "c": 1e-13}
    assert load_physical("realistic", tia_gain=1e3).tia_gain == 1e3
    assert PhysicalModel(diode_is=1e-9).is_off  # diode fields act only with the diode activation
    with pytest.raises(ValueError, match="unknown fields"):
        load_physical("off", tia_gian=1.0)
    with pytest.raises(ValueError, match="no physical preset"):
        load_physical("nope")


def test_spice_config_levels():
    with pytest.raises(ValueError, match="need level 'physical'"):
        SpiceConfig(physical=PhysicalModel(tia_gain=10.0))
    cfg = SpiceConfig(level="physical", physical={"tia_gain": 10.0})
    assert cfg.physical.tia_gain == 10.0 and cfg.devices and cfg.to_dict()["physical"]["tia_gain"] == 10.0
    assert SpiceConfig(level="physical", physical="realistic").physical.activation == "diode"
    # not piecewise linear: a transient at rest is no fixed point to the polish's tolerances, so it always runs
    assert SpiceConfig(level="physical").rest_below == 0.0 and SpiceConfig().rest_below == SpiceConfig().rest_tol > 0


# -- the netlist -----------------------------------------------------------------------------
def test_netlist_blocks(case):
    net = case[0]
    arr = tuple(DeviceArray(SpiceConfig().device, net.topology.mask, 0).program(net.W.detach().numpy()))
    off = build_circuit(net, level="physical", device_arrays=arr).to_spice()
    assert "level=physical" in off and "Gp3_0" not in off and "Gp8_3 r3 cp8 r3 cp8" in off and "Fp8 0 u8 Vp8" in off
    text = build_circuit(net, level="physical", device_arrays=arr, physical=load_physical(
        "realistic", read_v0=0.5).to_netlist()).to_spice()
    for line in (".model dclamp D(is=2.52e-09 n=1.752)", "Dh3 a3 vrh dclamp", "Er3 r3 0 a3 0 1.0",
                 "Rxp8_3 r3 xp8_3 2.0", "Bfp8_3 fp8_3 0 v=0.5*sinh(v(xp8_3,yp8_3)/0.5)", "Gt8 0 u8 om8 op8",
                 "Gn8 0 u8 u8 0", "Cxp8_3 xp8_3 0 5e-16"):
        assert line in text, line
    assert "Br3" not in text and "Vp8" not in text
    with pytest.raises(ValueError, match="level='physical'"):
        build_circuit(net, physical={"tia_gain": 10.0})


# -- against ngspice ------------------------------------------------------------------------
@ngspice
@has_library
def test_off_equals_ideal(case, ideal):
    """Every non-ideality off (the conductance nudge has the current nudge's equations: on too)."""
    net, x, y = case
    i_free, i_nudged = ideal["normalised"]
    p_free, p_nudged, _, _ = solve(net, x, y, level="physical", physical={"nudge": "conductance"})
    assert float((i_free - p_free).abs().max()) < 1e-9
    assert float((i_nudged - p_nudged).abs().max()) < 1e-9



@ngspice
@has_library
@pytest.mark.parametrize("phys", [
    {"tia_gain": 100.0, "tia_swing": 5.0, "tia_offset": 1e-3},  # (gbw moves no equilibrium)
    {"read_v0": 0.7},
    {"activation": "diode", "diode_is": 1e-9, "diode_n": 1.75, "v_low": -0.1, "v_high": 1.1, "nudge": "conductance"}])
def test_surrogate_matches_spice(case, ideal, phys):
    net, x, y = case
    p_free, p_nudged, _, cfg = solve(net, x, y, level="physical", physical=phys, **UNITS)
    i_free = ideal["units"][0]
    assert float((p_free - i_free).abs().max()) > 1e-3  # the non-ideality moves the equilibrium ...
    arr = tuple(DeviceArray(cfg.device, net.topology.mask, instance_seed(0, 0)).program(net.W.detach().numpy()))
    s_free = surrogate_relax(net, x, cfg.physical, arr, cfg.g0, cfg.clamp)
    s_nudged = surrogate_relax(net, x, cfg.physical, arr, cfg.g0, cfg.clamp, beta=0.5, target=y, s0=s_free)
    assert float((p_free - s_free).abs().max()) < 1e-6  # ... and the surrogate follows it
    assert float((p_nudged - s_nudged).abs().max()) < 1e-6


@ngspice
@has_library
def test_wire_resistance_error_grows(case, ideal):
    net, x, y = case
    ref = ideal["units"][0]
    errs = [float((solve(net, x, y, level="physical", physical={"r_row": r, "r_col": r}, **UNITS)[0] - ref).abs().max())
            for r in (1.0, 10.0)]
    assert 1e-5 < errs[0] < errs[1] < 0.5



# -- settling time and energy ------------------------------------------------------------------
def test_settle_time_and_energy_of_an_rc_charge():
    """u(t) = b (1 - exp(-t/tau)) through a leak g0 and capacitor C: both numbers in closed form."""
    g0, c, b = 1e-5, 1e-13, 0.8
    tau = c / g0
    t = np.linspace(0, 20 * tau, 200_001)
    u = b * (1 - np.exp(-t / tau))
    assert settle_time(t, u[None], 1e-3) == pytest.approx(tau * math.log(b / 1e-3), rel=1e-4)
    el = PassiveElements(["u"], (np.array([0]), np.array([-1]), np.array([g0])), (np.zeros(0, int),) * 3 +
                         (np.zeros(0),), (np.array([0]), np.array([-1]), np.array([c])), (np.zeros(0, int),) * 2)
    T = t[-1]
    leak = g0 * b ** 2 * (T - 2 * tau * (1 - math.exp(-T / tau)) + tau / 2 * (1 - math.exp(-2 * T / tau)))
    e, p = energy(t, u[None], el, None)
    assert e == pytest.approx(leak + 0.5 * c * u[-1] ** 2, rel=1e-6)
    assert p == pytest.approx(g0 * u[-1] ** 2, rel=1e-9)


@ngspice
@has_library
def test_measure_reports_physical_units(case):
    net, x, y = case
    _, _, rep, _ = solve(net, x, y, level="physical", physical="realistic", clamp=0.0, method="tran", measure=True,
                         **UNITS)
    for ph in ("free", "nudged"):
        assert 0 < rep[f"settle_s_{ph}"][0] < 300 * 1e-8  # within the transient, in seconds
        assert 1e-15 < rep[f"energy_j_{ph}"][0] < 1e-6 and rep[f"power_w_{ph}"][0] > 0


@ngspice
@has_library
def test_cli_physical_check(tmp_path, capsys):
    out = tmp_path / "pc"
    assert main(["physical-check", "--sizes", "3,4,2", "--count", "1", "--examples", "1", "--fields", "nudge",
                 "--quiet", "--out", str(out)]) == 0
    assert "| nudge | conductance |" in capsys.readouterr().out
    assert (out / "report.json").is_file() and "| nudge | conductance |" in (out / "table.md").read_text()
    assert main(["physical-check", "--fields", "bogus", "--out", str(out)]) == 2


# -- a user's neuron (.subckt) -------------------------------------------------------------------
IDEAL_NEURON = """* the ideal clamp as a user neuron; input and bias currents reach u through 0 V sources
.subckt clampn u r gnd in bi
Br r gnd v=min(max(v(u,gnd),0),1)
Vi in u 0
Vb bi u 0
.ends clampn
"""


def user_neuron(tmp_path, pins=("state", "activation", "ground", "input", "bias"), name="clampn"):
    lib = tmp_path / "neuron.lib"
    lib.write_text(IDEAL_NEURON)
    return PhysicalModel(activation="subckt", neuron_lib=str(lib), neuron_subckt=name, neuron_pins=pins)


def test_user_neuron_is_checked(tmp_path):
    with pytest.raises(ValueError, match="has no .subckt other"):
        user_neuron(tmp_path, name="other")
    with pytest.raises(ValueError, match="has 5 pins"):
        user_neuron(tmp_path, pins=("state", "activation", "ground"))
    with pytest.raises(ValueError, match="neuron_pins must"):
        user_neuron(tmp_path, pins=("state", "rho", "ground", "input", "bias"))
    with pytest.raises(ValueError, match="cannot read"):
        PhysicalModel(activation="subckt", neuron_lib=str(tmp_path / "none.lib"), neuron_subckt="x",
                      neuron_pins=("state", "activation"))
    with pytest.raises(ValueError, match="need activation 'subckt'"):
        PhysicalModel(neuron_subckt="x")
    assert load_physical("user_neuron").neuron_lib.endswith("spice_models/physical_neuron_opamp_clamp.lib")


def test_user_neuron_netlist(case, tmp_path):
    net = case[0]
    arr = tuple(DeviceArray(SpiceConfig().device, net.topology.mask, 0).program(net.W.detach().numpy()))
    text = build_circuit(net, np.full(3, 0.5), level="physical", device_arrays=arr,
                         physical=user_neuron(tmp_path).to_netlist()).to_spice()
    for line in (f".include {tmp_path / 'neuron.lib'}", "Xn3 u3 r3 0 in3 bi3 clampn", "Ib3 0 bi3", "Ix3 0 in3"):
        assert line in text, line
    assert "Br3" not in text


@ngspice
@has_library
def test_user_neuron_trains_like_the_ideal_level(case, ideal, tmp_path):
    """A user neuron that is the ideal clamp gives the ideal level's equilibria: the pins are wired right."""
    net, x, y = case
    i_free, i_nudged = ideal["normalised"]
    p_free, p_nudged, _, _ = solve(net, x, y, level="physical", physical=user_neuron(tmp_path))
    assert float((i_free - p_free).abs().max()) < 1e-9
    assert float((i_nudged - p_nudged).abs().max()) < 1e-9
