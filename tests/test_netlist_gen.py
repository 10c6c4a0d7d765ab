"""netlist_gen: expected text, names, folding, size guard, validation, CLI, and one ngspice run."""
from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from eqprop.config import EulerConfig
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import Topology, mlff, small_world
from netlist_gen import NetlistTooLarge, build_circuit, check_size, estimate_size, folded_input_currents

DATA = Path(__file__).parent / "data"


def net_2_2_1() -> tuple[Network, np.ndarray]:
    """The fixed 2-2-1 network of tests/data/net_2_2_1.cir (values exact in binary)."""
    W = np.zeros((5, 5))
    W[0, 2], W[0, 3], W[1, 2], W[1, 3] = 0.5, -0.25, 0.75, 1.0
    W[2, 4], W[3, 4] = 0.625, -0.375
    W = W + W.T
    b = np.array([0.0, 0.0, 0.125, -0.25, 0.0625])
    return Network(mlff((2, 2, 1)), torch.tensor(W), torch.tensor(b)), np.array([0.25, 0.75])


def random_net(sizes=(3, 5, 4, 2), seed=0, sw=True) -> Network:
    topo = small_world(sizes, 0.3, seed) if sw else mlff(sizes)
    net = Network.init(topo, seed=seed, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    net.b[topo.n_in:] = torch.tensor(rng.uniform(-0.3, 0.5, topo.n - topo.n_in))
    return net


def synapse_count(net: Network, folded=True) -> int:
    n_in = net.topology.n_in
    return int(net.topology.mask[n_in if folded else 0:, n_in:].sum())


def element_values(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and line[0] not in "*.":
            parts = line.split()
            out[parts[0]] = parts[-1]
    return out


def test_expected_text_2_2_1():
    net, x = net_2_2_1()
    text = build_circuit(net, x, fold_inputs=False).to_spice()
    assert text == (DATA / "net_2_2_1.cir").read_text()


def test_folded_2_2_1_differs_only_at_the_inputs():
    net, x = net_2_2_1()
    folded = build_circuit(net, x).to_spice()
    assert "Vx" not in folded and "Gw2_0" not in folded and "r0" not in folded
    vals = element_values(folded)
    assert float(vals["Ix2"]) == 0.5 * 0.25 + 0.75 * 0.75
    assert float(vals["Ix3"]) == -0.25 * 0.25 + 1.0 * 0.75
    assert vals["Ib2"] == "0.125" and vals["Gw4_2"] == "0.625"
    assert folded.splitlines()[0].endswith("inputs=folded directed=0 g0=1.0 c=1.0 clamp=0.0")


def test_names_and_order_depend_on_topology_only():
    a = build_circuit(random_net(seed=1), [0.1, 0.2, 0.3])
    net2 = random_net(seed=1)
    net2.W.mul_(-0.5)
    b = build_circuit(net2, [0.9, 0.0, 1.0], beta=0.7, target=[1.0, 0.0])
    assert [e[:2] for e in a.elements] == [e[:2] for e in b.elements]
    assert a.to_spice() == build_circuit(random_net(seed=1), [0.1, 0.2, 0.3]).to_spice()
    # every alterable element is in the text under the name the maps give
    names = {e[0] for e in a.elements}
    assert all(n in names for ns in a.weight_elements.values() for n in ns)
    assert set(a.bias_elements.values()) | set(a.input_elements.values()) <= names
    assert all(g in names and i in names for g, i in a.nudge_elements.values())
    assert len(a.weight_elements) == synapse_count(random_net(seed=1))


def test_free_phase_nudge_is_zero_and_nudge_values_match():
    net = random_net()
    free = build_circuit(net)
    for g, i in free.nudge_elements.values():
        assert free.value(g) == 0.0 and free.value(i) == 0.0
    y = np.array([0.25, 1.0])
    nudged = build_circuit(net, beta=0.5, target=y)
    gains, cur = free.nudge_values(0.5, y)
    for k, (g, i) in enumerate(nudged.nudge_elements.values()):
        assert nudged.value(g) == gains[k] == -1.0 and nudged.value(i) == cur[0, k]


def test_folded_currents_equal_unfolded_synapse_currents():
    net = random_net(seed=3)
    X = np.random.default_rng(0).uniform(-0.2, 1.2, (4, 3))  # out-of-range x is clipped like rho
    unf = build_circuit(net, X[0], fold_inputs=False)
    fol = build_circuit(net, X[0])
    rx = np.clip(X[0], 0, 1)
    for i, name in fol.input_elements.items():
        via_synapses = sum(unf.value(f"Gw{i}_{k}") * unf.value(f"Vx{k}") for k in range(3)
                           if (k, i) in unf.weight_elements)
        assert fol.value(name) == pytest.approx(via_synapses, abs=1e-15)
        assert unf.value(f"Vx{0}") == rx[0]
    batch = fol.input_currents(X)
    neurons, direct = folded_input_currents(net, X)
    assert neurons == fol.fold_neurons and np.allclose(batch, direct, atol=1e-15)
    for row, x in zip(batch, X):
        c = build_circuit(net, x)
        assert [c.value(n) for n in c.input_elements.values()] == pytest.approx(row.tolist(), abs=1e-15)


def test_crossbar_elements_realise_the_effective_weights():
    net = random_net(seed=2)
    n = net.topology.n
    rng = np.random.default_rng(0)
    Gp, Gm = rng.uniform(1e-6, 1e-4, (n, n)), rng.uniform(1e-6, 1e-4, (n, n))
    g_unit = 5e-5
    c = build_circuit(net, [0.5, 0.5, 0.5], level="crossbar", device_arrays=(Gp, Gm, g_unit), fold_inputs=False)
    vals = element_values(c.to_spice())
    assert c.header["g_unit"] == repr(g_unit)
    for (s, d), (rp, rm) in c.weight_elements.items():
        w = (1 / float(vals[rp]) - 1 / float(vals[rm])) / g_unit
        assert w == pytest.approx((Gp[s, d] - Gm[s, d]) / g_unit, rel=1e-12)
        assert float(vals[f"Fp{d}"]) == 1.0 / g_unit and float(vals[f"Fm{d}"]) == -1.0 / g_unit
    with pytest.raises(ValueError, match="device_arrays"):
        build_circuit(net, level="crossbar")
    with pytest.raises(ValueError, match="> 0"):
        build_circuit(net, level="crossbar", device_arrays=(Gp * 0, Gm, g_unit))


def test_state_lines_and_clamp():
    net = random_net(seed=4)
    s0 = np.linspace(-0.5, 1.5, net.topology.n)
    ic = build_circuit(net, [0.0, 0.5, 1.0], state0=s0, use="ic", clamp=1e3).to_spice()
    assert f".ic v(u3)={float(s0[3])!r}" in ic and ".nodeset" not in ic and "Gc3 u3 0 u3 r3 1000.0" in ic
    ns = build_circuit(net, [0.0, 0.5, 1.0], state0=s0).to_spice()
    assert ".nodeset v(r3)=0.0" in ns and ".nodeset v(u3)=" in ns  # u: the leaky state, see the doc
    assert "Gc" not in ns


def test_size_guard():
    big = mlff((784, 500, 500, 500, 10))
    with pytest.raises(NetlistTooLarge, match="MAX_DENSE_WIDTH=400"):
        check_size(big)
    assert not check_size(big, force=True).ok
    est = estimate_size(mlff((784, 500, 10)), fold_inputs=False)
    assert est.ok and est.synapse_elements == 402_000
    est = estimate_size(mlff((784, 500, 10)))
    net = Network.init(mlff((784, 500, 10)), seed=0, dtype=torch.float64)
    assert len(build_circuit(net).elements) == est.elements


def test_bad_input_raises_before_any_work():
    net = random_net()
    for kw, msg in [
        (dict(x=[0.1, 0.2]), "shape"), (dict(x=[0.1, np.nan, 0.2]), "non-finite"),
        (dict(x=np.zeros((2, 3))), "one example"), (dict(beta=0.5), "target"),
        (dict(beta=0.5, target=[0.1, np.inf]), "non-finite"), (dict(state0=np.zeros(3)), "shape"),
        (dict(level="transistor"), "level"), (dict(g0=0.0), "g0"), (dict(beta=float("nan")), "finite"),
        (dict(use="tran", state0=np.zeros(14)), "use"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_circuit(net, **kw)
    # on a net the size guard would refuse, bad values are still what is reported
    huge = Network(mlff((784, 500, 500, 500, 10)), torch.zeros(2294, 2294), torch.zeros(2294))
    for kw, msg in [(dict(x=[0.1, 0.2]), "shape"), (dict(x=np.full(784, np.nan)), "non-finite"),
                    (dict(beta=0.5), "target"), (dict(level="transistor"), "level")]:
        with pytest.raises(ValueError, match=msg) as e:
            build_circuit(huge, **kw)
        assert not isinstance(e.value, NetlistTooLarge)


def test_cli_writes_and_refuses(tmp_path, capsys):
    from eqprop_cli import netlist
    parser = argparse.ArgumentParser(prog="eqprop")
    netlist.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "n.cir"
    args = parser.parse_args(["netlist", "--sizes", "3,4,2", "--topology", "sw", "--p", "0.2", "--level", "crossbar",
                              "--device-preset", "taox_hfox_rram", "--unfolded", "--phase", "nudged", "-o", str(out)])
    assert args.func(args) == 0
    z = np.load(tmp_path / "n.npz")
    assert z["W"].shape == (9, 9) and list(z["u_nodes"])[3] == "u3" and list(z["r_nodes"])[0] == "r0"
    assert out.read_text().startswith("* eqprop-spice format=1 sizes=3,4,2 level=crossbar inputs=unfolded")
    args = parser.parse_args(["netlist", "--sizes", "784,500,500,500,10", "--matrix-solver", "sparse",
                              "-o", str(tmp_path / "big.cir")])
    assert args.func(args) == 2
    assert "MAX_DENSE_WIDTH=400" in capsys.readouterr().err and not (tmp_path / "big.cir").exists()


def _ascii_raw(path: Path) -> dict[str, float]:
    lines = path.read_text().splitlines()
    nv = int(next(l for l in lines if l.startswith("No. Variables")).split(":")[1])
    k = lines.index("Variables:")
    names = [l.split()[1] for l in lines[k + 1:k + 1 + nv]]
    vals = [float(l.split()[-1]) for l in lines[k + 2 + nv:k + 2 + 2 * nv]]
    return dict(zip(names, vals))


@pytest.mark.ngspice
@pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice binary not on PATH (apt-get install ngspice)")
def test_ngspice_op_matches_euler(tmp_path):
    """`ngspice -b` .op on generated netlists reaches the Euler fixed point (rho) to <= 1e-6."""
    from circuits.devices import load_preset, program_network
    net = random_net((3, 6, 5, 2), seed=5)
    topo = net.topology
    x = torch.tensor([[0.2, 0.9, 0.6]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    euler = EulerSolver(EulerConfig(eps=0.5, free_steps=20000, nudged_steps=20000, nudge_form="gradient", tol=1e-13))
    prog = program_network(net, load_preset("taox_hfox_rram", w_max=2.0), rng=0)
    dnet = Network(Topology(topo.sizes, topo.mask, directed=True), torch.tensor(prog.weights()), net.b)
    free_ids = list(range(topo.n_in, topo.n))
    cases = [("ideal", net, None, fold, beta) for fold in (True, False) for beta in (0.0, 0.5)]
    cases += [("crossbar", dnet, prog, fold, 0.0) for fold in (True, False)]
    for k, (level, ref, arrays, fold, beta) in enumerate(cases):
        s = euler.relax(ref, x)
        if beta:
            s = euler.relax(ref, x, s, beta=beta, target=y)
        c = build_circuit(net, x[0], beta=beta, target=y[0], level=level, fold_inputs=fold, state0=s[0].numpy(),
                          device_arrays=arrays)
        raw = tmp_path / f"c{k}.raw"
        tail = [".control", "set filetype=ascii", "op",
                f"write {raw} " + " ".join(f"v({c.r_node[i]})" for i in free_ids), "quit", ".endc"]
        (tmp_path / f"c{k}.cir").write_text(c.to_spice(tail))
        proc = subprocess.run(["ngspice", "-b", str(tmp_path / f"c{k}.cir")], capture_output=True, text=True,
                              timeout=60)
        assert raw.exists(), f"ngspice failed ({level}, folded={fold}):\n{proc.stdout}\n{proc.stderr}"
        v = _ascii_raw(raw)
        got = np.array([v[f"v(r{i})"] for i in free_ids])
        err = np.abs(got - s[0, topo.n_in:].numpy()).max()
        assert err <= 1e-6, (level, fold, beta, err)
