"""SpiceSolver against the converged Euler reference (gradient nudge, float64).

The circuit's fixed point satisfies rho(u) = clip(W rho(u) + b (+ nudge)); the ideal
level must match the Euler fixed point to 1e-6 on rho (DESIGN.md section 5).
"""
import dataclasses

import numpy as np
import pytest
import torch

from circuits.errors import SimulationError
from circuits.ngspice_runner import library_available
from circuits.spice_solver import SpiceSolver
from eqprop.config import EulerConfig
from eqprop.dynamics import rho
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world

NO_LIBRARY = "libngspice not found (apt-get install libngspice0, or set NGSPICE_LIBRARY_PATH)"
pytestmark = [pytest.mark.ngspice,
              pytest.mark.skipif(not library_available(),
                                 reason=NO_LIBRARY)]
TOL = 1e-6
BETA = 0.5
EULER = EulerSolver(EulerConfig(eps=0.5, free_steps=400_000, nudged_steps=400_000, nudge_form="gradient", tol=1e-12))


def dist(a, b) -> float:
    """max |rho(a) - rho(b)|: states are u (node voltages); compare rho(V), not V."""
    return float((rho(a) - rho(b)).abs().max())


def make(kind, sizes, seed, dtype=torch.float64):
    topo = mlff(sizes) if kind == "mlff" else small_world(sizes, 0.2, seed=seed)
    return Network.init(topo, seed=seed, dtype=dtype)


def data(net, batch, seed):
    rng = np.random.default_rng(seed)
    topo = net.topology
    return (torch.tensor(rng.random((batch, topo.n_in)), dtype=net.dtype),
            torch.tensor(rng.random((batch, topo.n_out)), dtype=net.dtype))


def reference(net, x, y, beta=BETA):
    free = EULER.relax(net, x)
    assert EULER.last_steps < EULER.config.free_steps, "Euler reference did not converge"
    nudged = EULER.relax(net, x, free, beta=beta, target=y)
    assert EULER.last_steps < EULER.config.nudged_steps, "Euler reference did not converge"
    return free, nudged


def both_phases(solver, net, x, y, beta=BETA):
    free = solver.relax(net, x)
    return free, solver.relax(net, x, free, beta=beta, target=y)


@pytest.fixture(scope="module")
def solver():
    with SpiceSolver(method="tran+op", timeout=120) as s:
        yield s


@pytest.mark.parametrize("kind,sizes,seed", [
    ("mlff", (6, 20, 20, 4), 0),
    ("sw", (6, 20, 20, 4), 1),
    ("sw", (8, 20, 20, 20, 5), 2),
    ("mlff", (8, 30, 30, 30, 6), 3),  # 104 neurons, 3 hidden layers
])
def test_ideal_matches_euler_free_and_nudged(solver, kind, sizes, seed):
    net = make(kind, sizes, seed)
    x, y = data(net, 2, seed)
    ref_free, ref_nudged = reference(net, x, y)
    free, nudged = both_phases(solver, net, x, y)
    assert (free[:, :sizes[0]] == x).all()
    assert dist(free, ref_free) <= TOL
    assert dist(nudged, ref_nudged) <= TOL
    assert dist(nudged, free) > 1e-3  # the nudge did something


def test_deep_net_where_cold_op_finds_another_equilibrium(solver):
    # 8-24-24-24-6, seed 1: a cold .op (Newton from 0 with gmin stepping) lands on another
    # fixed point; the transient picks the Euler reference's and .op polishes it
    net = make("mlff", (8, 24, 24, 24, 6), 1)
    x = torch.tensor(np.random.default_rng(1).random((1, 8)))
    ref = EULER.relax(net, x)
    with SpiceSolver(method="op", timeout=120) as cold:
        try:
            far = dist(cold.relax(net, x), ref)
        except SimulationError:
            far = np.inf
    assert far > 1e-3
    assert dist(solver.relax(net, x), ref) <= TOL


def test_warm_op_from_the_equilibrium_and_tran_settle_to_the_same_point():
    net = make("sw", (5, 12, 12, 3), 4)
    x, y = data(net, 2, 4)
    ref_free, ref_nudged = reference(net, x, y)
    with SpiceSolver(method="tran", timeout=120) as tran:
        free, nudged = both_phases(tran, net, x, y)
    assert dist(free, ref_free) <= TOL and dist(nudged, ref_nudged) <= TOL
    with SpiceSolver(method="op", timeout=120) as op:  # .op warm-started by .nodeset from the Euler state
        assert dist(op.relax(net, x, ref_free), ref_free) <= 1e-9
        assert dist(op.relax(net, x, ref_free, beta=BETA, target=y), ref_nudged) <= TOL


def test_alter_in_place_equals_renetlist_after_update():
    net = make("mlff", (5, 10, 10, 3), 5)
    x, y = data(net, 2, 5)
    g = torch.Generator().manual_seed(0)
    dW = 0.05 * torch.randn(net.W.shape, generator=g, dtype=net.dtype) * net.mask_tensor()
    dW, db = dW + dW.T, torch.full_like(net.b, 0.01)
    db[:net.topology.n_in] = 0
    one = torch.ones((), dtype=net.dtype)
    nets = {}
    with SpiceSolver(method="tran", update="alter") as alt, SpiceSolver(method="tran", update="renetlist") as ren:
        for name, s in (("alt", alt), ("ren", ren)):
            nets[name] = net.clone()
            both_phases(s, nets[name], x, y)
            s.apply_update(nets[name], dW, db, one, one)  # a training update goes through the solver
        a_free, a_nudged = both_phases(alt, nets["alt"], x, y)
        assert alt.last_stats["load_s"] == 0.0  # no reload: the changed elements were altered
        r_free, r_nudged = both_phases(ren, nets["ren"], x, y)
        assert ren.last_stats["load_s"] == 0.0  # reloaded by apply_update, not by relax
    assert torch.equal(nets["alt"].W, net.W + dW) and torch.equal(nets["alt"].b, net.b + db)
    ref_free, ref_nudged = reference(nets["alt"], x, y)
    assert dist(a_free, r_free) <= 1e-9 and dist(a_nudged, r_nudged) <= 1e-9
    assert dist(a_free, ref_free) <= TOL and dist(a_nudged, ref_nudged) <= TOL


def test_crossbar_with_ideal_continuous_device_matches_euler():
    net = make("sw", (5, 12, 12, 3), 6)
    x, y = data(net, 2, 6)
    ref_free, ref_nudged = reference(net, x, y)
    with SpiceSolver(level="crossbar", device="ideal", timeout=120) as xbar:
        free, nudged = both_phases(xbar, net, x, y)
        assert dist(free, ref_free) <= TOL
        assert dist(nudged, ref_nudged) <= TOL
        net.W *= 0.9  # a weight change reaches the devices
        ref_free = EULER.relax(net, x)
        assert dist(xbar.relax(net, x), ref_free) <= TOL


def test_unfolded_inputs_match_euler_and_follow_weight_alters():
    net = make("mlff", (4, 8, 3), 9)
    x, y = data(net, 2, 9)
    with SpiceSolver(method="tran", fold_inputs=False, timeout=60) as s:
        ref_free, ref_nudged = reference(net, x, y)
        free, nudged = both_phases(s, net, x, y)
        assert dist(free, ref_free) <= TOL and dist(nudged, ref_nudged) <= TOL
        dW = torch.zeros_like(net.W)
        dW[:4, 4:12], dW[4:12, :4] = -2 * net.W[:4, 4:12], -2 * net.W[4:12, :4]  # flip the input synapses
        one = torch.ones((), dtype=net.dtype)
        s.apply_update(net, dW, torch.zeros_like(net.b), one, one)  # input synapses are elements: altered
        assert dist(s.relax(net, x), EULER.relax(net, x)) <= TOL
        assert s.last_stats["load_s"] == 0.0
        net.W.mul_(0.5)  # a change made outside apply_update: the next relax reloads the circuit
        assert dist(s.relax(net, x), EULER.relax(net, x)) <= TOL
        assert s.last_stats["load_s"] > 0.0


def test_impossible_tolerances_raise_with_log_then_the_solver_recovers():
    net = make("mlff", (4, 6, 3), 7)
    x, _ = data(net, 1, 7)
    impossible = {"itl4": 1, "reltol": 1e-14, "abstol": 1e-30, "vntol": 1e-30, "chgtol": 1e-30}
    with SpiceSolver(method="tran", tran_options=impossible, timeout=60) as s:
        with pytest.raises(SimulationError) as info:
            s.relax(net, x)
        err = info.value
        assert "example 0, free phase" in str(err) and "Timestep too small" in err.log
        assert err.netlist.startswith("* eqprop-spice") and err.command.startswith("tran")
        s.config = dataclasses.replace(s.config, tran_options=None)
        assert dist(s.relax(net, x), EULER.relax(net, x)) <= TOL


def test_parallel_workers_and_dtype(solver):
    net = make("sw", (5, 10, 10, 3), 8, dtype=torch.float32)
    x, y = data(net, 4, 8)
    one = solver.relax(net, x)
    with SpiceSolver(workers=2, timeout=120) as two:
        par = two.relax(net, x)
        st, parts = two.last_stats, [sl.stats for sl in two._slots[0]]
    # each worker kept its own numbers; the call's stats are their sum (max for the polish change)
    assert len(parts) == 2 and all(p["tran_s"] > 0 for p in parts)
    assert st["examples"] == 4 and st["tran_s"] == pytest.approx(sum(p["tran_s"] for p in parts))
    assert st["polish_max_change"] == max(p["polish_max_change"] for p in parts)
    assert par.dtype == torch.float32 and par.shape == (4, net.topology.n)
    assert dist(par, one) <= 1e-6
    with pytest.raises(ValueError, match="needs a target"):
        solver.relax(net, x, one, beta=0.5)


def test_one_trainer_step_matches_euler(tmp_path):
    from eqprop.config import RunConfig
    from eqprop.datasets import load_dataset
    from eqprop.trainer import Trainer
    data_xor = load_dataset("xor")
    cfg = RunConfig(dataset="xor", hidden=[6], epochs=1, lr=0.1, beta=0.5, dtype="float64", batch_size=4,
                    out=str(tmp_path))
    nets = []
    for solver in (EULER, SpiceSolver(timeout=60)):
        tr = Trainer(cfg, data_xor, solver=solver)
        tr.train_batch(0)
        nets.append(tr.net)
        solver.close()
    assert float((nets[0].W - nets[1].W).abs().max()) <= 1e-6


def test_spice_check_cli_report(tmp_path, capsys):
    import argparse
    import json

    from eqprop_cli import spice
    parser = argparse.ArgumentParser(prog="eqprop")
    spice.register(parser.add_subparsers())
    out = tmp_path / "report.json"
    args = parser.parse_args(["spice-check", "--count", "2", "--sizes", "4,6,6,3", "--examples", "1",
                              "--euler-tol", "1e-10", "--quiet", "--json", "-o", str(out)])
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["passed"] and len(report["networks"]) == 2
    assert [n["topology"] for n in report["networks"]] == ["mlff", "sw"]
    assert report["worst"]["overall"] <= TOL and report["worst"]["residual"] <= TOL
    assert json.loads(capsys.readouterr().out) == report


@pytest.mark.ngspice
def test_crossbar_weights_beyond_the_device_range_raise_or_saturate():
    from eqprop.network import Network
    from eqprop.topology import mlff
    net = Network.init(mlff((3, 4, 2)), seed=0, dtype=torch.float64)
    net.W[0, 3] = net.W[3, 0] = 1.5  # beyond every preset's w_max = 1
    x = torch.rand(1, 3, dtype=torch.float64)
    with SpiceSolver(level="crossbar") as sp:
        with pytest.raises(ValueError, match="exceed"):
            sp.relax(net, x)
    with SpiceSolver(level="crossbar", clip_weights=True) as sp:
        s = sp.relax(net, x)
        assert sp.report()["clipped_weights"] == [2] and torch.isfinite(s).all()


def test_timed_nudged_phase_is_the_nudge_held_for_t_nudged_tau():
    """nudged_phase "timed": the state after t_nudged tau of nudge from the free equilibrium (the Euler
    reference's nudged_steps x eps in continuous time), not the nudged equilibrium; both routes (batched in the
    worker, per example with measure) give it. Checked against a fine Euler integration of the same 6 tau."""
    net = make("mlff", (6, 20, 20, 4), 4)
    x, y = data(net, 2, 4)
    fine = EulerSolver(EulerConfig(eps=0.01, free_steps=200_000, nudged_steps=600, nudge_form="gradient", tol=1e-12))
    free_ref = fine.relax(net, x)
    timed_ref = fine.relax(net, x, free_ref, beta=BETA, target=y)  # 600 x 0.01 = 6 tau
    settled_ref = reference(net, x, y)[1]
    assert dist(timed_ref, settled_ref) > 5e-2  # 6 tau is not yet the nudged equilibrium (0.16 here)
    for measure in (False, True):
        with SpiceSolver(nudged_phase="timed", t_nudged=6.0, measure=measure, timeout=120) as s:
            free = s.relax(net, x)
            timed = s.relax(net, x, free, beta=BETA, target=y)
        assert dist(free, free_ref) <= TOL
        assert dist(timed, timed_ref) <= 1e-3  # measured 1.7e-4: Euler's first-order error at eps 0.01
        assert dist(timed, settled_ref) > 5e-2


def test_timed_nudged_phase_is_refused_without_a_transient():
    from circuits.spice_config import SpiceConfig
    with pytest.raises(ValueError, match="nudged_phase .timed.*method .op.*--nudged-phase settled"):
        SpiceConfig(method="op", nudged_phase="timed")
    with pytest.raises(ValueError, match="nudged_phase must be one of"):
        SpiceConfig(nudged_phase="short")


def test_spice_check_from_euler_start_passes_and_catches_a_circuit_that_differs():
    """--start euler --method op: Newton from Euler's fixed point stays there when the circuit is the same
    network, and moves off it (the check fails) when the circuit holds other weights."""
    from experiments.spice_check import check_network
    net = make("mlff", (4, 6, 6, 3), 3)
    x, y = data(net, 2, 3)
    with SpiceSolver(method="op") as sp:
        row = check_network(net, sp, x, y, BETA, EULER, start="euler")
        assert max(row["free"], row["nudged"]) <= TOL and row["residual"] <= TOL

        class Other:  # the circuit of a perturbed network, compared against the original's Euler equilibria
            def relax(self, network, x, u0=None, beta=0.0, target=None):
                moved = network.clone()
                moved.W = network.W * 1.2
                return sp.relax(moved, x, u0, beta=beta, target=target)
        bad = check_network(net, Other(), x, y, BETA, EULER, start="euler")
        assert max(bad["free"], bad["nudged"]) > 1e-3 and bad["residual"] > 1e-3
    with pytest.raises(ValueError, match="start"):
        from experiments.spice_check import spice_check
        spice_check([], None, start="middle")
