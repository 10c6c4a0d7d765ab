"""The one step equation (eqprop.dynamics) against hand computation: both nudge forms, their one
step and their fixed points, the circuit gain/current, and the fixed-point residual."""
import pytest
import torch

from eqprop.config import EulerConfig
from eqprop.dynamics import (
    NUDGE_GAIN,
    beta_from_gain,
    clip_,
    fixed_point_residual,
    leaky_step,
    nudge_,
    nudge_current,
    nudge_force,
    nudge_gain,
    rho,
)
from eqprop.energy import drive
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff

D = dict(dtype=torch.float64)


def t64(*v):
    return torch.tensor(v, **D)


def test_activation_clip_and_force_by_hand():
    u = t64(-0.5, 0.0, 0.25, 1.0, 1.5)
    assert torch.equal(rho(u), t64(0.0, 0.0, 0.25, 1.0, 1.0)) and torch.equal(u, t64(-0.5, 0.0, 0.25, 1.0, 1.5))
    s = u.clone()
    assert clip_(s) is s and torch.equal(s, rho(u)), "clip_ works in place"
    assert NUDGE_GAIN == 2.0
    # F = 2 beta (y_d - y): the cost ||y - y_d||^2 has no 1/2
    assert torch.allclose(nudge_force(t64(0.2, 0.9), t64(1.0, 0.0), 0.25), t64(0.4, -0.45))
    assert torch.allclose(leaky_step(t64(0.2), t64(0.8), 0.5), t64(0.5))  # s + eps (h - s)


# one output neuron: s = 0.2, drive h = 0.8, target 1, eps 0.5
#   leaky: c = 0.2 + 0.5 (0.8 - 0.2) = 0.5
#   gradient:   y' = 0.5 + 0.5 * 2 beta (1 - 0.2)  (force at the old state)
#   sequential: y' = c + 0.5 * 2 beta (1 - c)      (force at the clipped leaky value)
@pytest.mark.parametrize("beta,grad,seq", [
    (0.25, 0.5 + 0.2, 0.5 + 0.125),
    (-0.25, 0.5 - 0.2, 0.5 - 0.125),
    (1.0, 1.0, 1.0),  # gradient 1.3 clipped by the step; sequential lands on the target
    (-1.0, 0.0, 0.0),  # 0.5 - 0.8 clipped; sequential: 2c - y_d
])
def test_one_nudged_step_of_each_form_by_hand(beta, grad, seq):
    s, h, y = t64(0.2), t64(0.8), t64(1.0)
    for form, want in (("gradient", grad), ("sequential", seq)):
        new = leaky_step(s, h, 0.5)
        nudge_(new, s, y, 0.5 * beta, form)
        assert float(clip_(new)) == pytest.approx(want, abs=1e-15), form
        coef = torch.full((1,), 0.5 * beta, **D)  # per-trial coefficients as a tensor: the same arithmetic
        new_t = nudge_(leaky_step(s, h, 0.5), s, y, coef, form)
        assert float(clip_(new_t)) == pytest.approx(want, abs=1e-15), form
    with pytest.raises(ValueError, match="nudge_form"):
        nudge_(leaky_step(s, h, 0.5), s, y, 0.1, "other")


def test_sequential_nudge_starts_from_the_clipped_value():
    s, y = t64(0.9), t64(0.0)
    new = leaky_step(s, t64(2.9), 0.5)  # 1.9: clipped to 1 before the force acts
    nudge_(new, s, y, 0.5 * 0.25, "sequential")
    assert float(new) == pytest.approx(1.0 + 0.25 * (0.0 - 1.0))
    new = leaky_step(s, t64(2.9), 0.5)
    nudge_(new, s, y, 0.5 * 0.25, "gradient")  # the force at the old state, nothing clipped yet
    assert float(new) == pytest.approx(1.9 + 0.25 * (0.0 - 0.9))


def net64(sizes=(3, 4, 2), seed=6):
    n = Network.init(mlff(sizes), seed=seed, **D)
    n.b[sizes[0]:] = torch.linspace(-0.2, 0.4, sum(sizes) - sizes[0], **D)
    return n


def test_euler_solver_takes_one_step_of_the_dynamics():
    net = net64()
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(0), **D)
    s = EulerSolver(EulerConfig(free_steps=5)).relax(net, x)
    y = t64([1.0, 0.0], [0.0, 1.0])
    g = drive(net, s)
    leaky = (s + 0.5 * (g - s)).clamp(0, 1)
    for beta in (1.0, -1.0, 0.3):
        seq = EulerSolver(EulerConfig(nudged_steps=1, nudge_form="sequential")).relax(net, x, s, beta, y)
        yc = leaky[:, -2:]
        assert torch.allclose(seq[:, -2:], (yc + 2 * 0.5 * beta * (y - yc)).clamp(0, 1))
        assert torch.allclose(seq[:, 3:-2], leaky[:, 3:-2]) and torch.equal(seq[:, :3], x)
        grad = EulerSolver(EulerConfig(nudged_steps=1, nudge_form="gradient")).relax(net, x, s, beta, y)
        expected = (s[:, -2:] + 0.5 * (g[:, -2:] - s[:, -2:]) + 2 * 0.5 * beta * (y - s[:, -2:])).clamp(0, 1)
        assert torch.allclose(grad[:, -2:], expected)
        assert torch.allclose(grad[:, 3:-2], leaky[:, 3:-2])
    back = EulerSolver(EulerConfig(nudged_steps=1)).relax(net, x, s, -1.0, y)
    assert torch.allclose(back[:, -2:], (2 * leaky[:, -2:] - y).clamp(0, 1)), "beta=-1 pushes to 2c - y_d"
    free = EulerSolver(EulerConfig(free_steps=1)).relax(net, x, s)
    assert torch.allclose(free, torch.cat([x, leaky[:, 3:]], 1)), "free step: clip(s + eps (h - s))"


def test_fixed_points_of_the_two_forms():
    net = net64((5, 7, 3), seed=4)
    x = torch.rand(2, 5, generator=torch.Generator().manual_seed(1), **D)
    y = t64([1.0, 0, 0], [0, 1.0, 0])
    beta = 0.7
    grad = EulerSolver(EulerConfig(free_steps=3000, nudged_steps=3000, nudge_form="gradient"))
    s0 = grad.relax(net, x)
    sb = grad.relax(net, x, s0, beta, y)
    h = drive(net, sb)
    # the gradient form's fixed point is the circuit's: s = clip(h + 2 beta (y_d - s)) on the outputs ...
    assert (sb[:, -3:] - (h[:, -3:] + 2 * beta * (y - sb[:, -3:])).clamp(0, 1)).abs().max() < 1e-9
    # ... and s = clip(h) on the hidden neurons; interior outputs solve s = (h + 2 beta y_d) / (1 + 2 beta)
    assert (sb[:, 5:-3] - h[:, 5:-3].clamp(0, 1)).abs().max() < 1e-9
    assert (sb[:, -3:] - ((h[:, -3:] + 2 * beta * y) / (1 + 2 * beta)).clamp(0, 1)).abs().max() < 1e-9
    assert not torch.allclose(sb, s0), "the nudge moved the state"
    assert float(fixed_point_residual(h[:, 5:], sb[:, 5:], beta, y, n_out=3).max()) < 1e-9
    assert float(fixed_point_residual(h[:, 5:], sb[:, 5:]).max()) > 1e-3, "without the nudge it is no fixed point"
    assert float(fixed_point_residual(drive(net, s0)[:, 5:], s0[:, 5:]).max()) < 1e-9
    seq = EulerSolver(EulerConfig(eps=0.5, nudged_steps=8, nudge_form="sequential"))
    clamped = seq.relax(net, x, s0, 1.0, y)
    assert torch.allclose(clamped[:, -3:], y), "eps .5, beta 1: the sequential form clamps outputs to targets"


def test_circuit_gain_and_current_are_the_digital_force():
    beta, g0, y_d = 0.3, 1e-4, t64(1.0, 0.25)
    assert nudge_gain(beta, g0) == pytest.approx(-2 * beta * g0)
    assert torch.allclose(nudge_current(beta, y_d, g0), 2 * beta * g0 * y_d)
    assert beta_from_gain(nudge_gain(beta, g0), g0) == pytest.approx(beta)
    assert beta_from_gain(nudge_gain(-1.5)) == pytest.approx(-1.5)
    y = t64(0.4, 0.9)  # gain * y + current, in units of g0, is the force F = 2 beta (y_d - y)
    assert torch.allclose((nudge_gain(beta, g0) * y + nudge_current(beta, y_d, g0)) / g0, nudge_force(y, y_d, beta))
