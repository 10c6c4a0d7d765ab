"""The one Network type: a topology plus weights and biases over its mask."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from .topology import BLOCK_ADJACENT, Topology


class NetworkError(ValueError):
    """A network whose weights or biases do not fit its topology."""


def glorot_bound(n_a: int, n_b: int) -> float:
    return math.sqrt(6.0 / (n_a + n_b))


def skip_init_bound(sizes) -> float:
    """a = mean of the Glorot bounds of the L-1 adjacent blocks (Gammell et al. 2021)."""
    sizes = list(sizes)
    return float(np.mean([glorot_bound(a, b) for a, b in zip(sizes[:-1], sizes[1:])]))


@dataclasses.dataclass(eq=False)
class Network:
    """Weights W (N x N, zero outside the mask) and biases b (N) of a topology.

    ``W[i, j]`` couples neuron i's activity into neuron j (for a Hopfield net W is
    symmetric, so the direction does not matter). Input biases are zero. Tensors live
    on ``W.device`` with ``W.dtype``; everything else follows them.
    """

    topology: Topology
    W: torch.Tensor
    b: torch.Tensor

    def __post_init__(self):
        self.W = torch.as_tensor(self.W)
        self.b = torch.as_tensor(self.b, dtype=self.W.dtype, device=self.W.device)
        self.validate()

    def validate(self) -> None:
        n = self.topology.n
        if self.W.shape != (n, n):
            raise NetworkError(f"W has shape {tuple(self.W.shape)}, topology {self.topology.sizes} needs ({n}, {n})")
        if self.b.shape != (n,):
            raise NetworkError(f"b has shape {tuple(self.b.shape)}, topology needs ({n},)")
        if not self.W.is_floating_point():
            raise NetworkError(f"W must be floating point, got {self.W.dtype}")
        for name, t in (("W", self.W), ("b", self.b)):
            bad = ~torch.isfinite(t)
            if bad.any():
                idx = tuple(int(i) for i in torch.nonzero(bad)[0])
                raise NetworkError(f"{name} has {int(bad.sum())} non-finite entries (first at {idx})")
        mask = self.mask_tensor()
        off = (self.W != 0) & ~mask
        if off.any():
            i, j = (int(v) for v in torch.nonzero(off)[0])
            raise NetworkError(f"W[{i}, {j}] = {float(self.W[i, j])} lies outside the topology's mask "
                               f"({int(off.sum())} such entries)")
        if not self.topology.directed and not torch.equal(self.W, self.W.T):
            d = (self.W - self.W.T).abs()
            i, j = (int(v) for v in torch.nonzero(d == d.max())[0])
            raise NetworkError(f"W of a Hopfield network must be symmetric: W[{i},{j}]={float(self.W[i, j])} "
                               f"!= W[{j},{i}]={float(self.W[j, i])}")
        if self.b[: self.topology.n_in].any():
            raise NetworkError("input neurons must have zero bias (inputs are clamped)")

    # -- construction -------------------------------------------------------
    @classmethod
    def init(cls, topology: Topology, seed: int = 0, dtype=torch.float32, device="cpu",
             skip_bound: float | None = None) -> "Network":
        """Glorot uniform on adjacent blocks, U[-a, a] elsewhere (a = mean Glorot bound)."""
        rng = np.random.default_rng(seed)
        n = topology.n
        W = np.zeros((n, n))
        a = skip_init_bound(topology.sizes) if skip_bound is None else skip_bound
        lay = topology.layer_of
        # one uniform draw per unordered pair (per ordered pair for directed nets)
        U = rng.uniform(-1.0, 1.0, size=(n, n))
        bound = np.full((n, n), a)
        for blk in topology.blocks():
            if blk.kind == BLOCK_ADJACENT:
                g = glorot_bound(topology.sizes[blk.src], topology.sizes[blk.dst])
                sel = ((lay[:, None] == blk.src) & (lay[None, :] == blk.dst)) | (
                    (lay[:, None] == blk.dst) & (lay[None, :] == blk.src))
                bound[sel] = g
        W = U * bound * topology.mask
        if not topology.directed:
            W = np.triu(W, 1)
            W = W + W.T
        return cls(topology, torch.tensor(W, dtype=dtype, device=device),
                   torch.zeros(n, dtype=dtype, device=device))

    def mask_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.topology.mask, device=self.W.device)

    def to(self, device=None, dtype=None) -> "Network":
        return Network(self.topology, self.W.to(device=device, dtype=dtype), self.b.to(device=device, dtype=dtype))

    def clone(self) -> "Network":
        return Network(self.topology, self.W.clone(), self.b.clone())

    @property
    def device(self):
        return self.W.device

    @property
    def dtype(self):
        return self.W.dtype

    # -- persistence ----------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        self.topology.save(path.with_suffix(".topology.npz"))
        np.savez_compressed(path, W=self.W.detach().cpu().numpy(), b=self.b.detach().cpu().numpy())

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> "Network":
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")  # np.savez appended it when saving
        topo = Topology.load(path.with_suffix(".topology.npz"))
        with np.load(path) as z:
            return cls(topo, torch.tensor(z["W"], device=device), torch.tensor(z["b"], device=device))
