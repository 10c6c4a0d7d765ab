"""How an Euler engine computes W rho(s) + b cheaply, and the one rule that chooses how.

Inputs are clamped during a relaxation, so their contribution (and the bias) is a
per-batch constant computed once. What remains couples the free (non-input) neurons:

* ``dense``: one (B, Nf) x (Nf, Nf) matmul over the free neurons: one launch per step,
  so it wins where launches or per-op overhead dominate (CUDA at small batch, nets whose
  layers are narrower than BLOCKS_MIN_LAYER on CPU: 784-100x5-10, 10-10x5-1).
* ``blocks``: one small matmul per non-empty layer pair and direction (adjacent, skip and
  intralayer), so a layered net never pays for the empty part of the N x N mask (2x
  faster measured for 784-500x3-10 on CPU). The reference engine takes skips as one
  sparse product; the fast engine as dense sub-blocks.
``coupling_mode`` is the rule both engines use: an explicit mode is taken as given, and
``auto`` is ``blocks`` on CPU when some free layer has >= BLOCKS_MIN_LAYER neurons, else
``dense``.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
import torch

from .config import COUPLINGS
from .network import Network
from .topology import BLOCK_SKIP, Topology

BLOCKS_MIN_LAYER = 256  # CPU: per-block products pay from layers this wide (docs/engine.md)


def coupling_mode(mode: str, topologies: Sequence[Topology], device) -> str:
    """The one rule: 'dense' or 'blocks' for these topologies on this device."""
    if mode not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {mode!r}")
    if mode != "auto":
        return mode
    big = max(topologies[0].sizes[1:]) >= BLOCKS_MIN_LAYER
    return "blocks" if torch.device(device).type == "cpu" and big else "dense"


def free_layer_pairs(topologies: Sequence[Topology]) -> list[tuple[int, int]]:
    """(src, dst) free-layer index pairs (0 = first hidden layer) with a connection in any
    trial, both directions of each unordered pair (src == dst once for intralayer)."""
    pairs = set()
    for topo in topologies:
        for blk in topo.blocks():
            if blk.src == 0 or blk.count == 0:
                continue  # inputs are folded into the constant
            pairs.add((blk.src - 1, blk.dst - 1))
            pairs.add((blk.dst - 1, blk.src - 1))
    return sorted(pairs)


def free_offsets(sizes) -> list[int]:
    off = [0]
    for s in sizes[1:]:
        off.append(off[-1] + s)
    return off


@dataclasses.dataclass
class Couplings:
    """The reference engine's drive for one network (free neurons only)."""

    dense: torch.Tensor | None  # (Nf, Nf) when in dense mode
    blocks: list[tuple[slice, slice, torch.Tensor]]  # (src columns, dst columns, W block) over free neurons
    sparse: torch.Tensor | None  # (Nf, Nf) sparse skip couplings, transposed for S^T @ rho^T

    @classmethod
    def build(cls, network: Network, mode: str) -> "Couplings":
        topo, W = network.topology, network.W
        Wff = W[topo.n_in:, topo.n_in:]
        if coupling_mode(mode, [topo], W.device) == "dense":
            return cls(Wff, [], None)
        off = free_offsets(topo.sizes)
        blocks = []
        for blk in topo.blocks():
            if blk.src == 0 or blk.kind == BLOCK_SKIP:
                continue  # inputs are folded into the constant; skips go to the sparse product
            l, m = blk.src - 1, blk.dst - 1
            sl, sm = slice(off[l], off[l + 1]), slice(off[m], off[m + 1])
            blocks.append((sl, sm, Wff[sl, sm]))
            if l != m:
                blocks.append((sm, sl, Wff[sm, sl]))
        sparse = None
        lay = topo.layer_of[topo.n_in:]
        far_np = np.abs(lay[:, None] - lay[None, :]) >= 2
        if (far_np & topo.mask[topo.n_in:, topo.n_in:]).any():
            far = torch.as_tensor(far_np, device=W.device)
            S = torch.where(far, Wff, torch.zeros((), dtype=W.dtype, device=W.device))
            with warnings.catch_warnings():  # torch flags CSR as beta; the product we use is stable
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                sparse = S.T.contiguous().to_sparse_csr()
        return cls(None, blocks, sparse)

    def drive(self, const: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """const + couplings from the free activities s (B, Nf), as one (B, Nf) tensor."""
        if self.dense is not None:
            return torch.addmm(const, s, self.dense)
        h = const + (self.sparse @ s.T).T if self.sparse is not None else const.clone()
        for src, dst, Wb in self.blocks:
            h[:, dst].addmm_(s[:, src], Wb)  # in place into the destination layer's columns
        return h


def input_constant(network: Network, x: torch.Tensor) -> torch.Tensor:
    """b + rho(x) W[in, free]: the clamped inputs' drive on the free neurons, (B, Nf)."""
    n_in = network.topology.n_in
    return torch.addmm(network.b[n_in:].expand(x.shape[0], -1), x.clamp(0, 1), network.W[:n_in, n_in:])
