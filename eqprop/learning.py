"""EqProp's learning rule: the weight update from a free and a nudged equilibrium.

dW = (1/beta) [rho(s^b) rho(s^b)^T - rho(s^0) rho(s^0)^T] (.) mask, batch mean
db = (1/beta) [rho(s^b) - rho(s^0)], zero for inputs.
Applied as plain SGD, W += lr (.) dW, with a global rate or one rate per layer.
"""
from __future__ import annotations

import numpy as np
import torch

from .energy import rho
from .network import Network
from .topology import Topology


def eqprop_update(free: torch.Tensor, nudged: torch.Tensor, beta: float, topology: Topology,
                  mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """mask: the topology's mask as a tensor on free's device (pass it to avoid a copy per call)."""
    if beta == 0:
        raise ValueError("eqprop_update needs beta != 0")
    mask = torch.as_tensor(topology.mask, device=free.device) if mask is None else mask
    return contrastive_update(rho(free), rho(nudged), beta * free.shape[0], mask, topology.directed,
                              topology.n_in)


def contrastive_update(r0: torch.Tensor, rb: torch.Tensor, denom, mask: torch.Tensor, directed: bool,
                       n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule's one formula, for one network (r (B, N)) or T trials at once (r (T, B, N)).

    denom = beta * (rows that count): a number, or (T,) per trial. Rows that must not count
    (padding) are passed with rho = 0, which adds nothing to either outer product or sum.
    """
    if torch.is_tensor(denom) and denom.ndim:
        dW_den, db_den = denom.view(-1, 1, 1), denom.view(-1, 1)
    else:
        dW_den = db_den = denom
    dW = (rb.transpose(-1, -2) @ rb - r0.transpose(-1, -2) @ r0) / dW_den
    if not directed:
        dW = 0.5 * (dW + dW.transpose(-1, -2))  # BLAS leaves last-bit asymmetries; W must stay exactly symmetric
    dW = dW * mask
    db = (rb - r0).sum(-2) / db_den
    db[..., :n_in] = 0
    return dW, db


def rate_tensors(topology: Topology, lr, dtype=torch.float32, device="cpu"):
    """Per-entry rates for W and b from a global rate or one rate per adjacent block.

    Per-layer rates (input side first): block l <-> l+1 and the biases of layer l+1 use
    lr[l]. Skip and intralayer connections arriving at layer m (the deeper side) use
    lr[m-1], like that layer's biases.
    """
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
    lr_W = per_layer[deeper] * topology.mask
    lr_b = per_layer[lay]
    return (torch.tensor(lr_W, dtype=dtype, device=device), torch.tensor(lr_b, dtype=dtype, device=device))


def apply_update(network: Network, dW: torch.Tensor, db: torch.Tensor, lr_W: torch.Tensor,
                 lr_b: torch.Tensor) -> None:
    """W += lr (.) dW in place (symmetry and the mask are kept because dW and lr_W have them)."""
    network.W.add_(lr_W * dW)
    network.b.add_(lr_b * db)
