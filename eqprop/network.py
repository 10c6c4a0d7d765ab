"""The one Network type: a topology plus weights and biases over its mask."""
from __future__ import annotations

import dataclasses
import math
import zipfile
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
    """Weights W and biases b of a topology, for one network or a stack of T trials.

    One network: ``topology`` a Topology, W (N, N), b (N,). A stack of T >= 1 independent
    trials (seeds, p values, device instances) of equal layer sizes: ``topology`` a tuple of
    T Topologies, W (T, N, N), b (T, N); ``Network.stack`` builds one, ``trial(t)`` views
    one trial as a plain network (sharing storage, so in-place updates show through).
    ``W[..., i, j]`` couples neuron i's activity into neuron j (for a Hopfield net W is
    symmetric, so the direction does not matter). Input biases are zero. Tensors live
    on ``W.device`` with ``W.dtype``; everything else follows them.
    """

    topology: Topology | tuple[Topology, ...]
    W: torch.Tensor
    b: torch.Tensor

    def __post_init__(self):
        self.W = torch.as_tensor(self.W)
        self.b = torch.as_tensor(self.b, dtype=self.W.dtype, device=self.W.device)
        if not isinstance(self.topology, Topology):
            self.topology = tuple(self.topology)
        self.validate()

    @property
    def stacked(self) -> bool:
        return not isinstance(self.topology, Topology)

    @property
    def topologies(self) -> tuple[Topology, ...]:
        return self.topology if self.stacked else (self.topology,)

    @property
    def T(self) -> int:
        return len(self.topologies)

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.topologies[0].sizes

    def validate(self) -> None:
        topos = self.topologies
        if not topos:
            raise NetworkError("a stack of trials needs at least one topology")
        t0 = topos[0]
        for t, topo in enumerate(topos):
            if topo.sizes != t0.sizes or topo.directed != t0.directed:
                raise NetworkError(f"trial {t} has sizes {topo.sizes} (directed={topo.directed}), trial 0 has "
                                   f"{t0.sizes} (directed={t0.directed}): trials must share layer sizes")
        n, lead = t0.n, ((len(topos),) if self.stacked else ())
        if tuple(self.W.shape) != (*lead, n, n):
            raise NetworkError(f"W has shape {tuple(self.W.shape)}, {len(topos)} trial(s) of sizes {t0.sizes} "
                               f"need {(*lead, n, n)}")
        if tuple(self.b.shape) != (*lead, n):
            raise NetworkError(f"b has shape {tuple(self.b.shape)}, need {(*lead, n)}")
        if not self.W.is_floating_point():
            raise NetworkError(f"W must be floating point, got {self.W.dtype}")
        for name, t in (("W", self.W), ("b", self.b)):
            bad = ~torch.isfinite(t)
            if bad.any():
                idx = tuple(int(i) for i in torch.nonzero(bad)[0])
                raise NetworkError(f"{name} has {int(bad.sum())} non-finite entries (first at {idx})")
        off = (self.W != 0) & ~self.mask_tensor()
        if off.any():
            idx = tuple(int(v) for v in torch.nonzero(off)[0])
            raise NetworkError(f"W{list(idx)} = {float(self.W[idx])} lies outside the topology's mask "
                               f"({int(off.sum())} such entries)")
        if not t0.directed and not torch.equal(self.W, self.W.transpose(-1, -2)):
            d = (self.W - self.W.transpose(-1, -2)).abs()
            idx = tuple(int(v) for v in torch.nonzero(d == d.max())[0])
            rev = (*idx[:-2], idx[-1], idx[-2])
            raise NetworkError(f"W of a Hopfield network must be symmetric: W{list(idx)}={float(self.W[idx])} "
                               f"!= W{list(rev)}={float(self.W[rev])}")
        if self.b[..., : t0.n_in].any():
            raise NetworkError("input neurons must have zero bias (inputs are clamped)")

    # -- trials ---------------------------------------------------------------
    @classmethod
    def stack(cls, networks) -> "Network":
        """T plain networks of equal sizes, dtype and device as one stack (copies their tensors)."""
        if isinstance(networks, Network) or not hasattr(networks, "__iter__"):
            raise NetworkError(f"Network.stack takes a list of plain networks, got {type(networks).__name__}")
        nets = list(networks)
        if not nets:
            raise NetworkError("a stack of trials needs at least one network")
        for t, n in enumerate(nets):
            if n.stacked:
                raise NetworkError(f"network {t} is already a stack of {n.T} trials")
            if n.dtype != nets[0].dtype or n.device != nets[0].device:
                raise NetworkError(f"trial {t} is {n.dtype} on {n.device}, trial 0 is {nets[0].dtype} on "
                                   f"{nets[0].device}: convert them first (Network.to)")
            if n.sizes != nets[0].sizes:  # before torch.stack, whose shape error would not name the trial
                raise NetworkError(f"trial {t} has sizes {n.sizes}, trial 0 has {nets[0].sizes}: "
                                   f"trials must share layer sizes")
        return cls(tuple(n.topology for n in nets), torch.stack([n.W for n in nets]),
                   torch.stack([n.b for n in nets]))

    def as_stack(self) -> "Network":
        """This network as a stack (a view for a plain network: T = 1, same storage)."""
        return self if self.stacked else _view((self.topology,), self.W.unsqueeze(0), self.b.unsqueeze(0))

    def trial(self, t: int, copy: bool = False) -> "Network":
        """Trial t as a plain network (a view of the stack's storage unless copy)."""
        if not self.stacked:
            if t != 0:
                raise IndexError(f"a plain network has one trial, asked for trial {t}")
            return self.clone() if copy else self
        if not -self.T <= t < self.T:
            raise IndexError(f"a stack of {self.T} trials has no trial {t}")
        if copy:
            return Network(self.topology[t], self.W[t].clone(), self.b[t].clone())
        return _view(self.topology[t], self.W[t], self.b[t])

    def trials(self, copy: bool = False) -> list["Network"]:
        return [self.trial(t, copy) for t in range(self.T)]

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
        """The mask as a bool tensor on W's device: (N, N), or (T, N, N) for a stack."""
        if not self.stacked:
            return torch.as_tensor(self.topology.mask, device=self.W.device)
        return torch.as_tensor(np.stack([t.mask for t in self.topology]), device=self.W.device)

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
        if self.stacked:
            raise NetworkError(f"save one trial at a time (network.trial(t).save(...)); this is a stack of {self.T}")
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
        tpath = path.with_suffix(".topology.npz")
        for f in (path, tpath):
            if not f.is_file():
                raise FileNotFoundError(f"saved network {path}: {f} not found (Network.save writes {path.name} and "
                                        f"{tpath.name})")
        try:  # our own handles: np.load leaves a file open when it is no zip
            with open(tpath, "rb") as f:
                topo = Topology.load(f)
            with open(path, "rb") as f, np.load(f) as z:
                W, b = z["W"], z["b"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # not an npz / no such arrays
            raise NetworkError(f"{path} is not a saved network (Network.save): {type(e).__name__}: {e}") from None
        return cls(topo, torch.tensor(W, device=device), torch.tensor(b, device=device))


def _view(topology, W, b) -> Network:
    """A Network over tensors already validated as part of another (views are taken per relax
    call: validating N x N again there would cost more than small relaxations)."""
    net = Network.__new__(Network)
    net.topology, net.W, net.b = topology, W, b
    return net
