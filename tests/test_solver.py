import numpy as np
import pytest
import torch

from eqprop.energy import drive, total_energy
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import complete_directed, mlff, small_world


def net64(sizes, p=None, seed=0, scale=1.0):
    t = mlff(sizes) if p is None else small_world(sizes, p, seed=seed)
    n = Network.init(t, seed=seed, dtype=torch.float64)
    n.W.mul_(scale)
    n.b[t.n_in:] = torch.linspace(-0.2, 0.4, t.n - t.n_in, dtype=torch.float64)
    return n


def test_free_relaxation_lowers_energy_monotonically():
    net = net64((6, 8, 8, 3), p=0.2, seed=1)
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    solver = EulerSolver(eps=0.05)
    s = solver.relax(net, x, steps=0)
    prev = total_energy(net, s)
    for _ in range(200):
        s = solver.relax(net, x, s, steps=1)
        e = total_energy(net, s)
        assert torch.all(e <= prev + 1e-12)
        prev = e
    assert torch.all(total_energy(net, solver.relax(net, x, steps=0)) - prev > 1e-3), "it did move"


def test_nudged_gradient_form_lowers_total_energy():
    net = net64((6, 8, 3), seed=2)
    x = torch.rand(3, 6, dtype=torch.float64)
    y = torch.eye(3, dtype=torch.float64)
    sol = EulerSolver(eps=0.05, nudge_form="gradient")
    s = sol.relax(net, x, steps=400)
    prev = total_energy(net, s, 0.5, y)
    for _ in range(100):
        s = sol.relax(net, x, s, beta=0.5, target=y, steps=1)
        f = total_energy(net, s, 0.5, y)
        assert torch.all(f <= prev + 1e-12)
        prev = f


@pytest.mark.parametrize("p", [None, 0.3])
def test_free_fixed_point_satisfies_clipped_equation(p):
    net = net64((10, 12, 12, 12, 4), p=p, seed=3)
    x = torch.rand(5, 10, dtype=torch.float64)
    sol = EulerSolver(free_steps=5000, tol=1e-13)
    s = sol.relax(net, x)
    assert sol.last_steps < 5000, "converged before the step limit"
    residual = (s - drive(net, s).clamp(0, 1))[:, net.topology.n_in:]
    assert residual.abs().max() < 1e-6
    assert torch.equal(s[:, :10], x), "inputs stay clamped"


def test_nudged_fixed_points_of_the_two_forms():
    net = net64((5, 7, 3), seed=4)
    x = torch.rand(2, 5, dtype=torch.float64)
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    grad = EulerSolver(free_steps=3000, nudged_steps=3000, nudge_form="gradient")
    s0 = grad.relax(net, x)
    beta = 0.7
    sb = grad.relax(net, x, s0, beta, y)
    g = drive(net, sb)[:, -3:]
    expected = ((g + 2 * beta * y) / (1 + 2 * beta)).clamp(0, 1)
    assert (sb[:, -3:] - expected).abs().max() < 1e-9
    seq = EulerSolver(eps=0.5, nudged_steps=8, nudge_form="sequential")
    clamped = seq.relax(net, x, s0, 1.0, y)
    assert torch.allclose(clamped[:, -3:], y), "eps .5, beta 1: the sequential form clamps outputs to targets"


def test_block_and_dense_couplings_agree():
    net = net64((9, 10, 10, 10, 3), p=0.3, seed=5)
    x = torch.rand(4, 9, dtype=torch.float64)
    a = EulerSolver(free_steps=50, coupling="blocks").relax(net, x)
    b = EulerSolver(free_steps=50, coupling="dense").relax(net, x)
    assert (a - b).abs().max() < 1e-12


def test_directed_network_relaxes_with_dense_couplings():
    t = complete_directed(2, 4, 1)
    W = torch.rand(t.n, t.n, dtype=torch.float64) * 0.3 * torch.as_tensor(t.mask)
    net = Network(t, W, torch.zeros(t.n, dtype=torch.float64))
    s = EulerSolver(free_steps=300).relax(net, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert (s - drive(net, s).clamp(0, 1))[:, 2:].abs().max() < 1e-6


def test_bad_relax_inputs_raise():
    net = net64((3, 4, 2))
    sol = EulerSolver()
    with pytest.raises(ValueError, match="x must have shape"):
        sol.relax(net, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        sol.relax(net, torch.full((1, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="needs a target"):
        sol.relax(net, torch.zeros(1, 3, dtype=torch.float64), beta=1.0)
    with pytest.raises(ValueError, match="nudge_form"):
        EulerSolver(nudge_form="other")


def test_block_and_dense_agree_for_directed_and_intralayer_nets():
    t = small_world((4, 6, 6, 6, 2), 0.3, seed=2, intralayer=True)
    net = Network.init(t, seed=1, dtype=torch.float64)
    x = torch.rand(3, 4, dtype=torch.float64)
    a = EulerSolver(free_steps=40, coupling="blocks").relax(net, x)
    b = EulerSolver(free_steps=40, coupling="dense").relax(net, x)
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
    a = EulerSolver(free_steps=200, coupling="blocks").relax(net, x)
    b = EulerSolver(free_steps=200, coupling="dense").relax(net, x)
    assert (a - b).abs().max() < 1e-12 and a[0, 6] > 0.5


def test_single_step_equations_of_both_nudge_forms():
    net = net64((3, 4, 2), seed=6)
    x = torch.rand(2, 3, dtype=torch.float64)
    s = EulerSolver(free_steps=5).relax(net, x)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    g = drive(net, s)
    free_style = (s + 0.5 * (g - s)).clamp(0, 1)
    for beta in (1.0, -1.0, 0.3):
        seq = EulerSolver(nudge_form="sequential").relax(net, x, s, beta, y, steps=1)
        yc = free_style[:, -2:]
        assert torch.allclose(seq[:, -2:], (yc + 2 * 0.5 * beta * (y - yc)).clamp(0, 1))
        assert torch.allclose(seq[:, 3:-2], free_style[:, 3:-2]) and torch.equal(seq[:, :3], x)
        grad = EulerSolver(nudge_form="gradient").relax(net, x, s, beta, y, steps=1)
        expected = (s[:, -2:] + 0.5 * (g[:, -2:] - s[:, -2:]) + 2 * 0.5 * beta * (y - s[:, -2:])).clamp(0, 1)
        assert torch.allclose(grad[:, -2:], expected)
    back = EulerSolver(nudge_form="sequential").relax(net, x, s, -1.0, y, steps=1)
    assert torch.allclose(back[:, -2:], (2 * free_style[:, -2:] - y).clamp(0, 1)), "beta=-1 pushes to 2s'-y_d"
