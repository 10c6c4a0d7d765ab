"""Reading physical-level netlists back (docs/netlist-reader.md, "Physical-level netlists").

Round trips: ``build_circuit(level="physical")`` with each non-ideality on, and with a user
``.subckt`` neuron, read back by ``read_netlist`` into the network the generator was given
(weights from the device conductances as written, biases, mask, beta/target) and the
non-idealities it was given (``ReadResult.physical``). Reading is text: no ngspice here.
Errors: wrong pin count, unknown element, missing .lib, edited cells, ... each at its
file:line:column.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits.devices import DeviceArray, load_preset
from circuits.physical import PhysicalModel, load_physical
from eqprop.network import Network
from eqprop.topology import mlff
from eqprop_cli.main import main
from netlist_gen import build_circuit
from netlist_gen.reader import read_netlist
from netlist_gen.spice_errors import NetlistError, NetlistSyntaxError, NetworkReadError

DATA = Path(__file__).parent / "data"
G0, C = 1e-5, 1e-13

# each non-ideality on alone (docs/physical.md's table), then presets and combinations
CASES = {
    "off": {},
    "diode": dict(activation="diode", diode_is=2.52e-9, diode_n=1.752, diode_rs=1e5, v_low=0.27, v_high=0.73),
    "tia_gain": dict(tia_gain=1e3),
    "tia_gbw": dict(tia_gain=1e4, tia_gbw=1e7),
    "tia_swing": dict(tia_gain=100.0, tia_swing=2.0),
    "tia_offset": dict(tia_gain=1e4, tia_offset=1e-3),
    "r_row": dict(r_row=2.0),
    "r_col": dict(r_col=3.0),
    "c_wire": dict(r_row=1.0, r_col=1.0, c_wire=5e-16),
    "c_wire_tia": dict(tia_gain=1e4, c_wire=1e-15),
    "read_v0": dict(read_v0=0.7),
    "nudge_conductance": dict(nudge="conductance"),
    "all": dict(activation="diode", diode_is=1e-10, tia_gain=1e4, tia_gbw=1e7, tia_swing=3.0, tia_offset=-2e-3,
                r_row=2.0, r_col=2.0, c_wire=5e-16, read_v0=1.5, nudge="conductance"),
}


def _net(sizes=(3, 4, 2), seed=0) -> Network:
    net = Network.init(mlff(sizes), seed=seed, dtype=torch.float64)
    net.W.data *= 0.5  # inside the ideal device preset's |W| <= 1
    rng = np.random.default_rng(seed)
    net.b.data[net.topology.n_in:] = torch.tensor(rng.uniform(-0.3, 0.5, net.topology.n - net.topology.n_in))
    return net


def _arrays(net):
    return tuple(DeviceArray(load_preset("ideal"), net.topology.mask, 0).program(net.W.detach().numpy()))


def _text(net, model: PhysicalModel, fold=False, beta=0.5, **kw) -> str:
    n_out = net.topology.n_out
    target = np.linspace(0, 1, n_out) if beta else None
    return build_circuit(net, np.linspace(0.2, 0.9, net.topology.n_in), beta=beta, target=target, level="physical",
                         fold_inputs=fold, g0=G0, c=C, device_arrays=_arrays(net), physical=model.to_netlist(),
                         **kw).to_spice()


def _same_model(found: dict, model: PhysicalModel) -> None:
    want = model.to_netlist()
    assert set(found) == set(want)
    for k, v in want.items():
        if isinstance(v, float) and math.isfinite(v):
            assert math.isclose(found[k], v, rel_tol=1e-14), (k, found[k], v)
        else:
            assert found[k] == v, (k, found[k], v)


def _error(text, cls=NetlistError, **kw) -> NetlistError:
    with pytest.raises(cls) as info:
        read_netlist(text, name="phys.cir", **kw)
    return info.value


def _at(text: str, needle: str) -> tuple[int, int]:
    """1-based (line, column) of the first occurrence of needle."""
    before = text[:text.index(needle)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_each_nonideality(case):
    net = _net()
    model = PhysicalModel(name=case, **CASES[case])
    r = read_netlist(_text(net, model))
    Gp, Gm, g_unit = _arrays(net)
    mask = net.topology.mask
    assert r.level == "physical" and r.inputs == "unfolded" and r.g_unit == g_unit and r.g0 == G0 and r.c == C
    _same_model(r.physical, model)
    assert np.array_equal(r.network.topology.mask, mask) and not r.network.topology.directed
    # the devices' weights exactly as written; the generator's W within the devices' precision
    written = mask.copy()
    written[:, :3] = False  # nothing is written into the clamped inputs
    assert np.array_equal(r.W_circuit[written], ((Gp - Gm) / g_unit)[written])
    assert np.abs(r.network.W.numpy() - net.W.numpy()).max() < 1e-15
    assert np.allclose(r.network.b.numpy(), net.b.numpy(), rtol=1e-15, atol=0)
    assert np.array_equal(r.conductances[0][written], Gp[written])
    assert np.array_equal(r.conductances[1][written], Gm[written])
    assert math.isclose(r.beta, 0.5, rel_tol=1e-15) and np.allclose(r.target, [0.0, 1.0], rtol=1e-15)
    assert np.allclose(r.x, np.linspace(0.2, 0.9, 3))
    assert any(n.startswith("physical level: ") for n in r.notes)


@pytest.mark.parametrize("case", ["all", "nudge_conductance"])
def test_round_trip_folded_free_phase(case):
    net = _net((3, 5, 4, 2), seed=1)
    model = PhysicalModel(**CASES[case])
    text = _text(net, model, fold=True, beta=0.0, clamp=1e3, state0=np.linspace(0, 1, net.topology.n))
    r = read_netlist(text)
    n_in, mask = 3, net.topology.mask
    assert r.inputs == "folded" and r.beta == 0.0 and r.target is None and r.clamp == 1e3
    _same_model(r.physical, model)
    assert np.array_equal(r.network.topology.mask[n_in:, n_in:], mask[n_in:, n_in:])
    assert not r.network.topology.mask[:n_in].any()
    assert np.abs(r.network.W.numpy()[n_in:, n_in:] - net.W.numpy()[n_in:, n_in:]).max() < 1e-15
    Gp, Gm, g_unit = _arrays(net)
    drive = np.linspace(0.2, 0.9, n_in) @ ((Gp - Gm) / g_unit)[:n_in]
    assert np.allclose(r.input_drive[n_in:], drive[n_in:], rtol=1e-12, atol=1e-15)
    assert r.initial_use == "nodeset" and np.isfinite(r.initial_u[n_in:]).all()


def test_round_trip_directed_net_and_asymmetry():
    """A directed network, and a device pair edited in one direction only (asymmetric=...)."""
    net = _net()
    text = _text(net, PhysicalModel(tia_gain=1e3))
    r = read_netlist(text, asymmetric="error")  # as generated: both directions equal
    assert not r.network.topology.directed
    e = _error(text.replace("Gp7_3 r3 cp7 r3 cp7 ", "Gp7_3 r3 cp7 r3 cp7 1e-05 $ "), asymmetric="error")
    assert "differ between their two directions" in e.message and (e.line, e.column) == _at(text, "Gp7_3")
    r = read_netlist(text.replace("Gp7_3 r3 cp7 r3 cp7 ", "Gp7_3 r3 cp7 r3 cp7 1e-05 $ "))
    assert r.network.topology.directed and any("directed network" in n for n in r.notes)


# -- the user's .subckt neuron (docs/tutorial-subckt.md) ----------------------------------------
def test_round_trip_tutorial_user_neuron():
    net = _net((4, 8, 3))
    model = load_physical("user_neuron")
    text = _text(net, model, fold=True)
    r = read_netlist(text)
    _same_model(r.physical, model)
    assert r.physical["neuron_lib"].endswith("spice_models/physical_neuron_opamp_clamp.lib")
    assert np.abs(r.network.W.numpy()[4:, 4:] - net.W.numpy()[4:, 4:]).max() < 1e-15
    assert np.allclose(r.network.b.numpy(), net.b.numpy(), rtol=1e-15, atol=0)
    assert any(n.startswith("user neuron: .subckt opamp_clamp_neuron (u r gnd) from ") for n in r.notes)
    assert r.netlist.subckts["opamp_clamp_neuron"].ports == ("u", "r", "gnd")


IDEAL_NEURON = """* the ideal clamp as a user neuron, every pin role used
.subckt clampn u r gnd in bi nu
Br r gnd v=min(max(v(u,gnd),0),1)
Vi in u 0
Vb bi u 0
Vn nu u 0
.ends clampn
"""


@pytest.mark.parametrize("nudge", ["current", "conductance"])
def test_round_trip_user_neuron_with_every_pin(tmp_path, nudge):
    lib = tmp_path / "neuron.lib"
    lib.write_text(IDEAL_NEURON)
    pins = ("state", "activation", "ground", "input", "bias", "nudge")
    model = PhysicalModel(activation="subckt", neuron_lib=str(lib), neuron_subckt="clampn", neuron_pins=pins,
                          nudge=nudge, tia_gain=1e4)
    net = _net()
    text = _text(net, model)
    r = read_netlist(text)
    _same_model(r.physical, model)
    assert r.physical["neuron_pins"] == pins and r.physical["neuron_lib"] == str(lib)
    assert np.abs(r.network.W.numpy() - net.W.numpy()).max() < 1e-15
    assert math.isclose(r.beta, 0.5, rel_tol=1e-15)
    # the pins are the roles' nodes: bias into bi<i>; moving it back to u is another circuit
    assert "Ib3 0 bi3 " in text
    e = _error(text.replace("Ib3 0 bi3 ", "Ib3 0 u3 "), NetworkReadError)
    assert "expected nodes 0 bi3, got 0 u3" in e.message and (e.line, e.column) == _at(text, "Ib3 0 bi3")


# -- errors at file:line:column -------------------------------------------------------------------
@pytest.fixture(scope="module")
def user_text() -> str:
    return _text(_net(), load_physical("user_neuron"))


@pytest.mark.parametrize("line", ["Xn3", "Xn6"])  # the first neuron (where the reader looks) and a later one
def test_wrong_pin_count(user_text, line):
    right = f"{line} u{line[2:]} r{line[2:]} 0 opamp_clamp_neuron"
    assert right in user_text
    text = user_text.replace(right, f"{line} u{line[2:]} r{line[2:]} opamp_clamp_neuron")
    e = _error(text, NetworkReadError)
    assert e.file == "phys.cir" and (e.line, e.column) == _at(text, line + " ")
    assert f"'{line}' connects 2 pins" in e.message and "has 3 (u r gnd)" in e.message
    assert "physical_neuron_opamp_clamp.lib:" in e.message  # where the .subckt is


def test_missing_lib(user_text, tmp_path):
    text = user_text.replace("spice_models/physical_neuron_opamp_clamp.lib", "spice_models/no_such_neuron.lib")
    e = _error(text, NetlistSyntaxError)
    assert (e.line, e.column) == _at(text, ".include") and "cannot read include file" in e.message
    # the .include line gone: the instance names what is missing
    text = "\n".join(l for l in user_text.split("\n") if not l.startswith(".include"))
    e = _error(text, NetworkReadError)
    assert (e.line, e.column) == _at(text, "Xn3") and "no .subckt in the netlist defines" in e.message


def test_unknown_pin_node(user_text):
    text = user_text.replace("Xn4 u4 r4 0 ", "Xn4 u4 r4 q4 ")
    e = _error(text, NetworkReadError)
    assert (e.line, e.column) == _at(text, "Xn4") and "expected nodes u4 r4 0, got u4 r4 q4" in e.message
    text = user_text.replace("Xn3 u3 r3 0 ", "Xn3 u3 r3 q3 ")
    e = _error(text, NetworkReadError)
    assert (e.line, e.column) == _at(text, "Xn3") and "node 'q3' is no pin node" in e.message


@pytest.fixture(scope="module")
def realistic_text() -> str:
    return _text(_net(), load_physical("realistic"))


@pytest.mark.parametrize("edit, needle, message", [
    # an element the level does not write
    (lambda t: t.replace("Cn3 u3 0", "Rfoo u3 0 1k\nCn3 u3 0"), "Rfoo", "'Rfoo' (element) is not part of"),
    (lambda t: t.replace("Cn3 u3 0", "Br3 r3 0 v=min(max(v(u3),0),1)\nCn3 u3 0"), "Br3",
     "'Br3' (ideal clamp activation) is not part of"),
    # one cell's wire resistance edited (the first cell sets r_row)
    (lambda t: t.replace("Rxm4_1 xp4_1 xm4_1 2.0", "Rxm4_1 xp4_1 xm4_1 2.5"), "Rxm4_1",
     "'Rxm4_1' = 2.5 differs from 2.0"),
    # a node moved
    (lambda t: t.replace("Gp7_3 xp7_3 yp7_3 xp7_3 yp7_3", "Gp7_3 xp7_3 yp7_3 xp7_3 0"), "Gp7_3 ",
     "expected nodes xp7_3 yp7_3 xp7_3 yp7_3"),
    # a diode model the reader would not return
    (lambda t: t.replace("D(is=2.52e-09 n=1.752)", "D(is=2.52e-09 n=1.752 rs=5)"), ".model",
     "clamp diode has is= and n= only"),
    # one op-amp's gain edited
    (lambda t: t.replace("Ram4 tm4 0 10000.0", "Ram4 tm4 0 100.0"), "Ram4", "differs from 10000.0"),
    # an element with a parameter
    (lambda t: t.replace("Dh3 a3 vrh dclamp", "Dh3 a3 vrh dclamp 2"), "Dh3", "parameters, models and waveforms"),
    # a device without its partner
    (lambda t: t.replace("Gm5_2 ", "Gk5_2 "), "Gp5_2 ", "has no partner Gm5_2"),
])
def test_edited_physical_netlist_is_refused_at_the_element(realistic_text, edit, needle, message):
    text = edit(realistic_text)
    assert text != realistic_text
    e = _error(text, NetworkReadError)
    assert e.file == "phys.cir" and (e.line, e.column) == _at(text, needle), (e, needle)
    assert message in e.message, e.message
    assert str(e).startswith(f"phys.cir:{e.line}:{e.column}: ")


def test_missing_element_and_header(realistic_text):
    text = "\n".join(l for l in realistic_text.split("\n") if not l.startswith("Dl3 "))
    e = _error(text, NetworkReadError)
    assert e.line == 1 and "'Dl3' (lower clamp diode) is missing" in e.message
    text = realistic_text.replace(" g_unit=", " g_unix=")
    assert "needs g_unit=" in _error(text, NetworkReadError).message
    # without a header line the elements say which level they are
    body = realistic_text.split("\n", 1)[1]
    e = _error("title\n" + body, NetworkReadError, sizes=(3, 4, 2))
    assert "it looks physical-level" in e.message


# -- a checked-in example and the command that reads it ----------------------------------------------
def _example() -> str:
    """tests/data/reader_physical.cir: a 2-2-1 net, every non-ideality of the realistic preset."""
    net = Network(mlff((2, 2, 1)), torch.tensor([[0, 0, .5, -.25, 0], [0, 0, .75, 1, 0], [.5, .75, 0, 0, .625],
                                                 [-.25, 1, 0, 0, -.375], [0, 0, .625, -.375, 0]], dtype=torch.float64),
                  torch.tensor([0, 0, .125, -.25, .0625], dtype=torch.float64))
    return build_circuit(net, [0.25, 0.75], beta=0.5, target=[1.0], level="physical", fold_inputs=False, g0=G0, c=C,
                         device_arrays=_arrays(net), physical=load_physical("realistic").to_netlist()).to_spice()


def test_checked_in_example_is_what_the_generator_writes():
    assert (DATA / "reader_physical.cir").read_text() == _example()


def test_read_netlist_command_on_a_physical_netlist(capsys):
    assert main(["read-netlist", str(DATA / "reader_physical.cir")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["level"] == "physical" and info["sizes"] == [2, 2, 1] and info["beta"] == 0.5
    assert any("activation=diode, diode_is=2.52e-09" in n for n in info["notes"])


@pytest.mark.parametrize("line", ["Xn" + "9" * 5000 + " u3 r3 0 opamp_clamp_neuron",
                                  "Xn\u0663 u3 r3 0 opamp_clamp_neuron", "Rs" + "9" * 5000 + " u3 a3 1.0",
                                  "Gp3_" + "1" * 5000 + " r3 cp3 r3 cp3 1e-6"])
def test_hostile_names_are_located_errors(user_text, line):
    """Names the level never writes (5,000-digit indices, other scripts' digits) are refused at their line."""
    text = user_text.replace("\nCn3 u3 0", f"\n{line}\nCn3 u3 0", 1)
    e = _error(text)
    assert e.file == "phys.cir" and (e.line, e.column) == _at(text, line), e


MOS_NEURON = """* a transistor-level neuron (two CMOS inverters), as a user would write it for ngspice
.subckt mos_neuron u r gnd
.model nm NMOS (level=1 vto=0.5 kp=1e-4)
.model pm PMOS (level=1 vto=-0.5 kp=5e-5)
Vdd vdd gnd 1.0
M1 a u gnd gnd nm w=1u l=1u ; first stage
M2 a u vdd vdd pm w=2u
+ l=1u
M3 r a gnd gnd nm w=1u l=1u
M4 r a vdd vdd pm w=2u l=1u
.ends mos_neuron
"""


def test_round_trip_transistor_level_user_neuron(tmp_path):
    """Semiconductor devices (M, Q, J) inside a .subckt are kept as text: a transistor-level neuron reads;
    outside a .subckt they are still refused at their position."""
    lib = tmp_path / "mos.lib"
    lib.write_text(MOS_NEURON)
    model = PhysicalModel(activation="subckt", neuron_lib=str(lib), neuron_subckt="mos_neuron",
                          neuron_pins=("state", "activation", "ground"))
    net = _net()
    text = _text(net, model)
    r = read_netlist(text)
    _same_model(r.physical, model)
    assert np.abs(r.network.W.numpy() - net.W.numpy()).max() < 1e-15
    m2 = r.netlist.subckts["mos_neuron"].elements[2]
    assert (m2.name, m2.kind, m2.expr_kind, m2.expr) == ("M2", "M", "text", "a u vdd vdd pm w=2u l=1u")
    assert str(m2.pos) == f"{lib}:7:1" and set(r.netlist.models) >= {"nm", "pm"}
    lib.write_text(MOS_NEURON + "M9 r u 0 0 nm\n")
    e = _error(text, NetlistError)
    assert (e.file, e.line, e.column) == (str(lib), 12, 1) and "M elements (MOSFET) are outside" in e.message
