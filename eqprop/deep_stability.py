"""Stability of directed networks' dynamics: Jacobians, the Gershgorin test, eigenvalues.

Inside the clip's box the dynamics are linear in the non-input state s, so their Jacobian is
constant there (nudge off):

* DEEP: ds_j/dt = sum_i W_ij s_i + b_j - s_j sum_k W_jk  ->  J = W_ff^T - diag(r), r_j = sum_k W_jk;
* the leaky (EqProp) form: ds/dt = W^T s + b - s  ->  J = W_ff^T - I.

Gershgorin: every eigenvalue of J lies in a disc centred at J_jj of radius sum_{l != j} |J_jl| (rows;
columns likewise). All discs in the open left half-plane (margin max_j (J_jj + radius_j) < 0, by rows
or by columns) is sufficient for the equilibrium to be asymptotically stable: a cheap test for any
size. For small nets the eigenvalues themselves say what the test only bounds.

That is the global linear picture. The clip makes saturated neurons locally frozen, so an
equilibrium's own stability is decided by J restricted to its unsaturated neurons
(``equilibrium_stability``, on the last free equilibria of each epoch).
"""
from __future__ import annotations

import torch

from .dynamics import NUDGE_GAIN


def deep_jacobian(W: torch.Tensor, n_in: int, beta: float = 0.0, n_out: int = 0) -> torch.Tensor:
    """J of DEEP's dynamics over the non-input neurons, (Nf, Nf) or (T, Nf, Nf); beta, n_out: add the
    gradient-form nudge's -NUDGE_GAIN beta on the outputs' diagonal."""
    Wd = W.detach().double()
    r = Wd[..., n_in:, :].sum(-1)
    J = Wd[..., n_in:, n_in:].transpose(-1, -2) - torch.diag_embed(r)
    return _nudged(J, beta, n_out)


def leaky_jacobian(W: torch.Tensor, n_in: int, beta: float = 0.0, n_out: int = 0) -> torch.Tensor:
    """J of the leaky form ds/dt = W^T s + b - s (the Euler engines') over the non-input neurons."""
    Wf = W.detach().double()[..., n_in:, n_in:]
    J = Wf.transpose(-1, -2) - torch.eye(Wf.shape[-1], dtype=Wf.dtype, device=Wf.device)
    return _nudged(J, beta, n_out)


def _nudged(J, beta, n_out):
    if beta and n_out:
        J = J.clone()
        J.diagonal(dim1=-2, dim2=-1)[..., -n_out:] -= NUDGE_GAIN * beta
    return J


def gershgorin_margins(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns): max over discs of centre + radius, per matrix; < 0 proves stability."""
    d = J.diagonal(dim1=-2, dim2=-1)
    off = J.abs().clone()
    off.diagonal(dim1=-2, dim2=-1).zero_()
    return (d + off.sum(-1)).amax(-1), (d + off.sum(-2)).amax(-1)


def max_real_eigenvalue(J: torch.Tensor) -> torch.Tensor:
    """max Re(lambda) per matrix (float64, on the host)."""
    return torch.linalg.eigvals(J.detach().double().cpu()).real.amax(-1)


def stability_summary(J: torch.Tensor, eig_max_neurons: int = 64) -> dict:
    """Per-matrix lists (one entry per trial) for metrics.json: gershgorin_margin (the better of the
    row and column tests), gershgorin_stable, and, for at most eig_max_neurons neurons,
    max_real_eig and eig_stable (None above that size)."""
    J3 = J if J.ndim == 3 else J.unsqueeze(0)
    rows, cols = gershgorin_margins(J3)
    margin = torch.minimum(rows, cols).cpu()
    out = {"gershgorin_margin": [float(v) for v in margin], "gershgorin_stable": [bool(v < 0) for v in margin]}
    if J3.shape[-1] <= eig_max_neurons:
        ev = max_real_eigenvalue(J3)
        out["max_real_eig"] = [float(v) for v in ev]
        out["eig_stable"] = [bool(v < 0) for v in ev]
    else:
        out["max_real_eig"] = out["eig_stable"] = [None] * J3.shape[0]
    return out


def equilibrium_stability(J: torch.Tensor, s: torch.Tensor, eig_max_neurons: int = 64, tol: float = 1e-6) -> dict:
    """Local stability of the clipped dynamics at reached equilibria s (T, B, Nf) (non-input states).

    A neuron clipped at 0 or 1 stays there under small perturbations (its drive points out of the
    box), so what decides is J restricted to the unsaturated neurons (tol < s < 1 - tol). Per trial:
    eq_gershgorin_stable / eq_stable: the test / all Re lambda < 0 for every example (an equilibrium
    with every neuron saturated counts as stable); eq_max_real_eig: the largest over examples (None if
    all saturated, or above eig_max_neurons); eq_unsaturated: mean number of unsaturated neurons."""
    J3 = (J if J.ndim == 3 else J.unsqueeze(0)).cpu()
    s3 = (s if s.ndim == 3 else s.unsqueeze(0)).detach().cpu()
    active = (s3 > tol) & (s3 < 1 - tol)
    out = {"eq_gershgorin_stable": [], "eq_stable": [], "eq_max_real_eig": [], "eq_unsaturated": []}
    for t in range(J3.shape[0]):
        g_ok, worst = True, None
        for idx in active[t]:
            if not idx.any():
                continue
            Jr = J3[t][idx][:, idx]
            rows, cols = gershgorin_margins(Jr)
            g_ok &= bool(min(float(rows), float(cols)) < 0)
            if Jr.shape[-1] <= eig_max_neurons:
                ev = float(max_real_eigenvalue(Jr))
                worst = ev if worst is None else max(worst, ev)
        out["eq_gershgorin_stable"].append(g_ok)
        out["eq_max_real_eig"].append(worst)
        out["eq_stable"].append(worst is None or worst < 0)
        out["eq_unsaturated"].append(float(active[t].sum(-1).double().mean()))
    return out


class LeakyStabilityReport:
    """An Euler solver with a per-epoch ``report()`` of its leaky dynamics' stability (the
    asymmetric-EqProp baseline's counterpart of DeepSolver.report); everything else is the inner
    solver's. rule: the learning rule's settings, recorded with the solver's in config.json."""

    def __init__(self, inner, eig_max_neurons: int = 64, rule: dict | None = None):
        self.inner, self.eig_max_neurons, self.rule = inner, eig_max_neurons, rule
        self.network, self.free = None, None

    def prepare(self, network) -> None:
        self.network = network
        self.inner.prepare(network)

    def relax(self, network, x, u0=None, beta=0.0, target=None):
        self.network = network
        u = self.inner.relax(network, x, u0, beta, target)
        if target is None:  # a free phase: its equilibria are what the report's local test looks at
            self.free = u[..., network.topologies[0].n_in:]
        return u

    def apply_update(self, network, dW, db, lr_W, lr_b) -> None:
        self.inner.apply_update(network, dW, db, lr_W, lr_b)

    def describe(self) -> dict:
        """The inner solver's settings (and, if given, the learning rule's: recorded, checked on resume)."""
        d = self.inner.describe()
        return d if self.rule is None else {**d, "rule": dict(self.rule)}

    def close(self) -> None:
        self.inner.close()

    def report(self) -> dict:
        rep = self.inner.report() if hasattr(self.inner, "report") else {}
        if self.network is None:
            return rep
        net = self.network.as_stack()
        J = leaky_jacobian(net.W, net.topologies[0].n_in)
        rep.update(stability_summary(J, self.eig_max_neurons))
        if self.free is not None:
            rep.update(equilibrium_stability(J, self.free, self.eig_max_neurons))
        return rep

    def state_dict(self):
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else None

    def load_state_dict(self, state, network) -> None:
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state, network)
