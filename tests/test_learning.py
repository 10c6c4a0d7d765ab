"""EqProp's learning rule: gradient agreement, mask/symmetry, per-trial stacks with padded rows, rates."""
import numpy as np
import pytest
import torch

from eqprop.config import EulerConfig
from eqprop.energy import cost
from eqprop.learning import apply_update, eqprop_update, rate_tensors
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world


def euler(**kw):
    return EulerSolver(EulerConfig(**kw))


def update(net, free, nudged, beta, valid=None):
    return eqprop_update(free, nudged, beta, net.mask_tensor(), net.topology.directed, net.topology.n_in, valid)


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
    s = euler(free_steps=400).relax(n2, x, s_free.detach())
    loss = cost(n2, s, y).mean()
    gW, gb = torch.autograd.grad(loss, (W, b))
    return (gW + gW.T) * torch.as_tensor(net.topology.mask), gb


def test_eqprop_update_matches_gradient_as_beta_shrinks():
    net, x, y = setup()
    sol = euler(free_steps=4000, nudged_steps=4000, nudge_form="gradient", tol=1e-14)
    free = sol.relax(net, x)
    gW, gb = true_gradient(net, x, y, free)
    assert gW.abs().max() > 1e-3, "a non-trivial gradient"
    errs = []
    for beta in (0.1, 0.01, 0.001):
        nudged = sol.relax(net, x, free, beta, y)
        dW, db = update(net, free, nudged, beta)
        errs.append(float((dW + gW).norm() / gW.norm()))
        assert float((db + gb)[4:].norm() / gb.norm()) < 3 * errs[-1] + 1e-6
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 5e-3, errs


def test_update_is_masked_symmetric_and_has_zero_input_bias():
    net, x, y = setup(1)
    sol = euler(free_steps=200, nudged_steps=20)
    free = sol.relax(net, x)
    nudged = sol.relax(net, x, free, -1.0, y)
    dW, db = update(net, free, nudged, -1.0)
    assert torch.equal(dW, dW.T)
    assert torch.all(dW[~torch.as_tensor(net.topology.mask)] == 0)
    assert torch.all(db[:4] == 0) and db[4:].abs().sum() > 0
    with pytest.raises(ValueError, match="beta != 0"):
        update(net, free, nudged, 0.0)
    # by hand: the batch mean of (1/beta) [rho(s^b) rho(s^b)^T - rho(s^0) rho(s^0)^T] on the mask
    r0, rb = free.clamp(0, 1), nudged.clamp(0, 1)
    want = (rb.T @ rb - r0.T @ r0) / (-1.0 * 3) * torch.as_tensor(net.topology.mask)
    assert torch.allclose(dW, want, atol=1e-14)
    assert torch.allclose(db[4:], ((rb - r0).sum(0) / -3.0)[4:], atol=1e-14)
    # rho is taken inside: states outside [0, 1] count as their clipped activity
    wide_f, wide_n = free.clone(), nudged.clone()
    wide_f[:, 4:] += torch.where(free[:, 4:] >= 1, 0.5, 0.0)
    wide_n[:, 4:] -= torch.where(nudged[:, 4:] <= 0, 0.5, 0.0)
    assert not torch.equal(wide_f, free) or not torch.equal(wide_n, nudged), "some state saturated"
    a, b = update(net, wide_f, wide_n, -1.0)
    assert torch.equal(a, dW) and torch.equal(b, db)


def test_per_layer_rates():
    t = small_world((3, 4, 4, 2), 0.5, seed=0)
    net = Network.init(t, seed=0)
    lr_W, lr_b = rate_tensors(net, [0.1, 0.2, 0.3], dtype=torch.float64)
    assert lr_W.dtype == torch.float64 and lr_W.shape == net.W.shape and lr_b.shape == net.b.shape
    lay = t.layer_of
    for i, j in zip(*np.nonzero(t.mask)):
        assert lr_W[i, j] == [0.1, 0.2, 0.3][max(lay[i], lay[j]) - 1]
    assert torch.all(lr_b[:3] == 0) and torch.all(lr_b[-2:] == 0.3)
    assert any(lay[i] != lay[j] + 1 and lay[j] != lay[i] + 1 for i, j in zip(*np.nonzero(t.mask))), "has skips"
    with pytest.raises(ValueError, match="need 3 values"):
        rate_tensors(net, [0.1, 0.2])
    g, _ = rate_tensors(Network.init(mlff((3, 4, 2))), 0.05)
    assert g.dtype == torch.float32 and float(g.max()) == pytest.approx(0.05) and float(g[0, 1]) == 0


def trial_nets(T=3, sizes=(6, 5, 4, 4, 3)):
    return [Network.init(mlff(sizes) if t == 0 else small_world(sizes, p=0.15 * t, seed=t), seed=10 + t)
            for t in range(T)]


def test_stacked_update_and_rates_equal_the_single_network_ones():
    ns = trial_nets()
    st = Network.stack(ns)
    g = torch.Generator().manual_seed(2)
    free, nudged = torch.rand(3, 7, 22, generator=g), torch.rand(3, 7, 22, generator=g)
    free[0, 1, 8] = nudged[2, 3, 9] = 1.5  # rho is applied inside
    betas = torch.tensor([1.0, -1.0, 0.5])
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False  # trial 1 has a short batch of 5, padded to 7
    dW, db = eqprop_update(free, nudged, betas, st.mask_tensor(), False, 6, valid)
    assert dW.shape == (3, 22, 22) and db.shape == (3, 22)
    assert torch.all(db[:, :6] == 0) and torch.all(db[:, 6:] != 0), "zero input bias, even for random inputs"
    assert torch.equal(dW, dW.transpose(-1, -2)) and torch.all(dW[~st.mask_tensor()] == 0)
    specs = [0.1, [0.3, 0.2, 0.1, 0.05], 0.02]
    lr_W, lr_b = rate_tensors(st, specs)
    assert lr_W.shape == (3, 22, 22) and lr_b.shape == (3, 22)
    for t, (n, lr) in enumerate(zip(ns, specs)):
        rows = valid[t]
        w1, b1 = update(n, free[t][rows], nudged[t][rows], float(betas[t]))
        assert torch.allclose(w1, dW[t], atol=1e-6) and torch.allclose(b1, db[t], atol=1e-6)
        lw, lb = rate_tensors(n, lr)
        assert torch.equal(lw, lr_W[t]) and torch.equal(lb, lr_b[t])
    w_all, _ = update(ns[1], free[1], nudged[1], -1.0)
    assert not torch.allclose(w_all, dW[1], atol=1e-4), "the padded rows would have changed trial 1's dW"
    with pytest.raises(ValueError, match="one learning-rate spec per trial"):
        rate_tensors(st, [0.1, 0.2])
    # apply_update on the stack changes every trial as on its own
    before = [n.clone() for n in st.trials()]
    apply_update(st, dW, db, lr_W, lr_b)
    for t, n in enumerate(before):
        apply_update(n, dW[t], db[t], lr_W[t], lr_b[t])
        assert torch.equal(n.W, st.W[t]) and torch.equal(n.b, st.b[t])
    Network(st.topology, st.W, st.b)  # still symmetric and on the masks
