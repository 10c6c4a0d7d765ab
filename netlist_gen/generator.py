"""Network -> SPICE netlist, pure translation (no files, no simulation).

``build_circuit`` composes the block templates of one abstraction level
(``blocks_ideal``, ``blocks_crossbar``) into a ``Circuit``: ordered element records
that print to the text docs/netlist-format.md specifies, plus the node map and the
names of every element a runner alters (weights, biases, folded inputs, nudge). Names
and order depend on the topology only, so one loaded circuit serves every example and
both EqProp phases: values change by ``alter``, not by re-netlisting.
Physical values (device conductances) come in as plain arrays; ``circuits`` is never
imported here (DESIGN.md section 2).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from eqprop.dynamics import nudge_current, nudge_force, nudge_gain
from eqprop.network import Network

from . import blocks_crossbar, blocks_deep, blocks_ideal, blocks_physical
from . import netlist_format as nf
from .blocks_ideal import Element, fmt
from .netlist_format import FORMAT_VERSION

LEVELS = {"ideal": blocks_ideal, "crossbar": blocks_crossbar, "physical": blocks_physical}
DEVICE_LEVELS = ("crossbar", "physical")  # levels whose synapses are device pairs (need device_arrays)
DYNAMICS = ("leaky", "deep")  # the neuron: EqProp's leaky integrator or DEEP's (blocks_deep)
# Tight enough for rho agreement <= 1e-6 V in normalised units (g0 = 1 S, c = 1 F);
# docs/netlist-format.md section 1 says why these units.
DEFAULT_OPTIONS = {"reltol": 1e-9, "abstol": 1e-15, "vntol": 1e-12}
# Size limits for Debian's ngspice (Sparse 1.3, no KLU), from ngspice-notes.md: dense
# blocks between non-input layers fill in (one factorisation ~h^3.3: h=300 -> 0.47 s,
# 784-500x3-10 unfinished after 25 min); 784-500-10 unfolded (402,010 G) loads in ~2 s.
MAX_DENSE_WIDTH = 400
MAX_ELEMENTS = 500_000
# With KLU (ngspice >= 41 built with it, e.g. Debian's bookworm-backports 46, asked for by
# ``.options klu=1``) there is little fill-in: 784-500x3-10 (4,531 equations, 1.02 M elements)
# solves at ~1.8 s CPU and 942 MB per Newton iteration (ngspice-notes.md); nothing larger was measured.
KLU_MAX_DENSE_WIDTH = 500
KLU_MAX_ELEMENTS = 1_100_000
MATRIX_SOLVERS = ("sparse", "klu")


def solver_of(options: dict | None) -> str:
    """The matrix solver a netlist's .options ask ngspice for ("klu" when klu is set and not 0/false)."""
    v = next((v for k, v in (options or {}).items() if k.lower() == "klu"), None)
    return "klu" if v not in (None, 0, False, "0", "false", "False") else "sparse"


class NetlistTooLarge(ValueError):
    """The circuit is beyond what this ngspice can factorise in practice."""


@dataclasses.dataclass(frozen=True)
class SizeEstimate:
    elements: int  # element lines the generator would write
    synapse_elements: int
    dense_width: int  # widest coupled pair of non-input layers (min of the two widths)
    dense_pair: tuple[int, int] | None  # the layers of that pair
    problems: tuple[str, ...]  # why it is too large; empty if within the limits

    @property
    def ok(self) -> bool:
        return not self.problems


def estimate_size(network: Network, fold_inputs: bool = True, level: str = "ideal",
                  clamp: bool = False, solver: str = "sparse") -> SizeEstimate:
    """Count elements and find the widest dense coupling, without building anything.

    ``network`` may be a Network or just its Topology (sizes and mask are all it needs).
    solver: the matrix solver ngspice will use ("sparse" or "klu"): the limits differ.
    """
    if solver not in MATRIX_SOLVERS:
        raise ValueError(f"solver must be one of {MATRIX_SOLVERS}, got {solver!r}")
    max_width, max_elements = ((KLU_MAX_DENSE_WIDTH, KLU_MAX_ELEMENTS) if solver == "klu"
                               else (MAX_DENSE_WIDTH, MAX_ELEMENTS))
    blocks = _level(level)
    topo = getattr(network, "topology", network)
    n_in, sizes = topo.n_in, topo.sizes
    into = topo.mask[n_in if fold_inputs else 0:, n_in:]  # synapses written, by dst column
    n_syn = int(into.sum())
    n_col = int(into.any(axis=0).sum())
    n_free = topo.n - n_in
    per_neuron = 4 + (1 if clamp else 0)
    n_ix = int(topo.mask[:n_in, n_in:].any(axis=0).sum()) if fold_inputs else 0
    syn = blocks.synapse_count(n_syn, n_col)
    total = syn + per_neuron * n_free + n_ix + 2 * topo.n_out + (0 if fold_inputs else n_in)
    width, pair = 0, None
    for blk in topo.blocks():
        if blk.src == 0 or blk.count == 0:
            continue  # inputs are held by sources: no fill-in through them
        w = sizes[blk.src] if blk.src == blk.dst else min(sizes[blk.src], sizes[blk.dst])
        if w > width:
            width, pair = w, (blk.src, blk.dst)
    problems = []
    if width > max_width and solver == "klu":
        problems.append(
            f"layers {pair[0]} and {pair[1]} ({sizes[pair[0]]} and {sizes[pair[1]]} neurons) are coupled; with "
            f"KLU the widest measured was 500 (784-500x3-10: ~1.8 s CPU and 942 MB per Newton iteration): limit "
            f"KLU_MAX_DENSE_WIDTH={max_width} neurons per coupled pair of non-input layers")
    elif width > max_width:
        problems.append(
            f"layers {pair[0]} and {pair[1]} ({sizes[pair[0]]} and {sizes[pair[1]]} neurons) are coupled; "
            f"ngspice's Sparse 1.3 solver fills such dense blocks in and one factorisation grows "
            f"~h^3.3 (h=300: 0.47 s; 784-500x3-10 did not finish in 25 min): limit MAX_DENSE_WIDTH="
            f"{max_width} neurons per coupled pair of non-input layers (an ngspice built with KLU, e.g. 46 from "
            f"Debian's bookworm-backports, allows {KLU_MAX_DENSE_WIDTH})")
    if total > max_elements:
        problems.append(f"{total} elements exceed {'KLU_' if solver == 'klu' else ''}MAX_ELEMENTS={max_elements} "
                        + ("(1.02 M measured with KLU: 49 MB of netlist, 10-15 s to parse)" if solver == "klu" else
                           "(784-500-10 unfolded, 402,010 G elements, already needs ~2 s and 519 MB to load with "
                           "Sparse)"))
    return SizeEstimate(total, syn, width, pair, tuple(problems))


def check_size(network: Network, fold_inputs: bool = True, level: str = "ideal", clamp: bool = False,
               force: bool = False, solver: str = "sparse") -> SizeEstimate:
    """``estimate_size`` that raises ``NetlistTooLarge`` past the limits unless ``force``."""
    est = estimate_size(network, fold_inputs, level, clamp, solver)
    if not est.ok and not force:
        sizes = "-".join(map(str, getattr(network, "topology", network).sizes))
        raise NetlistTooLarge(f"netlist for {sizes} ({'folded' if fold_inputs else 'unfolded'} inputs, "
                              f"{level}, {solver}) refused: " + "; ".join(est.problems)
                              + ". Pass force=True (CLI: --force) to write it anyway.")
    return est


@dataclasses.dataclass(eq=False)
class Circuit:
    """An ordered list of elements that prints to SPICE text, with its name maps.

    ``u_node[i]``/``r_node[i]``: nodes of neuron i (inputs: ``r`` only when unfolded).
    The ``*_elements`` maps name what to alter; see docs/netlist-format.md section 8.
    """

    header: dict
    elements: list[Element]  # or plain (name, nodes, value) tuples
    options: dict | None
    state_lines: list[str]
    sizes: tuple[int, ...]
    level: str
    fold_inputs: bool
    g0: float
    neurons: list[int]  # non-input neurons, in order
    fold_neurons: list[int]  # neurons with an Ix element (folded inputs), in order
    fold_weights: np.ndarray  # (n_in, len(fold_neurons)) effective input weights for Ix
    synapse_srcs: list[tuple[int, list[int]]]  # (dst, [src, ...]) of the synapses written, in order

    # -- names --------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.sizes[0]

    @property
    def outputs(self) -> list[int]:
        n = sum(self.sizes)
        return list(range(n - self.sizes[-1], n))

    @functools.cached_property
    def u_node(self) -> dict[int, str]:
        return {i: nf.u_node(i) for i in self.neurons}

    @functools.cached_property
    def r_node(self) -> dict[int, str]:
        ins = [] if self.fold_inputs else list(range(self.n_in))
        return {i: nf.r_node(i) for i in ins + self.neurons}

    @functools.cached_property
    def weight_elements(self) -> dict[tuple[int, int], tuple[str, ...]]:
        """(src, dst) -> element names realising W[src, dst] (one, or a G+/G- pair)."""
        names = LEVELS[self.level].synapse_names
        return {(s, d): names(d, s) for d, srcs in self.synapse_srcs for s in srcs}

    @functools.cached_property
    def bias_elements(self) -> dict[int, str]:
        return {i: nf.bias_name(i) for i in self.neurons}

    @functools.cached_property
    def input_elements(self) -> dict[int, str]:
        """Folded inputs: neuron -> its ``Ix`` current source."""
        return {i: nf.folded_input_name(i) for i in self.fold_neurons}

    @functools.cached_property
    def input_sources(self) -> dict[int, str]:
        """Unfolded inputs: input k -> its ``Vx`` voltage source."""
        return {} if self.fold_inputs else {k: nf.input_source_name(k) for k in range(self.n_in)}

    @functools.cached_property
    def nudge_elements(self) -> dict[int, tuple[str, str]]:
        return {o: nf.nudge_names(o) for o in self.outputs}

    # -- values -------------------------------------------------------------------
    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {e[0].lower(): k for k, e in enumerate(self.elements)}

    def value(self, name: str) -> float | str:
        return self.elements[self._index[name.lower()]][2]

    def set_value(self, name: str, value: float) -> None:
        """Change one element's value in the text (a re-netlist; loaded circuits use alter)."""
        k = self._index[name.lower()]
        name, nodes, old = self.elements[k]
        if isinstance(old, str):
            raise ValueError(f"{name} is a behavioural source; its expression is not a value")
        self.elements[k] = (name, nodes, _finite(value, name))

    def input_currents(self, x) -> np.ndarray:
        """``Ix`` values for a batch x (B, n_in): (B, len(fold_neurons)), column = ``fold_neurons``.

        Per-example inputs of a folded circuit are these alters, no re-netlisting.
        """
        x = _as_batch(x, self.n_in, "x")
        return np.clip(x, 0.0, 1.0) @ self.fold_weights * self.g0

    def nudge_values(self, beta: float, target) -> tuple[np.ndarray, np.ndarray]:
        """(Gn gains (n_out,), In currents (B, n_out)) for a nudge of strength beta toward target."""
        y = _as_batch(target, self.sizes[-1], "target")
        return np.full(self.sizes[-1], nudge_gain(beta, self.g0)), nudge_current(beta, y, self.g0)

    # -- text ---------------------------------------------------------------------
    def to_spice(self, tail=()) -> str:
        """The netlist text; ``tail`` lines (analysis, .control) go right before ``.end``."""
        head = [f"* {nf.HEADER_TAG} " + " ".join(f"{k}={v}" for k, v in self.header.items()),
                _neuron_comment(self.sizes)]
        if self.options:
            head.append(".options " + " ".join(f"{k}={_opt(v)}" for k, v in self.options.items()))
        body = [f"{name} {nodes} {v if isinstance(v, str) else fmt(v)}" for name, nodes, v in self.elements]
        return "\n".join(head + body + self.state_lines + list(tail) + [".end", ""])

    def __str__(self) -> str:
        return self.to_spice()


def _opt(v) -> str:
    return fmt(v) if isinstance(v, float) else str(v)


def _neuron_comment(sizes) -> str:
    off = np.concatenate([[0], np.cumsum(sizes)])
    names = ["inputs"] + [f"hidden{l}" for l in range(1, len(sizes) - 1)] + ["outputs"]
    if len(sizes) == 3:
        names[1] = "hidden"
    return "* neurons: " + ", ".join(f"{n} {off[l]}-{off[l + 1] - 1}" for l, n in enumerate(names))


# -- validation (all before any work) ---------------------------------------------
def _finite(v, what: str) -> float:
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


def _as_batch(a, n: int, what: str) -> np.ndarray:
    """An (n,) or (B, n) array-like (numpy or torch) as a finite float64 (B, n) array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != n:
        raise ValueError(f"{what} must have shape ({n},) or (batch, {n}), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has non-finite entries")
    return a


def _one(a, n: int, what: str) -> np.ndarray:
    a = _as_batch(a, n, what)
    if a.shape[0] != 1:
        raise ValueError(f"a circuit holds one example: {what} must have shape ({n},) or (1, {n}), "
                         f"got {a.shape}; use Circuit.input_currents / alter for batches")
    return a[0]


def _level(level: str):
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
    return LEVELS[level]


def _device_arrays(device_arrays, network: Network):
    if device_arrays is None:
        raise ValueError("level='crossbar' needs device_arrays=(Gp, Gm, g_unit); "
                         "circuits.devices.weights_to_conductances computes them")
    Gp, Gm, g_unit = device_arrays
    n = network.topology.n
    Gp, Gm = (np.asarray(g, dtype=np.float64) for g in (Gp, Gm))
    if Gp.shape != (n, n) or Gm.shape != (n, n):
        raise ValueError(f"Gp and Gm must have shape ({n}, {n}), got {Gp.shape} and {Gm.shape}")
    g_unit = _finite(g_unit, "g_unit")
    m = network.topology.mask
    if g_unit <= 0 or not (np.isfinite(Gp[m]).all() and np.isfinite(Gm[m]).all()) \
            or (Gp[m] <= 0).any() or (Gm[m] <= 0).any():
        raise ValueError("crossbar conductances must be finite and > 0 on every connection, g_unit > 0")
    return Gp, Gm, g_unit


def build_circuit(network: Network, x=None, *, beta: float = 0.0, target=None, level: str = "ideal",
                  fold_inputs: bool = True, g0: float = 1.0, c: float = 1.0, clamp: float = 0.0,
                  state0=None, use: str | None = "nodeset", device_arrays=None,
                  options: dict | None = DEFAULT_OPTIONS, force: bool = False, dynamics: str = "leaky",
                  physical: dict | None = None) -> Circuit:
    """The circuit of ``network`` for one example ``x`` (n_in,) (None: all inputs 0).

    beta, target (n_out,): output nudge (beta = 0: the free phase, nudge elements at 0).
    clamp: stiff penalty clamp gain (e.g. 1e3; 0 = none). state0 (N,): initial state
    written as ``.nodeset`` (use="nodeset") or ``.ic`` (use="ic") lines. device_arrays:
    (Gp, Gm, g_unit) for level="crossbar" (N x N conductances in S, G per direction
    src -> dst). options: the ``.options`` line (None: none). Raises ``NetlistTooLarge``
    past the size limits unless ``force``. dynamics: "leaky" (EqProp's neuron) or "deep"
    (DEEP's: no leak, the self term g0 sum_k W_jk of ``blocks_deep``; needs clamp > 0).
    physical: level="physical" only, its non-idealities as a plain dict
    (``circuits.physical.PhysicalModel.to_netlist()``; None: all off).
    """
    blocks = _level(level)
    if physical is not None and level != "physical":
        raise ValueError(f"physical non-idealities need level='physical', got level={level!r}")
    if hasattr(blocks, "bind"):  # a level whose templates take parameters (blocks_physical)
        blocks = blocks.bind(physical, network.topology, fold_inputs)
    if dynamics not in DYNAMICS:
        raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    deep = dynamics == "deep"
    topo = network.topology
    n, n_in, n_out = topo.n, topo.n_in, topo.n_out
    g0, c, clamp, beta = (_finite(v, k) for v, k in ((g0, "g0"), (c, "c"), (clamp, "clamp"), (beta, "beta")))
    if g0 <= 0 or c <= 0 or clamp < 0:
        raise ValueError(f"need g0 > 0, c > 0, clamp >= 0; got g0={g0}, c={c}, clamp={clamp}")
    xv = np.zeros(n_in) if x is None else _one(x, n_in, "x")
    y_d = np.zeros(n_out)
    if beta != 0:
        if target is None:
            raise ValueError("a nudged circuit (beta != 0) needs a target")
        y_d = _one(target, n_out, "target")
    s0 = None if state0 is None else _one(state0, n, "state0")
    if use not in ("nodeset", "ic", None):
        raise ValueError(f"use must be 'nodeset', 'ic' or None, got {use!r}")
    W = network.W.detach().cpu().double().numpy()
    b = network.b.detach().cpu().double().numpy()
    arrays = _device_arrays(device_arrays, network) if level in DEVICE_LEVELS else None
    check_size(network, fold_inputs, level, clamp > 0, force, solver_of(options))

    mask = topo.mask
    rx = np.clip(xv, 0.0, 1.0)
    # only mask entries become elements, so only they may drive the folded currents
    W_eff = np.where(mask, blocks.effective_weights(W, arrays), 0.0)
    fold_neurons = np.nonzero(mask[:n_in, n_in:].any(axis=0))[0] + n_in if fold_inputs else np.zeros(0, int)
    fold_w = W_eff[:n_in][:, fold_neurons] if fold_inputs else np.zeros((n_in, 0))
    fold_cur = dict(zip(fold_neurons.tolist(), (rx @ fold_w * g0).tolist()))
    first_src = n_in if fold_inputs else 0
    outputs = set(range(n - n_out, n))
    gain, nudge_cur = nudge_gain(beta, g0), nudge_current(beta, y_d, g0)
    out_sum = blocks_deep.outgoing_sums(W_eff) if deep else None

    els: list[Element] = []
    if not fold_inputs:
        els.extend(blocks.input_source(k, float(rx[k])) for k in range(n_in))
    pairs: list[tuple[int, list[int]]] = []
    for i in range(n_in, n):
        if deep:
            els.extend(blocks_deep.neuron(i, g0, c, float(b[i]) * g0, clamp, g0 * float(out_sum[i])))
        else:
            els.extend(blocks.neuron(i, g0, c, float(b[i]) * g0, clamp))
        if i in fold_cur:
            els.append(blocks.folded_input(i, fold_cur[i]))
        srcs = (np.nonzero(mask[first_src:, i])[0] + first_src).tolist()
        els.extend(blocks.synapses(i, srcs, W, arrays, g0))
        pairs.append((i, srcs))
        if i in outputs:
            els.extend(blocks.nudge(i, gain, float(nudge_cur[i - (n - n_out)])))

    state_lines = []
    if s0 is not None and use is not None:
        if deep:
            u0 = blocks_deep.nodeset_state(s0, rx, n_in)
        else:
            u0 = s0 if use == "ic" else _leaky_state(s0, rx, W_eff, b, n_in, outputs, beta, y_d, clamp)
        for i in range(n_in, n):
            state_lines.append(f".{use} v({nf.u_node(i)})={fmt(u0[i])}")
            if use == "nodeset":  # rho nodes too: Newton then starts at the fixed point
                state_lines.append(f".nodeset v({nf.r_node(i)})={fmt(min(max(s0[i], 0.0), 1.0))}")

    header = dict(zip(nf.HEADER_KEYS, (FORMAT_VERSION, ",".join(map(str, topo.sizes)), level,
                                       "folded" if fold_inputs else "unfolded", int(topo.directed),
                                       fmt(g0), fmt(c), fmt(clamp)), strict=True))
    header.update(blocks.synapse_header(arrays))
    if deep:
        header["dynamics"] = blocks_deep.DYNAMICS
    return Circuit(header, els, None if options is None else dict(options), state_lines, tuple(topo.sizes),
                   level, fold_inputs, g0, list(range(n_in, n)), fold_neurons.tolist(), fold_w, pairs)


def _leaky_state(s0, rx, W, b, n_in, outputs, beta, y_d, clamp) -> np.ndarray:
    """The node voltages u that the leaky circuit has where rho(u) = rho(s0).

    A clipped (Euler) state sits at 0 or 1 where the circuit's u lies beyond, on the far
    side of the clamp's kink; a .nodeset there can send Newton to another of the
    energy's fixed points. u = drive (+ nudge), pulled toward rho by the clamp term,
    is the circuit's own equilibrium when s0 is the Euler fixed point.
    """
    r = np.clip(s0, 0.0, 1.0)
    r[:n_in] = rx
    u = r @ W + b
    out = np.array(sorted(outputs))
    u[out] += nudge_force(r[out], y_d, beta)
    u = (u + clamp * r) / (1.0 + clamp)
    u[:n_in] = rx
    return u


def folded_input_currents(network: Network, x, g0: float = 1.0, device_arrays=None):
    """(neurons, currents (B, len(neurons))): the ``Ix`` values of a batch x, no circuit needed."""
    topo = network.topology
    x = _as_batch(x, topo.n_in, "x")
    W = network.W.detach().cpu().double().numpy()
    if device_arrays is not None:
        W = np.where(topo.mask, blocks_crossbar.effective_weights(W, _device_arrays(device_arrays, network)), 0.0)
    neurons = np.nonzero(topo.mask[:topo.n_in, topo.n_in:].any(axis=0))[0] + topo.n_in
    return neurons.tolist(), np.clip(x, 0.0, 1.0) @ W[:topo.n_in][:, neurons] * float(g0)
