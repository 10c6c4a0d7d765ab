"""Item 6 of issue 14: DEEP on mismatched devices (circuits.deep_spice.DeviceDeepSolver) and the
EqProp-vs-DEEP mismatch study (experiments.deep_mismatch). Digital only: no simulator needed."""
import argparse

import numpy as np
import pytest
import torch

from circuits.deep_spice import DeviceDeepSolver
from circuits.device_solver import DeviceEulerSolver
from circuits.devices import load_preset, weight_asymmetry
from eqprop.config import EulerConfig
from eqprop.deep import DeepConfig, DeepSolver, deep_init
from eqprop.deep_rule import DeepRule
from eqprop.network import Network
from eqprop.topology import complete_directed
from experiments import deep_mismatch as dm

F64 = torch.float64
CFG = DeepConfig(dt=0.05, free_steps=200, nudged_steps=100)


def data():
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=F64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    return x, y


def step(solver, net, x, y):
    """One DEEP step by hand (free, nudged, rule, update), as the Trainer does it."""
    rule = DeepRule(solver)
    free = solver.relax(net, x)
    nudged = solver.relax(net, x, free, 0.5, y)
    dW, db = rule(free, nudged, 0.5, torch.as_tensor(net.topology.mask), True, 3)
    solver.apply_update(net, dW, db, 30.0, 30.0)
    return free, nudged


def test_complete_undirected_is_the_symmetric_closure_and_hopfield_init_is_symmetric():
    t = dm.complete_undirected(2, 5, 2)
    d = complete_directed(2, 5, 2, bias=True)
    assert not t.directed and np.array_equal(t.mask, d.mask | d.mask.T) and not t.mask[:3, :3].any()
    W = dm.hopfield_init(t, 7).W.numpy()
    assert np.array_equal(W, W.T) and np.all(W[~t.mask] == 0) and 0.02 < W[t.mask].std() < 0.08


def test_device_deep_solver_without_mismatch_is_deep_solver():
    net = deep_init(complete_directed(2, 3, 2, bias=True), seed=1, std=0.3, dtype=F64)
    ref_net = Network(net.topology, net.W.clone(), net.b.clone())
    x, y = data()
    dev = DeviceDeepSolver(load_preset("ideal", w_max=2.0), CFG)
    dev.prepare(net)
    a = step(dev, net, x, y)
    b = step(DeepSolver(CFG), ref_net, x, y)
    for u, v in zip(a, b):
        assert float((u - v).abs().max()) < 1e-9
    assert float((net.W - ref_net.W).abs().max()) < 1e-9
    W0 = deep_init(net.topology, seed=1, std=0.3, dtype=F64).W
    assert float((net.W - W0).abs().max()) > 1e-3, "the update must move the weights"
    assert dev.report()["realised_deviation"] == [0.0]


def test_device_deep_solver_relaxes_the_realised_weights_of_a_mismatched_instance():
    net = deep_init(complete_directed(2, 3, 2, bias=True), seed=2, std=0.3, dtype=F64)
    x, y = data()
    dev = DeviceDeepSolver(load_preset("ideal", w_max=2.0, g_dtod=0.3), CFG, device_seed=4)
    dev.prepare(net)
    real = dev.realised_weights(0)
    assert np.abs(real - net.W.numpy()).max() > 1e-2, "d2d gains change the weights that act"
    free = dev.relax(net, x)
    ref = DeepSolver(CFG).relax(Network(net.topology, torch.as_tensor(real), net.b), x)
    assert float((free - ref).abs().max()) < 1e-12
    rep = dev.report()
    assert 0.1 < rep["realised_deviation"][0] < 1.0 and "gershgorin_stable" in rep
    assert dev.describe()["deep"]["dt"] == 0.05 and dev.describe()["device"]["g_dtod"] == 0.3


def test_mismatch_makes_the_hopfield_weights_asymmetric_in_proportion():
    t = dm.complete_undirected(2, 5, 2)
    asym = []
    for spread in (0.0, 0.1, 0.4):
        net = dm.hopfield_init(t, 0, std=0.3, dtype=F64)
        s = DeviceEulerSolver(load_preset("ideal", g_dtod=spread, w_max=2.0), EulerConfig(nudge_form="gradient"))
        s.prepare(net)
        asym.append(weight_asymmetry(s.realised_weights(0)))
        assert np.array_equal(net.W.numpy(), net.W.numpy().T), "the network holds the symmetric nominal weights"
    assert asym[0] < 1e-12 and 0.05 < asym[1] < asym[2] < 1.0


def test_reproduce_deep_mismatch_small_run(tmp_path):
    args = argparse.Namespace(seeds=1, seed0=0, epochs=2, only="0,0.4", out=str(tmp_path), restart=False, quiet=True,
                              workers=1)
    assert dm.reproduce(args) == 0
    import json
    s = json.loads((tmp_path / "summary.json").read_text())
    assert set(s) == {"xor-eqprop-d0", "xor-eqprop-d0.4", "xor-deep-d0", "xor-deep-d0.4"}
    assert s["xor-eqprop-d0"]["realised_asymmetry"] < 1e-12 and s["xor-eqprop-d0.4"]["realised_asymmetry"] > 0.2
    assert s["xor-deep-d0"]["realised_deviation"] < 1e-12 and s["xor-deep-d0.4"]["realised_deviation"] > 0.2
    assert (tmp_path / "deep_mismatch.png").exists() and "| 0.4 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("only,match", [("0.1,bogus", "bogus"), ("-0.2", ">= 0"), ("nan", "finite")])
def test_reproduce_deep_mismatch_bad_only_names_it(tmp_path, only, match):
    args = argparse.Namespace(seeds=1, seed0=0, epochs=2, only=only, out=str(tmp_path), restart=False, quiet=True)
    with pytest.raises(ValueError, match=match):
        dm.reproduce(args)
    assert not any(tmp_path.iterdir()), "nothing written before the check"
