"""The one energy (Hopfield, Scellier & Bengio 2017) and the cost that nudges it.

rho(u) = clip(u, 0, 1)
E(u)   = 1/2 sum_i rho_i^2 - 1/2 sum_{i != j} W_ij rho_i rho_j - sum_i b_i rho_i
C      = ||y - y_d||^2 (no 1/2, as in the paper), F = E + beta * C.
States are (B, N) over all neurons, inputs included (their terms are constants).
"""
from __future__ import annotations

import torch

from .dynamics import rho
from .network import Network


def energy(network: Network, state: torch.Tensor) -> torch.Tensor:
    """E per example, shape (B,). W has a zero diagonal, so the quadratic form is the i != j sum."""
    r = rho(state)
    quad = ((r @ network.W) * r).sum(-1)
    return 0.5 * (r * r).sum(-1) - 0.5 * quad - r @ network.b


def cost(network: Network, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """C = ||rho(y) - y_d||^2 per example, shape (B,)."""
    y = rho(state[:, network.topology.output_slice])
    return ((y - target) ** 2).sum(-1)


def total_energy(network: Network, state: torch.Tensor, beta: float = 0.0,
                 target: torch.Tensor | None = None) -> torch.Tensor:
    """F = E + beta * C per example."""
    e = energy(network, state)
    return e if beta == 0 or target is None else e + beta * cost(network, state, target)


def drive(network: Network, state: torch.Tensor) -> torch.Tensor:
    """W rho(u) + b for every neuron (dense; for checks, not the hot loop)."""
    return rho(state) @ network.W + network.b
