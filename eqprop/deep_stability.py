"""Stability of directed networks' dynamics: Jacobians, the Gershgorin test, eigenvalues.

Inside the clip's box the dynamics are linear in the non-input state s, so their Jacobian is
constant there (nudge off):

* DEEP: ds_j/dt = sum_i W_ij s_i + b_j - s_j sum_k W_jk  ->  J = W_ff^T - diag(r), r_j = sum_k W_jk;
* the leaky (EqProp) form: ds/dt = W^T s + b - s  ->  J = W_ff^T - I.

Gershgorin: every eigenvalue of J lies in a disc centred at J_jj of radius sum_{l != j} |J_jl| (rows;
columns likewise). All discs in the open left half-plane (margin max_j (J_jj + radius_j) < 0, by rows
or by columns) is sufficient for the equilibrium to be asymptotically stable: a cheap test for any
size. For small nets the eigenvalues themselves say what the test only bounds.
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


class LeakyStabilityReport:
    """An Euler solver with a per-epoch ``report()`` of its leaky dynamics' stability (the
    asymmetric-EqProp baseline's counterpart of DeepSolver.report); everything else is the inner
    solver's."""

    def __init__(self, inner, eig_max_neurons: int = 64):
        self.inner, self.eig_max_neurons = inner, eig_max_neurons
        self.network = None

    def prepare(self, network) -> None:
        self.network = network
        self.inner.prepare(network)

    def relax(self, network, x, u0=None, beta=0.0, target=None):
        self.network = network
        return self.inner.relax(network, x, u0, beta, target)

    def apply_update(self, network, dW, db, lr_W, lr_b) -> None:
        self.inner.apply_update(network, dW, db, lr_W, lr_b)

    def describe(self) -> dict:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()

    def report(self) -> dict:
        rep = self.inner.report() if hasattr(self.inner, "report") else {}
        if self.network is None:
            return rep
        net = self.network.as_stack()
        rep.update(stability_summary(leaky_jacobian(net.W, net.topologies[0].n_in), self.eig_max_neurons))
        return rep

    def state_dict(self):
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else None

    def load_state_dict(self, state, network) -> None:
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state, network)
