"""Topologies: which neurons are connected.

A topology is a list of layer sizes (input first, output last) and a boolean
connection mask over all neurons, numbered layer by layer. Builders:

* ``mlff(sizes)``: every pair in adjacent layers (the layered Hopfield net).
* ``small_world(sizes, p, seed, ...)``: Gammell et al.'s Algorithm 1 (layer skipping).
* ``complete_directed(n_in, n_hidden, n_out)``: DEEP's complete directed graph.

The mask is symmetric for Hopfield topologies; ``directed=True`` lifts that.
``mask[i, j]`` means a weight between i and j exists (for directed nets: j is
driven by i, i.e. the weight W[i, j] carries i's activity into j).
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path

import numpy as np

BLOCK_ADJACENT, BLOCK_SKIP, BLOCK_INTRA = "adjacent", "skip", "intralayer"


@dataclasses.dataclass(frozen=True)
class Block:
    """The connections between layer ``src`` and layer ``dst`` (src <= dst)."""

    src: int
    dst: int
    kind: str  # adjacent | skip | intralayer
    count: int  # existing connections (unordered pairs for symmetric nets, both directions for directed)


@dataclasses.dataclass(eq=False)
class Topology:
    sizes: tuple[int, ...]
    mask: np.ndarray  # (N, N) bool
    directed: bool = False
    info: dict = dataclasses.field(default_factory=dict)  # how it was built (kind, p, actual_p, ...)

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"topology needs >= 2 layers of >= 1 neuron, got sizes {self.sizes}")
        self.mask = np.asarray(self.mask, dtype=bool)
        n = sum(self.sizes)
        if self.mask.shape != (n, n):
            raise ValueError(f"mask shape {self.mask.shape} does not match sizes {self.sizes} (N={n})")
        if np.any(np.diag(self.mask)):
            raise ValueError("mask has self connections (non-zero diagonal)")
        if not self.directed and not np.array_equal(self.mask, self.mask.T):
            raise ValueError("mask of an undirected (Hopfield) topology must be symmetric")

    # -- layout -------------------------------------------------------------
    @property
    def n(self) -> int:
        return sum(self.sizes)

    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def n_out(self) -> int:
        return self.sizes[-1]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)])

    def layer_slice(self, layer: int) -> slice:
        o = self.offsets
        return slice(int(o[layer]), int(o[layer + 1]))

    @property
    def layer_of(self) -> np.ndarray:
        """Layer index of every neuron."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)

    @property
    def output_slice(self) -> slice:
        return self.layer_slice(len(self.sizes) - 1)

    def block_mask(self, src: int, dst: int) -> np.ndarray:
        """Full-size mask of the connections between layers src and dst (both directions)."""
        lay = self.layer_of
        sel = np.zeros_like(self.mask)
        a, b = lay[:, None], lay[None, :]
        sel |= (a == src) & (b == dst)
        sel |= (a == dst) & (b == src)
        return sel & self.mask

    def blocks(self) -> list[Block]:
        """Non-empty blocks, adjacent ones first (in layer order), then skip and intralayer."""
        out = []
        L = len(self.sizes)
        for l in range(L):
            for m in range(l, L):
                sl, sm = self.layer_slice(l), self.layer_slice(m)
                cnt = int(self.mask[sl, sm].sum())
                if l == m:
                    cnt = cnt if self.directed else cnt // 2
                elif self.directed:  # a directed weight may exist in one direction only
                    cnt += int(self.mask[sm, sl].sum())
                if cnt == 0 and m != l + 1:
                    continue
                kind = BLOCK_INTRA if l == m else BLOCK_ADJACENT if m == l + 1 else BLOCK_SKIP
                out.append(Block(l, m, kind, cnt))
        order = {BLOCK_ADJACENT: 0, BLOCK_SKIP: 1, BLOCK_INTRA: 2}
        return sorted(out, key=lambda b: (order[b.kind], b.src, b.dst))

    def adjacent_blocks(self) -> list[Block]:
        return [b for b in self.blocks() if b.kind == BLOCK_ADJACENT]

    @property
    def n_connections(self) -> int:
        c = int(self.mask.sum())
        return c if self.directed else c // 2

    def describe(self) -> str:
        kind = self.info.get("kind", "custom")
        s = f"{kind} {'-'.join(map(str, self.sizes))}, {self.n_connections} connections"
        if "actual_p" in self.info:
            s += f", p={self.info.get('p')}, actual p={self.info['actual_p']:.4f}"
        return s

    # -- persistence --------------------------------------------------------
    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path, sizes=np.array(self.sizes), mask=np.packbits(self.mask, axis=None),
            directed=self.directed, info=json.dumps(self.info))

    @classmethod
    def load(cls, path: str | Path) -> "Topology":
        with np.load(path) as z:
            sizes = tuple(int(s) for s in z["sizes"])
            n = sum(sizes)
            mask = np.unpackbits(z["mask"], count=n * n).reshape(n, n).astype(bool)
            return cls(sizes, mask, bool(z["directed"]), json.loads(str(z["info"])))


# -- builders -----------------------------------------------------------------
def _check_sizes(sizes) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(f"need at least an input and an output layer, got sizes {sizes}")
    for s in sizes:
        if int(s) != s or s < 1:
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
    return tuple(int(s) for s in sizes)


def _adjacent_mask(sizes) -> np.ndarray:
    n = sum(sizes)
    lay = np.repeat(np.arange(len(sizes)), sizes)
    return np.abs(lay[:, None] - lay[None, :]) == 1 if n else np.zeros((0, 0), bool)


def _intralayer_mask(sizes) -> np.ndarray:
    lay = np.repeat(np.arange(len(sizes)), sizes)
    hidden = (lay > 0) & (lay < len(sizes) - 1)
    m = (lay[:, None] == lay[None, :]) & hidden[:, None] & hidden[None, :]
    np.fill_diagonal(m, False)
    return m


def mlff(sizes) -> Topology:
    """Layered Hopfield net: every pair of neurons in adjacent layers, nothing else."""
    sizes = _check_sizes(sizes)
    return Topology(sizes, _adjacent_mask(sizes), info={"kind": "mlff"})


class _SkipPool:
    """Uniform sampling of unconnected candidate pairs without listing them.

    Candidates are pairs whose layers are >= 2 apart (never inside the input or the
    output layer, never self) plus adjacent/intralayer pairs removed earlier. The
    layer-distance >= 2 pairs are sampled by rejection (connected ones are rare).
    """

    def __init__(self, sizes, mask, rng):
        self.rng, self.mask = rng, mask
        off = np.concatenate([[0], np.cumsum(sizes)])
        L = len(sizes)
        self.pairs = [(l, m) for l in range(L) for m in range(l + 2, L)]
        w = np.array([sizes[l] * sizes[m] for l, m in self.pairs], dtype=float)
        self.total = int(w.sum())
        self.prob = w / w.sum() if self.total else w
        self.off = off
        self.sizes = sizes
        self.n_connected_skip = 0  # distance>=2 pairs currently connected
        self.returned: list[tuple[int, int]] = []  # removed pairs back in the pool

    def release(self, i: int, j: int) -> None:
        """A removed pair goes back to the candidate pool."""
        lay = np.searchsorted(self.off, [i, j], side="right") - 1
        if abs(int(lay[0]) - int(lay[1])) >= 2:
            self.n_connected_skip -= 1  # the rejection sampler sees it again
        else:
            self.returned.append((i, j))

    def size(self) -> int:
        return self.total - self.n_connected_skip + len(self.returned)

    def draw(self) -> tuple[int, int]:
        if self.size() <= 0:
            raise ValueError("small_world: no unconnected candidate pair left (p too high for these sizes)")
        if self.rng.random() * self.size() < len(self.returned):
            k = int(self.rng.integers(len(self.returned)))
            self.returned[k], self.returned[-1] = self.returned[-1], self.returned[k]
            return self.returned.pop()
        while True:
            l, m = self.pairs[int(self.rng.choice(len(self.pairs), p=self.prob))]
            i = self.off[l] + int(self.rng.integers(self.sizes[l]))
            j = self.off[m] + int(self.rng.integers(self.sizes[m]))
            if not self.mask[i, j]:
                self.n_connected_skip += 1
                return int(i), int(j)


def small_world(sizes, p: float = 0.1, seed: int | np.random.Generator = 0, mode: str = "replace",
                intralayer: bool = False, n_replace: int | None = None) -> Topology:
    """Small-world (layer-skipping) topology, Gammell et al. Algorithm 1.

    mode="replace": every existing connection (adjacent pairs, plus hidden intralayer
    pairs when ``intralayer``) is independently replaced with probability ``p``: it is
    removed and a uniformly random unconnected candidate (layers >= 2 apart, or a pair
    removed earlier) is added. mode="add": skip connections are added, none removed.
    ``n_replace``: the 2020 preprint's variant, exactly n sequential replacements of a
    uniformly chosen current connection; nominal p = 1 - ((N_o - 1)/N_o)^n.
    ``info['actual_p']`` = replacements / existing connections.
    """
    sizes = _check_sizes(sizes)
    if mode not in ("replace", "add"):
        raise ValueError(f"small_world mode must be 'replace' or 'add', got {mode!r}")
    if n_replace is not None and mode != "replace":
        raise ValueError("small_world: n_replace (fixed-count variant) only exists in mode='replace'")
    if n_replace is None:
        if not (isinstance(p, numbers.Real) and 0.0 <= float(p) <= 1.0):
            raise ValueError(f"small_world: p must lie in [0, 1], got {p!r}")
    elif n_replace < 0:
        raise ValueError(f"small_world: n_replace must be >= 0, got {n_replace}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mask = _adjacent_mask(sizes)
    if intralayer:
        mask |= _intralayer_mask(sizes)
    iu, ju = np.nonzero(np.triu(mask))
    n_exist = len(iu)
    pool = _SkipPool(sizes, mask, rng)
    if pool.total == 0 and (n_replace or p > 0):
        raise ValueError(f"small_world: sizes {sizes} have no layer pairs >= 2 apart to skip between "
                         "(need at least one hidden layer)")
    info = {"kind": "small_world", "mode": mode, "intralayer": intralayer, "n_existing": n_exist}

    def connect(i, j, on):
        mask[i, j] = mask[j, i] = on

    if n_replace is not None:
        conn = list(zip(iu.tolist(), ju.tolist()))
        for _ in range(n_replace):
            k = int(rng.integers(len(conn)))
            i, j = conn[k]
            ni, nj = pool.draw()  # before releasing (i, j): the pair removed is not a candidate for itself
            connect(i, j, False)
            connect(ni, nj, True)
            pool.release(i, j)
            conn[k] = (ni, nj)
        n_done = n_replace
        info["p"] = 1.0 - ((n_exist - 1) / n_exist) ** n_replace if n_exist else 0.0
    else:
        chosen = np.nonzero(rng.random(n_exist) < p)[0]
        rng.shuffle(chosen)
        for k in chosen:
            i, j = int(iu[k]), int(ju[k])
            ni, nj = pool.draw()  # remove, add, then return the removed pair to the pool
            connect(ni, nj, True)
            if mode == "replace":
                connect(i, j, False)
                pool.release(i, j)
        n_done = len(chosen)
        info["p"] = float(p)
    info["n_replaced"] = int(n_done)
    info["actual_p"] = n_done / n_exist if n_exist else 0.0
    info["seed"] = seed if isinstance(seed, int) else None
    return Topology(sizes, mask, info=info)


def complete_directed(n_in: int, n_hidden: int, n_out: int, bias: bool = False) -> Topology:
    """DEEP's complete directed graph: every ordered pair, no self loops, nothing into inputs.

    bias: one more input neuron, the last one (index n_in), for a constant input of 1 (the
    paper's bias neuron; datasets: ``eqprop.datasets.gate_dataset(..., bias_input=True)``).
    Like every input it is clamped and driven by nothing; it drives every other neuron.
    """
    n_in = n_in + 1 if bias else n_in
    sizes = _check_sizes((n_in, n_hidden, n_out) if n_hidden else (n_in, n_out))
    n = sum(sizes)
    mask = ~np.eye(n, dtype=bool)
    mask[:, :n_in] = False  # mask[i, j]: i drives j; inputs are never driven
    info = {"kind": "complete_directed"}
    if bias:
        info["bias_input"] = n_in - 1
    return Topology(sizes, mask, directed=True, info=info)
