import numpy as np
import pytest
import torch

from eqprop.energy import cost
from eqprop.learning import eqprop_update, rate_tensors
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world


def setup(seed=0):
    t = small_world((4, 6, 6, 3), 0.2, seed=seed)
    net = Network.init(t, seed=seed, dtype=torch.float64)
    net.W.mul_(0.5)  # mostly unsaturated neurons, so the gradient is informative
    net.b[4:] = 0.4
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 4, dtype=torch.float64, generator=g)
    y = torch.rand(3, 3, dtype=torch.float64, generator=g)
    return net, x, y


def true_gradient(net, x, y, s_free):
    """dL/dtheta for L = mean C(s*(theta)): autograd through 400 Euler steps started at the fixed point,
    which converges to the implicit-function gradient. Symmetric weights are tied: G + G^T."""
    W = net.W.clone().requires_grad_(True)
    b = net.b.clone().requires_grad_(True)
    n2 = Network(net.topology, W, b)
    s = EulerSolver(free_steps=400).relax(n2, x, s_free.detach())
    loss = cost(n2, s, y).mean()
    gW, gb = torch.autograd.grad(loss, (W, b))
    return (gW + gW.T) * torch.as_tensor(net.topology.mask), gb


def test_eqprop_update_matches_gradient_as_beta_shrinks():
    net, x, y = setup()
    sol = EulerSolver(free_steps=4000, nudged_steps=4000, nudge_form="gradient", tol=1e-14)
    free = sol.relax(net, x)
    gW, gb = true_gradient(net, x, y, free)
    assert gW.abs().max() > 1e-3, "a non-trivial gradient"
    errs = []
    for beta in (0.1, 0.01, 0.001):
        nudged = sol.relax(net, x, free, beta, y)
        dW, db = eqprop_update(free, nudged, beta, net.topology)
        errs.append(float((dW + gW).norm() / gW.norm()))
        assert float((db + gb)[4:].norm() / gb.norm()) < 3 * errs[-1] + 1e-6
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 5e-3, errs


def test_update_is_masked_symmetric_and_has_zero_input_bias():
    net, x, y = setup(1)
    sol = EulerSolver(free_steps=200, nudged_steps=20)
    free = sol.relax(net, x)
    nudged = sol.relax(net, x, free, -1.0, y)
    dW, db = eqprop_update(free, nudged, -1.0, net.topology)
    assert torch.equal(dW, dW.T)
    assert torch.all(dW[~torch.as_tensor(net.topology.mask)] == 0)
    assert torch.all(db[:4] == 0) and db[4:].abs().sum() > 0
    with pytest.raises(ValueError):
        eqprop_update(free, nudged, 0.0, net.topology)


def test_per_layer_rates():
    t = small_world((3, 4, 4, 2), 0.5, seed=0)
    lr_W, lr_b = rate_tensors(t, [0.1, 0.2, 0.3], dtype=torch.float64)
    lay = t.layer_of
    for i, j in zip(*np.nonzero(t.mask)):
        assert lr_W[i, j] == [0.1, 0.2, 0.3][max(lay[i], lay[j]) - 1]
    assert torch.all(lr_b[:3] == 0) and torch.all(lr_b[-2:] == 0.3)
    with pytest.raises(ValueError, match="need 3 values"):
        rate_tensors(t, [0.1, 0.2])
    g, _ = rate_tensors(mlff((3, 4, 2)), 0.05)
    assert float(g.max()) == pytest.approx(0.05) and float(g[0, 1]) == 0
