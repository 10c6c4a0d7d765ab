"""How the solver computes W rho(s) + b cheaply for a given topology.

Inputs are clamped during a relaxation, so their contribution (and the bias) is a
per-batch constant computed once. What remains couples the free (non-input) neurons:

* ``blocks``: one small matmul per non-empty adjacent/intralayer block and direction,
  plus one sparse product for layer-skipping connections. A layered net never pays
  for the N x N matmul of its mostly-empty mask.
* ``dense``: one (B, Nf) x (Nf, Nf) matmul over the free neurons; wins when the free
  part of the mask is dense (e.g. complete directed graphs).
``auto`` picks ``dense`` for small nets (<= 1024 free neurons: per-op overhead dominates
there, measured 17 us vs 220 us per step on a 10-10x8-1 net) or when more than 25 % of the
free-free pairs are connected, and ``blocks`` otherwise (e.g. 784-500x3-10).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from .network import Network
from .topology import BLOCK_SKIP

DENSE_FRACTION = 0.25
DENSE_MAX_FREE = 1024


@dataclasses.dataclass
class Couplings:
    sizes: list[int]  # free layer sizes (hidden..., output)
    dense: torch.Tensor | None  # (Nf, Nf) when in dense mode
    blocks: list[tuple[slice, slice, torch.Tensor]]  # (src columns, dst columns, W block) over free neurons
    sparse: torch.Tensor | None  # (Nf, Nf) sparse skip couplings, transposed for S^T @ rho^T

    @classmethod
    def build(cls, network: Network, mode: str = "auto") -> "Couplings":
        topo, W = network.topology, network.W
        n_in = topo.n_in
        sizes = list(topo.sizes[1:])
        Wff = W[n_in:, n_in:]
        if mode not in ("auto", "blocks", "dense"):
            raise ValueError(f"coupling mode must be auto, blocks or dense, got {mode!r}")
        if mode == "auto":
            m = topo.mask[n_in:, n_in:]
            mode = "dense" if (m.shape[0] <= DENSE_MAX_FREE or m.mean() > DENSE_FRACTION) else "blocks"
        if mode == "dense":
            return cls(sizes, Wff, [], None)
        off = [0]
        for s in sizes:
            off.append(off[-1] + s)
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
        lay = topo.layer_of[n_in:]
        far_np = np.abs(lay[:, None] - lay[None, :]) >= 2
        if (far_np & topo.mask[n_in:, n_in:]).any():
            far = torch.as_tensor(far_np, device=W.device)
            S = torch.where(far, Wff, torch.zeros((), dtype=W.dtype, device=W.device))
            with warnings.catch_warnings():  # torch flags CSR as beta; the product we use is stable
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                sparse = S.T.contiguous().to_sparse_csr()
        return cls(sizes, None, blocks, sparse)

    def drive(self, const: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """const + couplings from the free activities s (B, Nf), as one (B, Nf) tensor."""
        if self.dense is not None:
            return torch.addmm(const, s, self.dense)
        if self.sparse is not None:
            h = const + (self.sparse @ s.T).T
        else:
            h = const.clone()
        for src, dst, Wb in self.blocks:
            h[:, dst].addmm_(s[:, src], Wb)  # in place into the destination layer's columns
        return h


def input_constant(network: Network, x: torch.Tensor) -> torch.Tensor:
    """b + rho(x) W[in, free]: the clamped inputs' drive on the free neurons, (B, Nf)."""
    n_in = network.topology.n_in
    return torch.addmm(network.b[n_in:].expand(x.shape[0], -1), x.clamp(0, 1), network.W[:n_in, n_in:])
