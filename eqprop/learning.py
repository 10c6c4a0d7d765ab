"""EqProp's learning rule: the weight update from a free and a nudged equilibrium.

dW = (1/beta) [rho(s^b) rho(s^b)^T - rho(s^0) rho(s^0)^T] (.) mask, batch mean
db = (1/beta) [rho(s^b) - rho(s^0)], zero for inputs.
Applied as plain SGD, W += lr (.) dW, with a global rate or one rate per layer.

A layered net's connections fill a few layer-pair tiles of the N x N matrix (784-500x3-10 MLFF:
34 % of it, both triangles). ``ConnectionBlocks`` holds those tiles; the rule (given one instead of a dense mask),
``apply_update`` and ``eqprop.metrics.BlockStats`` compute on them only, never on the empty part.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np
import torch

from .dynamics import rho
from .network import Network
from .topology import BLOCK_ADJACENT, BLOCK_INTRA, BLOCK_SKIP, Topology

SKIP_FORMS = ("dense", "sparse")
SKIPS = "sparse"  # the default: measured faster (benchmarks/bench_update.py, docs/engine.md)


@dataclasses.dataclass
class Tile:
    """The connections between layers a <= c: rows/cols slice the N x N matrix (a's rows, c's columns)."""

    a: int
    c: int
    kind: str  # adjacent | skip | intralayer (eqprop.topology's block kinds)
    rows: slice
    cols: slice
    forward: bool  # some trial has a connection a -> c (W[rows, cols])
    backward: bool  # some trial has one c -> a (W[cols, rows]); a == c: False (the square tile is forward)
    full: bool  # every entry of the forward (and backward) piece is a connection in every trial


@dataclasses.dataclass
class SparseSkips:
    """The connections of the skip tiles, handled one by one. ``flat`` indexes a contiguous (T, N, N)
    tensor: every connection once for an undirected net (i in the shallower layer; ``mirror``
    holds the (j, i) positions, same values), both directions for a directed one (mirror None).
    ``pair`` = a * L + c, the layer pair of each entry; ``per_tile``: (tile, index into the
    tile's product (T, |a|, |c|), its flat positions, its mirror's) for the update."""

    flat: torch.Tensor
    pair: torch.Tensor
    trial: torch.Tensor
    mirror: torch.Tensor | None
    per_tile: list

    def __len__(self) -> int:
        return len(self.flat)


class ConnectionBlocks:
    """The non-empty layer-pair tiles of T topologies of equal layer sizes (their union).

    Given to ``eqprop_update`` as its mask, the rule computes each tile's products and writes them
    into a dW that is zero elsewhere; ``apply_update`` and ``BlockStats`` read only the tiles.
    skips: skip tiles (layers >= 2 apart, a few % of their entries connected at p = 0.1) as
    ``dense`` sub-blocks (one masked product, read and written whole), or ``sparse``: only their
    connections (the tile's product is still one GEMM, but only the connections' values are
    written, read and applied; ``sparse_skips``).
    reuse_output: the rule writes every call into one buffer (its off-tile zeros written once), so
    a dW stays valid only until the next call (the Trainer consumes it at once).
    """

    def __init__(self, topologies: Topology | Sequence[Topology], device="cpu", skips: str | None = None,
                 reuse_output: bool = False):
        skips = SKIPS if skips is None else skips
        if skips not in SKIP_FORMS:
            raise ValueError(f"skips must be one of {SKIP_FORMS}, got {skips!r}")
        self.stacked = not isinstance(topologies, Topology)
        self.topologies = list(topologies) if self.stacked else [topologies]
        t0 = self.topologies[0]
        if any(t.sizes != t0.sizes or t.directed != t0.directed for t in self.topologies):
            raise ValueError("ConnectionBlocks: the topologies must share layer sizes and directedness")
        self.sizes, self.directed, self.n, self.T = t0.sizes, t0.directed, t0.n, len(self.topologies)
        self.device, self.skips, self.reuse_output = torch.device(device), skips, reuse_output
        masks = [t.mask for t in self.topologies]
        self.tiles: list[Tile] = []
        L = len(self.sizes)
        for a in range(L):
            for c in range(a, L):
                ra, rc = t0.layer_slice(a), t0.layer_slice(c)
                fwd = [m[ra, rc] for m in masks]
                bwd = [m[rc, ra] for m in masks] if self.directed and a != c else []
                f, b = any(x.any() for x in fwd), any(x.any() for x in bwd)
                if not (f or b):
                    continue
                kind = BLOCK_INTRA if a == c else BLOCK_ADJACENT if c == a + 1 else BLOCK_SKIP
                full = all(x.all() for x in fwd) and (all(x.all() for x in bwd) if self.directed and a != c else True)
                self.tiles.append(Tile(a, c, kind, ra, rc, f, b, full))
        self._masks: dict | None = None  # per tile: (forward, backward) bool tensors, built on first use
        self._sparse = None
        self._buffers: dict = {}

    def dense_tiles(self) -> list[Tile]:
        """The tiles computed, read and written as whole sub-matrices (all but sparse skip tiles)."""
        return [t for t in self.tiles if not (self.skips == "sparse" and t.kind == BLOCK_SKIP)]

    def pieces(self) -> list[tuple[slice, slice]]:
        """Every (rows, cols) sub-matrix of the dense tiles, both directions (the sparse skips'
        connections are ``sparse_skips``)."""
        out = []
        for t in self.dense_tiles():
            if t.forward:
                out.append((t.rows, t.cols))
            if t.backward or (not self.directed and t.a != t.c):
                out.append((t.cols, t.rows))
        return out

    def entries(self) -> int:
        """Entries of N x N an update reads and writes: the dense tiles' (both directions) and the
        sparse skips' connections."""
        n_sparse = len(self.sparse_skips()) * (1 if self.directed else 2)
        return sum((r.stop - r.start) * (c.stop - c.start) for r, c in self.pieces()) + n_sparse

    @property
    def mask(self) -> torch.Tensor:
        """The dense bool mask, (N, N) or (T, N, N), for rules that want one (DEEP's)."""
        m = torch.as_tensor(np.stack([t.mask for t in self.topologies]), device=self.device)
        return m if self.stacked else m[0]

    def _tile_masks(self):
        if self._masks is None:
            def stack(sel):
                return torch.as_tensor(np.stack([sel(t.mask) for t in self.topologies]), device=self.device)
            self._masks = {}
            for k, t in enumerate(self.tiles):
                if t.full:
                    self._masks[k] = (None, None)
                else:
                    self._masks[k] = (stack(lambda m: m[t.rows, t.cols]) if t.forward else None,
                                      stack(lambda m: m[t.cols, t.rows]) if t.backward else None)
        return self._masks

    def sparse_skips(self) -> SparseSkips:
        """The skip tiles' connections (none unless skips == 'sparse'), built on first use."""
        if self._sparse is None:
            N, L = self.n, len(self.sizes)
            per_tile, flat_all, mirror_all, trial_all, pair_all = [], [], [], [], []

            def index(x):
                return torch.as_tensor(np.concatenate(x) if x else np.zeros(0, np.int64), device=self.device)
            for t in self.tiles:
                if t.kind != BLOCK_SKIP or self.skips != "sparse":
                    continue
                na, nc = t.rows.stop - t.rows.start, t.cols.stop - t.cols.start
                local, flat, mirror, trial = [], [], [], []
                for k, topo in enumerate(self.topologies):
                    i, j = np.nonzero(topo.mask[t.rows, t.cols])  # a -> c (or, undirected, both)
                    local.append((k * na + i) * nc + j)
                    flat.append((k * N + i + t.rows.start) * N + j + t.cols.start)
                    mirror.append((k * N + j + t.cols.start) * N + i + t.rows.start)
                    trial.append(np.full(len(i), k))
                    if self.directed:  # c -> a: the value of (j, i) in the tile's (symmetric) product
                        i, j = np.nonzero(topo.mask[t.cols, t.rows])
                        local.append((k * na + j) * nc + i)
                        flat.append((k * N + i + t.cols.start) * N + j + t.rows.start)
                        trial.append(np.full(len(i), k))
                per_tile.append((t, index(local), index(flat), None if self.directed else index(mirror)))
                flat_all += flat
                mirror_all += mirror
                trial_all += trial
                pair_all += [np.full(len(x), t.a * L + t.c) for x in flat]
            self._sparse = SparseSkips(index(flat_all), index(pair_all), index(trial_all),
                                       None if self.directed else index(mirror_all), per_tile)
        return self._sparse

    def _output(self, dtype) -> torch.Tensor:
        shape = (self.T, self.n, self.n)
        if not self.reuse_output:
            return torch.zeros(shape, dtype=dtype, device=self.device)
        if dtype not in self._buffers:
            self._buffers[dtype] = torch.zeros(shape, dtype=dtype, device=self.device)
        return self._buffers[dtype]

    def outer_difference(self, rb: torch.Tensor, r0: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
        """dW = (rb^T rb - r0^T r0) / denom (.) mask on the tiles, zero elsewhere: rb, r0 (T, B, N) (or
        (B, N)), denom (T,) (or 0-d). Two products per tile and a difference, as the dense rule: where
        a neuron's activity is the same in both phases its column cancels to exactly 0 (a vanished
        gradient stays exactly 0 in the statistics). The product is symmetric, so a tile's mirror is
        its transpose; for an undirected net the intralayer tiles are symmetrised as the dense rule
        does (0.5 (G + G^T)), so dW, and with it W, stays exactly symmetric."""
        if rb.ndim != (3 if self.stacked else 2) or rb.shape[-1] != self.n or r0.shape != rb.shape or (
                self.stacked and rb.shape[0] != self.T):
            raise ValueError(f"states of shape {tuple(rb.shape)} / {tuple(r0.shape)} do not fit {self.T} trial(s) "
                             f"of {self.n} neurons" + ("" if self.stacked else " (one network: (rows, N))"))
        if not self.stacked:
            rb, r0, denom = rb.unsqueeze(0), r0.unsqueeze(0), denom.reshape(1)
        out = self._output(rb.dtype)
        d = denom.to(rb.dtype).reshape(-1, 1, 1)

        def product(rows, cols):
            return (torch.bmm(rb[..., rows].transpose(1, 2), rb[..., cols])
                    - torch.bmm(r0[..., rows].transpose(1, 2), r0[..., cols])).div_(d)

        masks = self._tile_masks()
        for k, t in enumerate(self.tiles):
            if self.skips == "sparse" and t.kind == BLOCK_SKIP:
                continue
            fmask, bmask = masks[k]
            G = None
            if t.forward:
                G = product(t.rows, t.cols)
                if t.a == t.c and not self.directed:
                    G = 0.5 * (G + G.transpose(1, 2))  # BLAS leaves last-bit asymmetries
                out[:, t.rows, t.cols] = G if fmask is None else G * fmask
                if not self.directed and t.a != t.c:
                    out[:, t.cols, t.rows] = out[:, t.rows, t.cols].transpose(1, 2)
            if t.backward:  # directed: c -> a, the transpose of the symmetric product
                Gb = G.transpose(1, 2) if G is not None else product(t.cols, t.rows)
                out[:, t.cols, t.rows] = Gb if bmask is None else Gb * bmask
        flat_out = out.view(-1)
        for t, local, flat, mirror in self.sparse_skips().per_tile:  # the tile's products, its connections kept
            vals = product(t.rows, t.cols).view(-1).index_select(0, local)
            flat_out.index_copy_(0, flat, vals)
            if mirror is not None:
                flat_out.index_copy_(0, mirror, vals)
        return out if self.stacked else out[0]


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


def eqprop_update(free: torch.Tensor, nudged: torch.Tensor, beta, mask, directed: bool, n_in: int,
                  valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule's one formula from the two equilibria's states u (rho is taken here).

    One network: free, nudged (B, N), mask (N, N); T trials: (T, B, N) and (T, N, N).
    mask: a dense bool mask, or ``ConnectionBlocks`` of the same topologies: then only its tiles
    are computed (equal to the dense result within fp32 rounding; the Trainer passes these).
    beta: a number, or (T,) per trial (a tensor on the states' device: no host sync).
    valid: (T, B) (or (B,)) bool rows that count; the batch mean then runs over each trial's
    valid rows only (padded short batches). Returns dW like mask, db like a state row.
    """
    r0, rb, denom = activities_and_denominator(free, nudged, beta, valid, "eqprop_update")
    if isinstance(mask, ConnectionBlocks):
        dW = mask.outer_difference(rb, r0, denom)
    else:
        dW = (rb.transpose(-1, -2) @ rb - r0.transpose(-1, -2) @ r0) / denom[..., None, None]
        if not directed:
            dW = 0.5 * (dW + dW.transpose(-1, -2))  # BLAS leaves last-bit asymmetries; W must stay exactly symmetric
        dW = dW * mask
    db = (rb - r0).sum(-2) / denom[..., None]
    db[..., :n_in] = 0
    return dW, db


eqprop_update.takes_blocks = True  # the Trainer hands it ConnectionBlocks rather than the dense mask


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


_BLOCKS: collections.OrderedDict = collections.OrderedDict()  # apply_update's tiles per set of topologies
MAX_CACHED_BLOCKS = 16


def cached_blocks(topologies: Sequence[Topology], device) -> ConnectionBlocks:
    """``ConnectionBlocks(topologies, device)``, cached per set of topology objects and device (the
    cache keeps them alive, so an id is never reused while its entry exists)."""
    key = (tuple(id(t) for t in topologies), str(device), SKIPS)
    hit = _BLOCKS.get(key)
    if hit is None:
        hit = (ConnectionBlocks(list(topologies), device), list(topologies))
        _BLOCKS[key] = hit
        while len(_BLOCKS) > MAX_CACHED_BLOCKS:
            _BLOCKS.popitem(last=False)
    _BLOCKS.move_to_end(key)
    return hit[0]


DENSE_ABS_MAX_N = 256  # up to N x N = 65,536 entries one dense max costs less than the tiles' calls


def connected_abs_max(network: Network) -> torch.Tensor:
    """max |W| per trial (T,) over the topology's connections only (tiles and sparse skips), NaN where one of
    them is NaN: the divergence check reads these instead of all N x N (18x fewer entries on 784-100x5-10).
    Up to N = DENSE_ABS_MAX_N all N x N in one call: the same numbers, since W is 0 off the connections."""
    stack = network.as_stack()
    W = stack.W
    if W.shape[-1] <= DENSE_ABS_MAX_N:  # the entries off the connections are 0 (Network refuses others): the same max
        return W.abs().amax((1, 2))
    blocks = cached_blocks(stack.topologies, W.device)
    out = torch.zeros(stack.T, dtype=W.dtype, device=W.device)
    for rows, cols in blocks.pieces():
        out = torch.maximum(out, W[:, rows, cols].abs().amax((1, 2)))  # maximum and amax keep NaN
    sp = blocks.sparse_skips()
    if len(sp):
        at = sp.flat if sp.mirror is None else torch.cat([sp.flat, sp.mirror])
        trial = sp.trial if sp.mirror is None else torch.cat([sp.trial, sp.trial])
        v = W.reshape(-1).index_select(0, at).abs()
        out = out.scatter_reduce(0, trial, v, "amax")
        nan = torch.zeros_like(out).index_add_(0, trial, torch.isnan(v).to(out.dtype)) > 0
        out = out.masked_fill(nan, float("nan"))  # scatter_reduce's amax need not keep NaN
    return out


def apply_update(network: Network, dW: torch.Tensor, db: torch.Tensor, lr_W, lr_b) -> None:
    """W += lr_W (.) dW in place, on the topology's connected tiles and sparse skips only
    (``ConnectionBlocks``): entries of dW elsewhere are no connections and are never read. Each
    entry is computed as the dense W + lr_W * dW would (bitwise), so symmetry and the mask are
    kept because dW and lr_W have them. lr_W, lr_b: tensors shaped like W and b, or numbers."""
    stack = network.as_stack()
    W = stack.W
    d = torch.as_tensor(dW, device=W.device).reshape(W.shape)
    lr = lr_W.reshape(W.shape) if torch.is_tensor(lr_W) and lr_W.numel() == W.numel() else lr_W
    per_entry = torch.is_tensor(lr) and lr.ndim == 3
    blocks = cached_blocks(stack.topologies, W.device)
    for rows, cols in blocks.pieces():
        W[:, rows, cols] += (lr[:, rows, cols] if per_entry else lr) * d[:, rows, cols]
    sp = blocks.sparse_skips()
    if len(sp):
        if not W.is_contiguous():
            raise ValueError("apply_update: the network's W must be contiguous (sparse skip connections are "
                             "updated by flat index)")
        Wf, df = W.view(-1), d.reshape(-1)
        lrf = lr.reshape(-1) if per_entry else None
        for at in [sp.flat] + ([] if sp.mirror is None else [sp.mirror]):
            step = (lrf.index_select(0, at) if per_entry else lr) * df.index_select(0, at)
            Wf.index_add_(0, at, step)  # W + lr * dW, as the dense update computes it
    network.b.add_(lr_b * db)
