"""DEEP (eqprop.deep, deep_rule, deep_stability): dynamics and rule against hand computations, the
Gershgorin test on known matrices, pruning, Euler engines on directed nets, and DEEP trained by the
one Trainer (learns XOR; lockstep trials == separate runs; resume)."""
import json

import numpy as np
import pytest
import torch

from eqprop.config import EulerConfig, RunConfig
from eqprop.datasets import gate_dataset, load_dataset
from eqprop.deep import DeepConfig, DeepSolver, deep_init
from eqprop.deep_rule import DeepRule, deep_update, prune_, prune_probabilities, vector_field_update
from eqprop.deep_stability import (
    LeakyStabilityReport,
    deep_jacobian,
    equilibrium_stability,
    gershgorin_margins,
    leaky_jacobian,
    max_real_eigenvalue,
    stability_summary,
)
from eqprop.fast_relax import FastEulerSolver
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import complete_directed
from eqprop.trainer import Trainer, seed_streams

F64 = torch.float64


def tiny_net(seed=0, std=0.5):
    """1 input + bias, 2 hidden, 1 output: N = 5, asymmetric weights."""
    return deep_init(complete_directed(1, 2, 1, bias=True), seed=seed, std=std, dtype=F64)


def deep_step_by_hand(W, b, x, s, dt, beta=0.0, y=None, n_out=1):
    """One DEEP Euler step written neuron by neuron (no matrices folded): numpy, one example."""
    n_in, N = len(x), W.shape[0]
    full = np.concatenate([x, s])
    new = full.copy()
    for j in range(n_in, N):
        drive = sum(W[i, j] * full[i] for i in range(N)) + b[j]
        leak = full[j] * sum(W[j, k] for k in range(N))
        ds = drive - leak
        if beta and j >= N - n_out:
            ds += 2 * beta * (y[j - (N - n_out)] - full[j])  # the force 2 beta (y - s): the paper's beta is 2x
        new[j] = min(max(full[j] + dt * ds, 0.0), 1.0)
    return new


# -- topology, data, init -------------------------------------------------------------------

def test_complete_directed_bias_neuron_and_gate_data():
    t = complete_directed(2, 5, 2, bias=True)
    assert t.sizes == (3, 5, 2) and t.info["bias_input"] == 2
    assert not t.mask[:, :3].any() and t.mask[2, 3:].all(), "the bias neuron drives all, is driven by none"
    assert complete_directed(2, 5, 2).sizes == (2, 5, 2)  # default unchanged
    d = load_dataset("xor-bias")
    assert d.n_in == 3 and (d.x_train[:, 2] == 1).all() and d.labels_train.tolist() == [0, 1, 1, 0]
    assert gate_dataset("not").labels_train.tolist() == [1, 0] and gate_dataset("identity").n_in == 1
    assert load_dataset("identity-bias").x_train.tolist() == [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match="unknown gate"):
        gate_dataset("nand")


def test_deep_init_is_independent_per_direction():
    net = deep_init(complete_directed(3, 20, 2), seed=1, std=0.05, dtype=F64)
    W, m = net.W.numpy(), net.topology.mask
    both = m & m.T
    assert np.all(W[~m] == 0) and not np.allclose(W[both], W.T[both])
    assert 0.04 < W[m].std() < 0.06 and net.b.abs().sum() == 0
    with pytest.raises(ValueError, match="directed"):
        from eqprop.topology import mlff
        deep_init(mlff((2, 3, 1)))


# -- dynamics -------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_dynamics_match_hand_steps(beta):
    net = tiny_net()
    net.b[2:] = torch.tensor([0.1, -0.2, 0.05], dtype=F64)
    W, b = net.W.numpy(), net.b.numpy()
    x = np.array([[1.0, 1.0], [0.0, 1.0]])
    s0 = np.array([[0.2, 0.9, 0.4], [0.5, 0.0, 1.0]])
    y = np.array([[1.0], [0.0]])
    cfg = DeepConfig(dt=0.1, free_steps=3, nudged_steps=3)
    solver = DeepSolver(cfg)
    u0 = torch.tensor(np.hstack([x, s0]))
    u = solver.relax(net, torch.tensor(x), u0, beta, torch.tensor(y) if beta else None)
    for e in range(2):
        s = s0[e]
        states = [np.concatenate([x[e], s])]
        for _ in range(3):
            states.append(deep_step_by_hand(W, b, x[e], states[-1][2:], 0.1, beta, y[e]))
        np.testing.assert_allclose(u[e].numpy(), states[-1], atol=1e-12)
        if beta:
            np.testing.assert_allclose(solver.trajectory[:, e].numpy(), np.array(states), atol=1e-12)


def test_stack_relaxes_like_each_trial_and_clips():
    nets = [tiny_net(seed=s, std=2.0) for s in range(3)]
    stack = Network.stack(nets)
    x = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=F64)
    solver = DeepSolver(DeepConfig(free_steps=50))
    u = solver.relax(stack, x)
    assert u.shape == (3, 2, 5) and u.min() >= 0 and u.max() <= 1
    for t, n in enumerate(nets):
        torch.testing.assert_close(u[t], DeepSolver(DeepConfig(free_steps=50)).relax(n, x), rtol=0, atol=1e-12)


def test_config_validation():
    with pytest.raises(ValueError, match="dt"):
        DeepConfig(dt=0)
    with pytest.raises(ValueError, match="init"):
        DeepConfig(init="random")
    with pytest.raises(ValueError, match="free_steps"):
        DeepConfig(free_steps=-1)
    with pytest.raises(ValueError, match="nudge_form"):
        DeepConfig(nudge_form="other")


# -- the rule -------------------------------------------------------------------------------

def test_rule_matches_hand_computation_on_a_tiny_trajectory():
    rng = np.random.default_rng(3)
    S, B, N, n_in = 3, 2, 4, 1
    traj = rng.random((S + 1, B, N))
    traj[:, :, 0] = 1.0  # the clamped input
    mask = complete_directed(1, 2, 1).mask
    W = rng.normal(size=(N, N)) * mask
    b0, b1, l1 = 0.3, 1.0, 0.01
    want = np.zeros((N, N))
    want_b = np.zeros(N)
    for t in range(1, S + 1):
        for e in range(B):
            for i in range(N):
                for j in range(N):
                    want[i, j] += traj[t, e, i] * (b0 * traj[t, e, j] + b1 * (traj[t, e, j] - traj[t - 1, e, j]))
            want_b += b0 * traj[t, e] + b1 * (traj[t, e] - traj[t - 1, e])
    want = want / (B * S) * mask - l1 * np.sign(W) * mask
    want_b /= B * S
    want_b[:n_in] = 0
    dW, db = deep_update(torch.tensor(traj), torch.tensor(mask), n_in, b0, b1, l1=l1, W=torch.tensor(W), bias=True)
    np.testing.assert_allclose(dW.numpy(), want, atol=1e-12)
    np.testing.assert_allclose(db.numpy(), want_b, atol=1e-12)
    # valid rows: a padded second example counts nowhere; trials stack
    dW1, _ = deep_update(torch.tensor(traj[:, :1]), torch.tensor(mask), n_in, b0, b1)
    dWv, _ = deep_update(torch.tensor(traj), torch.tensor(mask), n_in, b0, b1, valid=torch.tensor([True, False]))
    torch.testing.assert_close(dWv, dW1)
    dWT, _ = deep_update(torch.tensor(np.stack([traj, traj[:, ::-1]], 1)), torch.tensor(np.stack([mask, mask])),
                         n_in, b0, b1)
    torch.testing.assert_close(dWT[0], deep_update(torch.tensor(traj), torch.tensor(mask), n_in, b0, b1)[0])


def test_rule_reads_the_solvers_trajectory_once_and_needs_positive_beta():
    net = tiny_net()
    solver = DeepSolver(DeepConfig(free_steps=20, nudged_steps=5))
    rule = DeepRule(solver, l1=1e-3)
    assert solver.describe()["rule"] == {"rule": "DeepRule", "b0": 0.0, "b1": 1.0, "l1": 1e-3, "bias": False}
    x, y = torch.tensor([[1.0, 1.0]], dtype=F64), torch.tensor([[1.0]], dtype=F64)
    free = solver.relax(net, x)
    nudged = solver.relax(net, x, free, 1.0, y)
    mask = net.mask_tensor()
    dW, db = rule(free, nudged, torch.tensor(1.0), mask, True, 2)
    assert solver.trajectory is None, "handed over once"
    assert dW[~mask].abs().sum() == 0 and db.abs().sum() == 0
    with pytest.raises(RuntimeError, match="nudged trajectory"):
        rule(free, nudged, torch.tensor(1.0), mask, True, 2)
    solver.relax(net, x, free, 1.0, y)
    with pytest.raises(ValueError, match="beta > 0"):
        rule(free, nudged, torch.tensor(-1.0), mask, True, 2)


def test_vector_field_rule_by_hand():
    free = torch.tensor([[1.0, 0.2, 0.5], [0.0, 0.4, 0.1]], dtype=F64)
    nudged = torch.tensor([[1.0, 0.3, 0.9], [0.0, 0.2, 0.6]], dtype=F64)
    mask = torch.tensor(complete_directed(1, 1, 1).mask)
    dW, db = vector_field_update(free, nudged, 0.5, mask, True, 1)
    want = sum(np.outer(free[e].numpy(), (nudged[e] - free[e]).numpy()) for e in range(2)) / (0.5 * 2)
    np.testing.assert_allclose(dW.numpy(), want * mask.numpy(), atol=1e-12)
    np.testing.assert_allclose(db.numpy(), [0, 2 * (-0.1) / 2, 2 * 0.9 / 2], atol=1e-12)


# -- stability ------------------------------------------------------------------------------

def test_gershgorin_and_eigenvalues_on_known_matrices():
    stable = torch.tensor([[-3.0, 1.0], [1.0, -3.0]], dtype=F64)  # discs [-4, -2]: eigenvalues -2, -4
    rows, cols = gershgorin_margins(stable)
    assert float(rows) == -2.0 and float(cols) == -2.0
    torch.testing.assert_close(max_real_eigenvalue(stable), torch.tensor(-2.0, dtype=F64))
    # rows fail (-1 + 2), columns pass? no: column 1 is -1 + 2 too; eigenvalues -1 +- 1: 0 is not < 0
    marginal = torch.tensor([[-1.0, 2.0], [0.5, -1.0]], dtype=F64)
    assert float(gershgorin_margins(marginal)[0]) == 1.0
    assert abs(float(max_real_eigenvalue(marginal))) < 1e-12
    # columns pass where rows fail: the test takes the better of the two
    cols_only = torch.tensor([[-2.0, 1.5], [0.1, -2.0]], dtype=F64)
    r, c = gershgorin_margins(cols_only)
    assert float(r) == pytest.approx(-0.5) and float(c) == pytest.approx(-0.5)
    skew = torch.tensor([[-1.0, 3.0], [0.1, -5.0]], dtype=F64)  # rows: -1 + 3 > 0; columns: -1 + 0.1, -5 + 3 < 0
    r, c = gershgorin_margins(skew)
    assert float(r) > 0 > float(c)
    rep = stability_summary(torch.stack([stable, marginal, skew]))
    assert rep["gershgorin_stable"] == [True, False, True] and rep["eig_stable"] == [True, False, True]
    assert stability_summary(stable, eig_max_neurons=1)["max_real_eig"] == [None]


def test_equilibrium_stability_looks_at_unsaturated_neurons_only():
    J = torch.tensor([[[-1.0, 0.0], [0.0, 2.0]]], dtype=F64)  # neuron 1 alone is unstable
    s = torch.tensor([[[0.5, 1.0], [0.5, 0.3], [0.0, 1.0]]], dtype=F64)  # saturated / not / all saturated
    rep = equilibrium_stability(J, s[:, [0]])
    assert rep == {"eq_gershgorin_stable": [True], "eq_stable": [True], "eq_max_real_eig": [-1.0],
                   "eq_unsaturated": [1.0]}
    rep = equilibrium_stability(J, s)
    assert rep["eq_stable"] == [False] and rep["eq_max_real_eig"] == [2.0] and rep["eq_unsaturated"] == [1.0]
    rep = equilibrium_stability(J, s[:, [2]])
    assert rep["eq_stable"] == [True] and rep["eq_max_real_eig"] == [None]


def test_jacobians_of_the_two_dynamics():
    net = tiny_net()
    W = net.W.numpy()
    J = deep_jacobian(net.W, 2).numpy()
    for j in range(3):
        for l in range(3):
            want = W[l + 2, j + 2] - (W[j + 2].sum() if j == l else 0.0)
            assert J[j, l] == pytest.approx(want)
    np.testing.assert_allclose(leaky_jacobian(net.W, 2).numpy(), W[2:, 2:].T - np.eye(3))
    Jn = deep_jacobian(net.W, 2, beta=0.5, n_out=1).numpy()
    assert Jn[2, 2] == pytest.approx(J[2, 2] - 1.0) and Jn[0, 0] == J[0, 0]
    # the Jacobian predicts the dynamics: a small step off a point inside the box
    solver = DeepSolver(DeepConfig(dt=1e-3, free_steps=1))
    x = torch.tensor([[0.3, 1.0]], dtype=F64)
    s = torch.tensor([[0.4, 0.5, 0.6]], dtype=F64)
    d = torch.tensor([[1e-4, -2e-4, 3e-4]], dtype=F64)
    step = lambda s_: (solver.relax(net, x, torch.cat([x, s_], 1))[0, 2:] - s_[0]) / 1e-3  # noqa: E731
    np.testing.assert_allclose((step(s + d) - step(s)).numpy(), J @ d[0].numpy(), atol=1e-9)


# -- pruning --------------------------------------------------------------------------------

def test_pruning_probabilities_and_determinism():
    net = tiny_net(seed=4, std=0.01)
    alive = net.mask_tensor().clone()
    p = prune_probabilities(net.W, alive, 5.0)
    col = net.topology.mask[:, 3]
    w = np.abs(net.W.numpy()[:, 3])
    np.testing.assert_allclose(p[col, 3], np.exp(-w[col] / 5) / np.exp(-w[col] / 5).sum())
    assert np.all(p[~net.topology.mask] == 0)

    def run(seed):
        W, a = net.W.clone(), alive.clone()
        rng = np.random.default_rng(seed)
        gone = [prune_(W, a, 0.01, 5.0, rng) for _ in range(5)]
        return W, a, gone

    W1, a1, g1 = run(7)
    W2, a2, g2 = run(7)
    assert g1 == g2 and torch.equal(W1, W2) and torch.equal(a1, a2) and sum(g1) > 0
    assert not torch.equal(run(8)[1], a1)
    assert (W1[~a1] == 0).all() and torch.equal(W1[a1], net.W[a1]), "only removed weights change"
    strong = net.W.abs() > 0.01
    assert a1[strong & net.mask_tensor()].all(), "weights above tol_W are never pruned"


# -- Euler engines on directed nets (the asymmetric-EqProp baseline) ---------------------------

@pytest.mark.parametrize("engine", [EulerSolver, FastEulerSolver])
def test_euler_engines_relax_directed_nets_by_hand(engine):
    net = tiny_net(std=0.8)
    W, b = net.W.numpy(), net.b.numpy()
    x = np.array([[1.0, 1.0], [0.0, 1.0]])
    cfg = EulerConfig(eps=0.2, free_steps=7, nudged_steps=3, nudge_form="gradient")
    free = engine(cfg).relax(net, torch.tensor(x))
    for e in range(2):
        s = np.zeros(3)
        for _ in range(7):
            full = np.concatenate([x[e], s])
            s = np.clip(s + 0.2 * (full @ W[:, 2:] + b[2:] - s), 0, 1)  # sum_i W_ij s_i: i drives j
        np.testing.assert_allclose(free[e, 2:].numpy(), s, atol=1e-12)


# -- trained by the one Trainer --------------------------------------------------------------

def deep_trainer(tmp, seeds, epochs=3, prune=False, steps=50, lr=1.5, beta=0.5, task="xor", ck="ck.pt"):
    data = gate_dataset(task, bias_input=True)
    cfgs = [RunConfig(dataset=data.name, hidden=(5,), lr=lr, beta=beta, random_beta_sign=False, epochs=epochs,
                      seed=s, dtype="float64", out=str(tmp / f"s{s}")) for s in seeds]
    nets = [deep_init(complete_directed(data.n_in - 1, 5, 2, bias=True), seed=seed_streams(s)[1], dtype=F64)
            for s in seeds]
    solver = DeepSolver(DeepConfig(free_steps=steps, nudged_steps=steps, dt=0.2, prune=prune, tol_W=0.05),
                        trial_seeds=seeds)
    return Trainer(cfgs, data, solver=solver, networks=nets, checkpoint=tmp / ck,
                   rule=DeepRule(solver, l1=1e-4 if prune else 0.0))


def test_lockstep_trials_equal_separate_runs_with_pruning(tmp_path):
    seeds = [0, 1, 2]
    tr = deep_trainer(tmp_path / "group", seeds, prune=True)
    tr.run(progress=False)
    for t, s in enumerate(seeds):
        one = deep_trainer(tmp_path / f"alone{s}", [s], prune=True)
        one.run(progress=False)
        torch.testing.assert_close(tr.net.W[t], one.net.W[0], rtol=0, atol=1e-12)
        assert torch.equal(tr.solver.alive[t], one.solver.alive[0])
        assert [h.test_error for h in tr.history[t]] == [h.test_error for h in one.history[0]]
    assert any(tr.solver.alive[t].sum() < tr.solver.n_mask[t] for t in range(3)), "something was pruned"


def test_report_lands_in_metrics_and_resume_is_bit_identical(tmp_path):
    full = deep_trainer(tmp_path / "full", [0, 1], epochs=4, prune=True)
    full.run(progress=False)
    m = json.loads((tmp_path / "full" / "s1" / "metrics.json").read_text())
    rep = m["epochs"][-1]["solver"]
    assert set(rep) >= {"gershgorin_margin", "gershgorin_stable", "max_real_eig", "eig_stable", "sparsity",
                        "connections", "free_residual", "eq_stable", "eq_gershgorin_stable", "eq_max_real_eig"}
    assert rep["sparsity"] == pytest.approx(1 - rep["connections"] / 63)  # 7 driven neurons x 9 others
    assert m["solver"]["rule"]["l1"] == 1e-4 and m["solver"]["prune"] is True
    half = deep_trainer(tmp_path / "half", [0, 1], epochs=4, prune=True)
    half.run(epochs=2, progress=False)
    again = deep_trainer(tmp_path / "half", [0, 1], epochs=4, prune=True)
    again.run(resume=True, progress=False)
    assert torch.equal(again.net.W, full.net.W) and torch.equal(again.solver.alive, full.solver.alive)


def test_short_xor_run_learns(tmp_path):
    """DEEP on XOR with the bias neuron, 10 seeds as lockstep trials, 100 epochs of 50/50 steps of dt 0.2
    (lr 1.5: the rule averages over T2, so a 20x shorter phase needs a 20x smaller rate than the
    paper's): most seeds reach 0 error, the mean error falls far below chance (0.5). Measured: 7/10, 0.125."""
    tr = deep_trainer(tmp_path, list(range(10)), epochs=100)
    for _ in range(100):
        tr.run_epoch()  # the Trainer's epochs without its per-epoch files (run() writes them: 10x the time here)
    final = np.array([h[-1].test_error for h in tr.history])
    first = np.array([h[0].test_error for h in tr.history])
    assert (final == 0).sum() >= 6 and final.mean() < 0.2 < first.mean(), (first, final)


def test_leaky_stability_report_wraps_an_euler_solver(tmp_path):
    data = gate_dataset("xor", bias_input=True)
    cfg = RunConfig(dataset=data.name, hidden=(5,), lr=0.1, epochs=1, dtype="float64", out=str(tmp_path / "r"))
    net = deep_init(complete_directed(2, 5, 2, bias=True), seed=0, dtype=F64)
    solver = LeakyStabilityReport(EulerSolver(EulerConfig(eps=0.2, free_steps=30, nudged_steps=10)))
    tr = Trainer(cfg, data, solver=solver, networks=[net])
    rep = tr.run(progress=False)[0]["epochs"][0]["solver"]
    J = leaky_jacobian(tr.net.W[0], 3)
    assert rep["max_real_eig"] == pytest.approx(float(max_real_eigenvalue(J)))
    assert rep["gershgorin_margin"] == pytest.approx(float(torch.minimum(*gershgorin_margins(J))))
    assert tr.metrics()[0]["solver"]["solver"] == "EulerSolver"


def test_experiment_runs_summarises_plots_and_skips_finished_groups(tmp_path, monkeypatch, capsys):
    from experiments import deep as exp

    monkeypatch.setattr(exp, "STEPS", 20)
    out = tmp_path / "deep"
    summary, results = exp.run(out, [0, 1], epochs=2, only="xor,deep,eqprop,deep-prune-0.01", workers=1)
    assert set(summary) == {"xor-deep", "xor-eqprop", "xor-deep-prune-0.01"} and len(results["xor-deep"]) == 2
    r = summary["xor-deep-prune-0.01"]
    assert r["epochs"] == 2 and 0 <= r["test_error"] <= 1 and "sparsity" in r and "eq_stable" in r
    assert "eq_stable" in summary["xor-eqprop"] and json.loads((out / "summary.json").read_text())
    paths = exp.plot(summary, results, out)
    assert {p.name for p in paths} == {"deep_curves.png", "deep_pruning.png", "deep_stability.png"}
    assert any("| xor | deep |" in line for line in exp.table(summary))
    capsys.readouterr()
    exp.run(out, [0, 1], epochs=2, only="xor,deep", workers=1)
    assert "xor-deep: already done" in "".join(capsys.readouterr())
    with pytest.raises(ValueError, match="--only"):
        exp.groups("xor,nand")
