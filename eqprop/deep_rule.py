"""DEEP's learning rule (STDP-like, over the nudged trajectory), its stochastic pruning, and the
asymmetric-EqProp rule of the DEEP authors' baseline.

DeepRule (Farinha et al. 2020, paper-facts.md), over the nudged phase's trajectory s(0..T2):

    dW_ij = 1/(n T2) sum_{t=1..T2} sum_examples s_i(t) [b0 s_j(t) + b1 (s_j(t) - s_j(t-1))]  (.) mask
            - l1 sign(W_ij)

applied by the solver as W += lr dW: the paper's dt_W is the run's lr, and its L1 step reg_W is
lr * l1 (l1 = reg_W / dt_W). No 1/beta: beta only sets how hard the outputs are pulled, and it
must be positive (``RunConfig(random_beta_sign=False)``). Biases: the paper has none (a clamped
bias neuron); with ``bias=True`` b is learned as that neuron's weights would be (s_i = 1).

``prune_`` is the paper's sparsification: a connection with |W_ij| <= tol_W is removed when
p_ij = softmax over j's alive incoming connections of -|W_ij| / temp exceeds a uniform draw. Unlike
the authors' notebook (whose softmax also counts absent connections as weight 0, and whose zeroed
weights may grow back) the softmax runs over existing connections and removal is permanent.
"""
from __future__ import annotations

import numpy as np
import torch

from .learning import activities_and_denominator


class DeepRule:
    """The rule as the Trainer calls it: ``rule(free, nudged, beta, mask, directed, n_in, valid)``.

    Reads (once) the trajectory the solver recorded in the nudged relaxation that produced
    ``nudged``; ``free`` is not needed (s(0) of the trajectory is the free state).
    """

    def __init__(self, solver, b0: float = 0.0, b1: float = 1.0, l1: float = 0.0, bias: bool = False):
        for name, v in (("b0", b0), ("b1", b1), ("l1", l1)):
            if not np.isfinite(v):
                raise ValueError(f"DeepRule: {name} must be finite, got {v}")
        if l1 < 0:
            raise ValueError(f"DeepRule: l1 must be >= 0, got {l1}")
        self.solver, self.b0, self.b1, self.l1, self.bias = solver, float(b0), float(b1), float(l1), bool(bias)
        solver.rule = self.describe()  # recorded with the solver's settings (config.json, resume checks)

    def describe(self) -> dict:
        return {"rule": "DeepRule", "b0": self.b0, "b1": self.b1, "l1": self.l1, "bias": self.bias}

    def __call__(self, free, nudged, beta, mask, directed: bool, n_in: int, valid=None):
        traj = self.solver.take_trajectory()
        if traj.shape[1:] != nudged.shape:
            raise ValueError(f"DeepRule: the solver's trajectory has states {tuple(traj.shape[1:])}, the nudged "
                             f"state is {tuple(nudged.shape)}")
        b = beta if torch.is_tensor(beta) else torch.tensor(float(beta))
        if bool((b <= 0).any()):
            raise ValueError("DEEP's rule needs beta > 0 (it has no 1/beta): set random_beta_sign=False")
        return deep_update(traj, mask, n_in, self.b0, self.b1, valid, self.l1, self.solver.weights, self.bias)


def deep_update(traj: torch.Tensor, mask, n_in: int, b0: float = 0.0, b1: float = 1.0, valid=None,
                l1: float = 0.0, W=None, bias: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule's formula. traj: (S + 1, B, N) or (S + 1, T, B, N) states (inputs included);
    mask (N, N) / (T, N, N); valid (B,) / (T, B) rows that count; W for the L1 term."""
    S, B = traj.shape[0] - 1, traj.shape[-2]
    if S < 1:
        raise ValueError("DEEP's rule needs a nudged trajectory of at least one step")
    post = traj[1:]
    pre = b0 * post + b1 * (post - traj[:-1])  # the postsynaptic factor: level and change of s_j
    if valid is None:
        n = torch.full(traj.shape[1:-2], float(B), dtype=traj.dtype, device=traj.device)
    else:
        v = valid.to(traj.dtype).unsqueeze(-1)
        post, n = post * v, v.sum((-2, -1))
    lead = traj.shape[1:-2]
    A1 = post.movedim(0, -3).reshape(*lead, S * B, -1)
    A2 = pre.movedim(0, -3).reshape(*lead, S * B, -1)
    denom = (n * S)
    dW = (A1.transpose(-1, -2) @ A2) / denom[..., None, None]
    dW = dW * mask
    if l1:
        if W is None:
            raise ValueError("the L1 term needs the weights W")
        dW = dW - l1 * torch.sign(W) * mask
    if bias:
        a2 = A2 if valid is None else pre.mul(v).movedim(0, -3).reshape(*lead, S * B, -1)
        db = a2.sum(-2) / denom[..., None]
        db[..., :n_in] = 0
    else:
        db = torch.zeros(*lead, traj.shape[-1], dtype=traj.dtype, device=traj.device)
    return dW, db


def vector_field_update(free: torch.Tensor, nudged: torch.Tensor, beta, mask: torch.Tensor, directed: bool,
                        n_in: int, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric EqProp as the DEEP authors' baseline notebook runs it (Scellier et al.'s vector-field
    form): dW_ij = (1/beta) rho(s0_i) [rho(sb_j) - rho(s0_j)], db = (1/beta) [rho(sb) - rho(s0)],
    batch means; the Trainer's rule signature (``eqprop.learning.eqprop_update``'s)."""
    r0, rb, denom = activities_and_denominator(free, nudged, beta, valid, "vector_field_update")
    dW = (r0.transpose(-1, -2) @ (rb - r0)) / denom[..., None, None] * mask
    db = (rb - r0).sum(-2) / denom[..., None]
    db[..., :n_in] = 0
    return dW, db


def prune_probabilities(W: torch.Tensor, alive: torch.Tensor, temp: float) -> np.ndarray:
    """p_ij = exp(-|W_ij|/temp) / sum_i' exp(-|W_i'j|/temp) over neuron j's alive incoming connections
    (column j), 0 where not alive; one network (N, N), float64 on the host."""
    a = alive.cpu().numpy().astype(bool)
    e = np.exp(-W.detach().abs().cpu().double().numpy() / temp) * a
    z = e.sum(0, keepdims=True)
    return np.divide(e, z, out=np.zeros_like(e), where=z > 0)


def prune_(W: torch.Tensor, alive: torch.Tensor, tol_W: float, temp: float, rng: np.random.Generator) -> int:
    """One pruning pass on one network, in place (W and alive (N, N)): remove each alive connection with
    |W| <= tol_W whose probability exceeds its uniform draw. One draw per entry of W, whatever is
    alive, so the stream's position depends only on the number of passes. Returns how many went."""
    p = prune_probabilities(W, alive, temp)
    u = rng.random(p.shape)
    weak = W.detach().abs().cpu().numpy() <= tol_W
    remove = alive.cpu().numpy().astype(bool) & weak & (p > u)
    if remove.any():
        r = torch.as_tensor(remove, device=W.device)
        alive[r] = False
        W[r] = 0
    return int(remove.sum())
