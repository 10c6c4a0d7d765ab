"""EqProp's learning rule: the weight update from a free and a nudged equilibrium.

dW = (1/beta) [rho(s^b) rho(s^b)^T - rho(s^0) rho(s^0)^T] (.) mask, batch mean
db = (1/beta) [rho(s^b) - rho(s^0)], zero for inputs.
Applied as plain SGD, W += lr (.) dW, with a global rate or one rate per layer.
"""
from __future__ import annotations

import numpy as np
import torch

from .dynamics import rho
from .network import Network
from .topology import Topology


def activities_and_denominator(free, nudged, beta, valid, rule: str):
    """What every contrastive rule starts from: rho of both states (rows that do not count set
    to 0, which adds nothing to an outer product or a sum) and beta * (rows that count) per trial."""
    r0, rb = rho(free), rho(nudged)
    if valid is None:
        n = torch.full(free.shape[:-2], float(free.shape[-2]), dtype=free.dtype, device=free.device)
    else:
        v = valid.to(free.dtype).unsqueeze(-1)
        r0, rb = r0 * v, rb * v
        n = v.sum((-2, -1))
    if not torch.is_tensor(beta):
        if beta == 0:
            raise ValueError(f"{rule} needs beta != 0")
        beta = torch.tensor(float(beta), dtype=free.dtype, device=free.device)
    return r0, rb, (beta * n).to(free.dtype)


def eqprop_update(free: torch.Tensor, nudged: torch.Tensor, beta, mask: torch.Tensor, directed: bool, n_in: int,
                  valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule's one formula from the two equilibria's states u (rho is taken here).

    One network: free, nudged (B, N), mask (N, N); T trials: (T, B, N) and (T, N, N).
    beta: a number, or (T,) per trial (a tensor on the states' device: no host sync).
    valid: (T, B) (or (B,)) bool rows that count; the batch mean then runs over each trial's
    valid rows only (padded short batches). Returns dW like mask, db like a state row.
    """
    r0, rb, denom = activities_and_denominator(free, nudged, beta, valid, "eqprop_update")
    dW = (rb.transpose(-1, -2) @ rb - r0.transpose(-1, -2) @ r0) / denom[..., None, None]
    if not directed:
        dW = 0.5 * (dW + dW.transpose(-1, -2))  # BLAS leaves last-bit asymmetries; W must stay exactly symmetric
    dW = dW * mask
    db = (rb - r0).sum(-2) / denom[..., None]
    db[..., :n_in] = 0
    return dW, db


def rate_tensors(network: Network, lr, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry rates for W and b, shaped like the network's W and b.

    lr: a global rate or one rate per adjacent block; for a stack, a list of T such specs.
    Per-layer rates (input side first): block
    l <-> l+1 and the biases of layer l+1 use lr[l]. Skip and intralayer connections
    arriving at layer m (the deeper side) use lr[m-1], like that layer's biases.
    """
    dtype, device = dtype or network.dtype, device or network.device
    topos = network.topologies
    specs = list(lr) if network.stacked else [lr]
    if len(specs) != len(topos):
        raise ValueError(f"need one learning-rate spec per trial ({len(topos)}), got {len(specs)}")
    pairs = [_rates(t, s) for t, s in zip(topos, specs)]
    W = np.stack([p[0] for p in pairs]) if network.stacked else pairs[0][0]
    b = np.stack([p[1] for p in pairs]) if network.stacked else pairs[0][1]
    return torch.tensor(W, dtype=dtype, device=device), torch.tensor(b, dtype=dtype, device=device)


def _rates(topology: Topology, lr) -> tuple[np.ndarray, np.ndarray]:
    L = len(topology.sizes)
    if np.isscalar(lr):
        lrs = [float(lr)] * (L - 1)
    else:
        lrs = [float(v) for v in lr]
        if len(lrs) != L - 1:
            raise ValueError(f"per-layer rates: need {L - 1} values (one per adjacent block), got {len(lrs)}")
    if any(v < 0 or v != v for v in lrs):
        raise ValueError(f"learning rates must be >= 0, got {lrs}")
    lay = topology.layer_of
    deeper = np.maximum(lay[:, None], lay[None, :])
    per_layer = np.array([0.0] + lrs)  # index by the deeper layer; layer 0 has no incoming rate
    return per_layer[deeper] * topology.mask, per_layer[lay]


def apply_update(network: Network, dW: torch.Tensor, db: torch.Tensor, lr_W: torch.Tensor,
                 lr_b: torch.Tensor) -> None:
    """W += lr (.) dW in place (symmetry and the mask are kept because dW and lr_W have them)."""
    network.W.add_(lr_W * dW)
    network.b.add_(lr_b * db)
