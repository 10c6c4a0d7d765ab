"""How an Euler engine computes W rho(s) + b cheaply, and how the choice between the ways is made.

Inputs are clamped during a relaxation, so their contribution (and the bias) is a
per-batch constant computed once. What remains couples the free (non-input) neurons:

* ``dense``: one (B, Nf) x (Nf, Nf) matmul over the free neurons: one launch per step,
  so it wins where launches or per-op overhead dominate (CUDA at small batch, narrow nets on
  CPU: 784-100x5-10, 10-10x5-1).
* ``blocks``: one small matmul per non-empty layer pair and direction (adjacent, skip and
  intralayer), so a layered net never pays for the empty part of the N x N mask (2x
  faster measured for 784-500x3-10 on CPU). The reference engine takes skips as one
  sparse product; the fast engine as dense sub-blocks.
``choose_coupling`` is how ``auto`` is meant to decide: it times a few free steps of each
mode on the actual net (its network, device, dtype, stack size and batch size, through the
engine's own public ``relax``) and keeps the faster, cached per (engine, topologies, device,
dtype, T, batch) for the process; ``coupling_choices()`` lists what it measured and chose.
``coupling_mode`` is the former width rule (``blocks`` on CPU when some free layer has >=
BLOCKS_MIN_LAYER neurons), kept for callers that cannot give a net and a batch size.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from typing import Sequence

import numpy as np
import torch

from .config import COUPLINGS
from .network import Network
from .topology import BLOCK_SKIP, Topology

BLOCKS_MIN_LAYER = 256  # CPU: per-block products pay from layers this wide (docs/engine.md)


def coupling_mode(mode: str, topologies: Sequence[Topology], device) -> str:
    """The former width rule, 'dense' or 'blocks' for these topologies on this device: what ``auto``
    means where no net and batch size are at hand (``choose_coupling`` measures)."""
    if mode not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {mode!r}")
    if mode != "auto":
        return mode
    big = max(topologies[0].sizes[1:]) >= BLOCKS_MIN_LAYER
    return "blocks" if torch.device(device).type == "cpu" and big else "dense"


MEASURE_STEPS = 30  # free steps per timed relaxation: long enough that one call's fixed costs do not decide
MEASURE_REPEATS = 3  # timed calls per mode, the modes interleaved; the fastest call counts
BLOCKS_MARGIN = 1.1  # blocks only when clearly faster: a choice that flips between runs moves results in the last bits
ENGINE_NAMES = ("fast", "reference")
_CHOICES: dict = {}  # (engine, topology keys, device, dtype, T, batch) -> record
_KEYS: dict = {}  # id(topology) -> (topology, its key): hashing a big mask once, not per call


def topology_key(topology: Topology) -> tuple:
    """What a measured choice holds for: sizes, direction and the mask's content."""
    hit = _KEYS.get(id(topology))
    if hit is None or hit[0] is not topology:
        digest = hashlib.sha1(np.packbits(topology.mask).tobytes()).hexdigest()
        hit = (topology, (topology.sizes, topology.directed, digest))
        if len(_KEYS) > 256:
            _KEYS.clear()
        _KEYS[id(topology)] = hit
    return hit[1]


def choose_coupling(mode: str, network: Network, batch: int, engine: str = "fast", used: set | None = None,
                    **solver_kw) -> str:
    """'dense' or 'blocks' for relaxing ``network`` (one net or a stack) at this batch size with this
    engine ('fast': FastEulerSolver, 'reference': EulerSolver): an explicit mode as given; ``auto``
    by measurement (``measure_coupling``), once per (engine, topologies, device, dtype, T, batch)
    in this process. used: the caller's set of choice keys, to which this one is added (a solver's
    checkpoint keeps the choices it relaxed with, not every one this process made). solver_kw: the
    FastEulerSolver's own settings (cuda_graph, tf32), so the measured kernels are the ones it will run."""
    if mode not in COUPLINGS:
        raise ValueError(f"coupling must be one of {COUPLINGS}, got {mode!r}")
    if mode != "auto":
        return mode
    if engine not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {ENGINE_NAMES}, got {engine!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    key = _choice_key(engine, network, batch)
    if key not in _CHOICES:
        _CHOICES[key] = {**measure_coupling(network, batch, engine, **solver_kw), "key": _plain(key)}
    if used is not None:
        used.add(key)
    return _CHOICES[key]["choice"]


def _choice_key(engine: str, network: Network, batch: int) -> tuple:
    return (engine, tuple(topology_key(t) for t in network.topologies), str(network.device), str(network.dtype),
            network.T, batch)


def _plain(x):
    """A key as JSON-able lists (checkpoints, config.json); ``_tuple`` turns it back."""
    return [_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuple(x):
    return tuple(_tuple(v) for v in x) if isinstance(x, list) else x


def coupling_choices(network: Network | None = None, batch: int | None = None) -> list[dict]:
    """The measured choices of this process (copies; each with its ``key``), or only those for this
    network (and batch size): what describe()/config.json, reports and checkpoints record."""
    keep = [r for k, r in _CHOICES.items() if network is None or (
        k[1:5] == _choice_key(k[0], network, 1)[1:5] and (batch is None or k[5] == batch))]
    return [dict(r) for r in keep]


def restore_coupling_choices(records: Sequence[dict]) -> None:
    """Take choices measured before (a checkpoint's ``coupling_choices(...)``) as this process's, so a
    resumed run does not measure again (a flipped choice would move equilibria in their last bits)."""
    for r in records:
        if not isinstance(r, dict) or "key" not in r or r.get("choice") not in ("dense", "blocks"):
            raise ValueError(f"a coupling choice record needs 'key' and 'choice' dense|blocks, got {r!r}")
        _CHOICES[_tuple(r["key"])] = dict(r)


def coupling_state(used: set) -> dict:
    """What a solver's checkpoint keeps of the choices: those it relaxed with (``used``, filled by
    ``choose_coupling``), key and choice only (the timings differ run to run, and a checkpoint holds
    what the run depends on, whatever else this process measured)."""
    return {"coupling_choices": [{"key": _plain(k), "choice": _CHOICES[k]["choice"]}
                                 for k in sorted(used, key=repr) if k in _CHOICES]}


def restore_coupling_state(state: dict | None, used: set) -> None:
    """Take a checkpoint's ``coupling_state()`` as this process's choices, and as the solver's (``used``)."""
    records = (state or {}).get("coupling_choices", [])
    restore_coupling_choices(records)
    used.update(_tuple(r["key"]) for r in records)


def measure_coupling(network: Network, batch: int, engine: str = "fast", steps: int = MEASURE_STEPS,
                     repeats: int = MEASURE_REPEATS, **solver_kw) -> dict:
    """Time ``steps`` free Euler steps of ``network`` in each coupling mode: the engine's own relax on
    random inputs (a private generator: the caller's random streams are untouched), after one
    untimed call per mode (allocation, CUDA graph capture), ``repeats`` timed calls per mode,
    interleaved. CPU time on a single-threaded CPU (robust on a shared machine), else wall clock
    (CUDA synchronised). The reference relaxes a stack trial by trial: trial 0 is timed.
    Returns {choice, dense_ms, blocks_ms, ...} (the fastest call of each, ms)."""
    from .config import EulerConfig  # the engines import this module
    from .fast_relax import FastEulerSolver
    from .solver import EulerSolver
    cfg = {m: EulerConfig(free_steps=steps, nudged_steps=1, coupling=m) for m in ("dense", "blocks")}
    if engine == "fast":
        solvers = {m: FastEulerSolver(c, check_values=False, **solver_kw) for m, c in cfg.items()}
        net = network
    else:
        solvers = {m: EulerSolver(c) for m, c in cfg.items()}
        net = network.trial(0) if network.stacked else network
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, net.topologies[0].n_in, generator=gen).to(net.device, net.dtype)
    cuda = net.device.type == "cuda"
    cpu_clock = not cuda and torch.get_num_threads() == 1
    clock = time.process_time if cpu_clock else time.perf_counter
    times = {m: [] for m in solvers}
    with torch.no_grad():
        for s in solvers.values():
            s.relax(net, x)
        for _ in range(repeats):
            for m, s in solvers.items():
                if cuda:
                    torch.cuda.synchronize(net.device)
                t0 = clock()
                s.relax(net, x)
                if cuda:
                    torch.cuda.synchronize(net.device)
                times[m].append(1e3 * (clock() - t0))
    for s in solvers.values():
        s.close()
    dense, blocks = min(times["dense"]), min(times["blocks"])
    return {"engine": engine, "choice": "blocks" if blocks * BLOCKS_MARGIN < dense else "dense",
            "dense_ms": round(dense, 3), "blocks_ms": round(blocks, 3), "steps": steps, "batch": batch,
            "trials": network.T, "device": str(net.device), "dtype": str(net.dtype).replace("torch.", ""),
            "sizes": list(net.topologies[0].sizes), "clock": "cpu" if cpu_clock else "wall"}


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
    def build(cls, network: Network, mode: str, batch: int | None = None, used: set | None = None) -> "Couplings":
        """mode 'auto' is measured (``choose_coupling``, the reference engine) when the batch size is
        given, else the former width rule decides."""
        topo, W = network.topology, network.W
        Wff = W[topo.n_in:, topo.n_in:]
        chosen = coupling_mode(mode, [topo], W.device) if batch is None else choose_coupling(
            mode, network, batch, "reference", used)
        if chosen == "dense":
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
