"""The reference EulerSolver: energy descent, fixed points, couplings, the one relax validator, configs."""
import dataclasses

import numpy as np
import pytest
import torch

from eqprop.config import EulerConfig
from eqprop.energy import drive, total_energy
from eqprop.network import Network
from eqprop.solver import EulerSolver, check_relax
from eqprop.topology import complete_directed, mlff, small_world


def euler(**kw):
    return EulerSolver(EulerConfig(**kw))


def net64(sizes, p=None, seed=0, scale=1.0):
    t = mlff(sizes) if p is None else small_world(sizes, p, seed=seed)
    n = Network.init(t, seed=seed, dtype=torch.float64)
    n.W.mul_(scale)
    n.b[t.n_in:] = torch.linspace(-0.2, 0.4, t.n - t.n_in, dtype=torch.float64)
    return n


def test_free_relaxation_lowers_energy_monotonically():
    net = net64((6, 8, 8, 3), p=0.2, seed=1)
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    start, step = euler(eps=0.05, free_steps=0), euler(eps=0.05, free_steps=1)
    s = start.relax(net, x)
    prev = total_energy(net, s)
    for _ in range(200):
        s = step.relax(net, x, s)
        e = total_energy(net, s)
        assert torch.all(e <= prev + 1e-12)
        prev = e
    assert torch.all(total_energy(net, start.relax(net, x)) - prev > 1e-3), "it did move"


def test_nudged_gradient_form_lowers_total_energy():
    net = net64((6, 8, 3), seed=2)
    x = torch.rand(3, 6, dtype=torch.float64)
    y = torch.eye(3, dtype=torch.float64)
    s = euler(eps=0.05, free_steps=400).relax(net, x)
    sol = euler(eps=0.05, nudge_form="gradient", nudged_steps=1)
    prev = total_energy(net, s, 0.5, y)
    for _ in range(100):
        s = sol.relax(net, x, s, beta=0.5, target=y)
        f = total_energy(net, s, 0.5, y)
        assert torch.all(f <= prev + 1e-12)
        prev = f


@pytest.mark.parametrize("p", [None, 0.3])
def test_free_fixed_point_satisfies_clipped_equation(p):
    net = net64((10, 12, 12, 12, 4), p=p, seed=3)
    x = torch.rand(5, 10, dtype=torch.float64)
    sol = euler(free_steps=5000, tol=1e-13)
    s = sol.relax(net, x)
    assert sol.last_steps < 5000, "converged before the step limit"
    residual = (s - drive(net, s).clamp(0, 1))[:, net.topology.n_in:]
    assert residual.abs().max() < 1e-6
    assert torch.equal(s[:, :10], x), "inputs stay clamped"


def test_block_and_dense_couplings_agree():
    net = net64((9, 10, 10, 10, 3), p=0.3, seed=5)
    x = torch.rand(4, 9, dtype=torch.float64)
    a = euler(free_steps=50, coupling="blocks").relax(net, x)
    b = euler(free_steps=50, coupling="dense").relax(net, x)
    assert (a - b).abs().max() < 1e-12


def test_directed_network_relaxes_with_dense_couplings():
    t = complete_directed(2, 4, 1)
    W = torch.rand(t.n, t.n, dtype=torch.float64) * 0.3 * torch.as_tensor(t.mask)
    net = Network(t, W, torch.zeros(t.n, dtype=torch.float64))
    s = euler(free_steps=300).relax(net, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert (s - drive(net, s).clamp(0, 1))[:, 2:].abs().max() < 1e-6


def test_bad_relax_inputs_raise():
    net = net64((3, 4, 2))
    sol = euler()
    with pytest.raises(ValueError, match="x must have shape"):
        sol.relax(net, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        sol.relax(net, torch.full((1, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="needs a target"):
        sol.relax(net, torch.zeros(1, 3, dtype=torch.float64), beta=1.0)
    with pytest.raises(ValueError, match="u0 must have shape"):
        sol.relax(net, torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="target must have shape"):
        sol.relax(net, torch.zeros(2, 3, dtype=torch.float64), beta=1.0, target=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x must have shape"):  # a plain network takes no per-trial inputs
        sol.relax(net, torch.zeros(1, 2, 3, dtype=torch.float64))


def test_block_and_dense_agree_for_directed_and_intralayer_nets():
    t = small_world((4, 6, 6, 6, 2), 0.3, seed=2, intralayer=True)
    net = Network.init(t, seed=1, dtype=torch.float64)
    x = torch.rand(3, 4, dtype=torch.float64)
    a = euler(free_steps=40, coupling="blocks").relax(net, x)
    b = euler(free_steps=40, coupling="dense").relax(net, x)
    assert (a - b).abs().max() < 1e-12
    d = complete_directed(2, 3, 2)
    mask = np.zeros_like(d.mask)
    mask[6, 2] = mask[2, 5] = mask[0, 6] = True  # one-way weights, one of them a skip
    from eqprop.topology import Topology
    dt = Topology(d.sizes, mask, directed=True)
    W = torch.zeros(dt.n, dt.n, dtype=torch.float64)
    W[6, 2], W[2, 5], W[0, 6] = 0.7, 0.9, 0.5
    net = Network(dt, W, torch.full((dt.n,), 0.1, dtype=torch.float64) * torch.arange(dt.n).ge(2))
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    a = euler(free_steps=200, coupling="blocks").relax(net, x)
    b = euler(free_steps=200, coupling="dense").relax(net, x)
    assert (a - b).abs().max() < 1e-12 and a[0, 6] > 0.5




# -- stacks of trials --------------------------------------------------------------------
def trial_nets(T=3, sizes=(6, 5, 4, 4, 3), dtype=torch.float32):
    """Different seeds, p values and hence masks; random biases so every neuron moves."""
    out = []
    for t in range(T):
        topo = mlff(sizes) if t == 0 else small_world(sizes, p=0.15 * t, seed=t)
        n = Network.init(topo, seed=10 + t, dtype=dtype)
        n.b[topo.n_in:] = 0.3 * torch.randn(topo.n - topo.n_in, generator=torch.Generator().manual_seed(t),
                                            dtype=dtype)
        out.append(n)
    return out


@pytest.mark.parametrize("form", ["sequential", "gradient"])
def test_a_stack_relaxes_exactly_as_its_trials_one_by_one(form):
    ns = trial_nets()
    st = Network.stack(ns)
    g = torch.Generator().manual_seed(0)
    x, yd = torch.rand(3, 7, 6, generator=g), torch.rand(3, 7, 3, generator=g)
    betas = torch.tensor([1.0, -1.0, 0.5])
    sol = euler(free_steps=50, nudged_steps=8, nudge_form=form)
    free = sol.relax(st, x)
    nudged = sol.relax(st, x, free, betas, yd)
    assert free.shape == nudged.shape == (3, 7, 22)
    for t, n in enumerate(ns):
        f = sol.relax(n, x[t])
        assert torch.equal(f, free[t])
        assert torch.equal(sol.relax(n, x[t], f, float(betas[t]), yd[t]), nudged[t])
    shared = sol.relax(st, x[0], beta=0.5, target=yd[0])  # one batch and target for all trials, one beta
    for t, n in enumerate(ns):
        assert torch.equal(sol.relax(n, x[0], beta=0.5, target=yd[0]), shared[t])
    assert not torch.equal(shared[0], shared[1]), "the trials' networks differ"
    one = sol.relax(st.trial(1).as_stack(), x[1])  # a stack of one: (1, B, N)
    assert one.shape == (1, 7, 22) and torch.equal(one[0], free[1])


def test_reference_tol_stops_each_trial_on_its_own():
    ns = trial_nets()
    ns[2].W.mul_(3.0)  # the trials settle at different steps
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    sol = euler(free_steps=400, tol=1e-6, check_every=5)
    out = sol.relax(Network.stack(ns), x)
    steps = []
    for t, n in enumerate(ns):
        assert torch.equal(sol.relax(n, x), out[t])
        steps.append(sol.last_steps)
    assert len(set(steps)) == 3 and max(steps) < 400 and all(k % 5 == 0 for k in steps)
    sol.relax(Network.stack(ns), x)
    assert sol.last_steps_per_trial == steps and sol.last_steps == max(steps)


def test_check_relax_errors_for_stacks():
    st = Network.stack(trial_nets())
    x = torch.rand(4, 6)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 6\) or \(3, batch, 6\)"):
        check_relax(st, torch.rand(2, 4, 6))  # 2 input sets for 3 trials
    with pytest.raises(ValueError, match=r"u0 must have shape \(3, 4, 22\)"):
        check_relax(st, x, torch.zeros(4, 22))
    with pytest.raises(ValueError, match="one value or 3 values"):
        check_relax(st, x, beta=[1.0, -1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="zero for all trials"):
        check_relax(st, x, beta=[1.0, 0.0, 1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="target must have shape"):
        check_relax(st, x, beta=1.0, target=torch.rand(2, 4, 3))
    with pytest.raises(ValueError, match="beta must be finite"):
        check_relax(st, x, beta=[1.0, float("nan"), 1.0], target=torch.rand(4, 3))
    with pytest.raises(ValueError, match="target has non-finite"):
        check_relax(st, x, beta=1.0, target=torch.full((4, 3), float("inf")))
    bad = x.clone()
    bad[1, 2] = float("nan")
    check_relax(st, bad, check_values=False)  # validated data: no finiteness test (no host sync)
    x2, u0, betas, target, nudged = check_relax(st, x.double(), torch.zeros(3, 4, 22), [1.0, -1.0, 2.0],
                                                torch.rand(3, 4, 3))
    assert x2.dtype == torch.float32 and u0.shape == (3, 4, 22) and nudged
    assert betas.dtype == torch.float64 and betas.tolist() == [1.0, -1.0, 2.0]
    assert check_relax(st, x, beta=0.0)[2].tolist() == [0.0, 0.0, 0.0]


# -- configuration and engine choice --------------------------------------------------------
def test_euler_config_validation_names_the_field():
    for kw, field in [(dict(eps=0), "eps"), (dict(eps=1.5), "eps"), (dict(eps=float("nan")), "eps"),
                      (dict(free_steps=-1), "step counts"), (dict(free_steps=10.0), "free_steps"),
                      (dict(nudged_steps=True), "nudged_steps"), (dict(check_every=0), "check_every"),
                      (dict(tol=0.0), "tol"), (dict(tol="small"), "tol"), (dict(nudge_form="other"), "nudge_form"),
                      (dict(coupling="sparse"), "coupling"), (dict(engine="turbo"), "engine")]:
        with pytest.raises(ValueError, match=f"euler config: {field}"):
            EulerConfig(**kw)
    cfg = EulerConfig(free_steps=7, tol=1e-5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.eps = 0.1
    with pytest.raises(ValueError, match="eps"):
        dataclasses.replace(cfg, eps=2.0)  # a changed copy is validated too
    assert EulerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"my.toml: unknown keys \['steps'\]"):
        EulerConfig.from_dict({"steps": 3}, "my.toml")
    with pytest.raises(ValueError, match="my.toml: euler config: eps"):
        EulerConfig.from_dict({"eps": 3}, "my.toml")


def test_engine_choice_and_description():
    from eqprop.fast_relax import FastEulerSolver, make_euler_solver
    assert type(make_euler_solver(EulerConfig(), "cpu")) is EulerSolver  # auto on CPU: the reference
    assert type(make_euler_solver(EulerConfig(engine="fast"), "cpu")) is FastEulerSolver
    assert type(make_euler_solver(EulerConfig(), "cuda")) is FastEulerSolver  # no CUDA needed to choose
    assert type(make_euler_solver(EulerConfig(engine="reference"), "cuda")) is EulerSolver
    assert make_euler_solver(EulerConfig(engine="fast"), "cpu", check_values=False).check_values is False
    cfg = EulerConfig(free_steps=9, nudge_form="gradient")
    d = EulerSolver(cfg).describe()
    assert d["solver"] == "EulerSolver" and d["free_steps"] == 9 and d["nudge_form"] == "gradient"
    assert FastEulerSolver(cfg).describe()["solver"] == "FastEulerSolver"
    assert EulerSolver().config == EulerConfig()


def test_autograd_flows_through_the_reference():
    net = net64((3, 4, 2), seed=1, scale=0.5)
    net.b[3:] = 0.4  # unsaturated neurons: a non-zero gradient
    W = net.W.clone().requires_grad_(True)
    x = torch.rand(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = euler(free_steps=20).relax(Network(net.topology, W, net.b), x)
    (gW,) = torch.autograd.grad(s[:, 3:7].sum(), W)
    assert gW.abs().sum() > 0 and not W.grad
