"""Netlist -> eqprop Network: the inverse of ``build_circuit`` (docs/netlist-format.md).

``read_netlist(path_or_text)`` parses (spice_parse) and maps the element records back to
W, b and the topology mask, plus what else the circuit holds (the inputs, the nudge, the
initial state). The mapping is strict: an element the format does not define, a node
that does not match its name, or a value the format fixes (leak, clamp, ammeters) that
was edited raises ``NetworkReadError`` at that element, because a network silently
different from the circuit is worse than no network.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import torch

from eqprop.dynamics import beta_from_gain
from eqprop.network import Network
from eqprop.topology import Topology

from . import blocks_physical
from . import netlist_format as nf
from .netlist_header import MAX_NEURONS, read_header
from .spice_errors import NetworkReadError
from .spice_parse import Element, Netlist, Pos, parse_netlist

__all__ = ["MAX_NEURONS", "ReadResult", "network_from_netlist", "read_netlist"]

_REL = 1e-12  # agreement asked of values the format derives from the header (1/g0 written as repr)
# element keys (lowercase prefixes, as ngspice sees names) of the kinds the reader treats apart
_CN, _RL, _BR, _IB, _GC, _IX, _GW = (k.key for k in (nf.CAPACITOR, nf.LEAK, nf.ACTIVATION, nf.BIAS, nf.CLAMP,
                                                     nf.FOLDED_INPUT, nf.SYNAPSE))
_RP, _RM, _FP, _FM = (k.key for k in (nf.DEVICE_P, nf.DEVICE_M, nf.COLUMN_GAIN_P, nf.COLUMN_GAIN_M))
_GN, _IN, _VX = nf.NUDGE_G.key, nf.NUDGE_I.key, nf.INPUT_SOURCE.key
_GP = blocks_physical.DEVICE_P.key  # the physical level's G+ device (reader_physical)
_PHYSICAL_NAME = re.compile(r"g[pm]\d+_\d+|xn\d+|gt\d+|d[hl]\d+|rs\d+|er\d+|vr[hl]|vos")  # names only that level writes


@dataclasses.dataclass(eq=False)
class ReadResult:
    """A network read back from a netlist, with everything else the circuit holds.

    ``W_circuit[src, dst]`` is the weight as the circuit realises it (float64; at crossbar
    level (G+ - G-)/g_unit, possibly asymmetric). ``network`` holds it as a Network (see
    ``asymmetric`` of ``read_netlist``). Folded netlists lack the input weights: their
    rows of W/mask are zero/False and ``input_drive[i] = sum_k W[k, i] rho(x_k)`` (the
    ``Ix`` current / g0) stands in for them; ``notes`` says so.
    """

    network: Network
    W_circuit: np.ndarray
    level: str  # "ideal" | "crossbar" | "physical"
    inputs: str  # "unfolded" | "folded"
    g0: float
    c: float
    clamp: float
    g_unit: float | None  # crossbar and physical only
    conductances: tuple[np.ndarray, np.ndarray] | None  # crossbar, physical: (Gp, Gm)[src, dst] in S, 0 where absent
    x: np.ndarray | None  # unfolded: rho(x) held by the Vx sources (x clipped to [0, 1])
    input_drive: np.ndarray | None  # folded: (N,) Ix/g0, 0 where no Ix
    beta: float  # 0.0 for a free-phase netlist
    target: np.ndarray | None  # (n_out,) y_d; None when beta == 0 (the netlist does not hold it)
    initial_use: str | None  # "nodeset" | "ic" | None
    initial_u: np.ndarray | None  # (N,) v(u<i>) values given, NaN elsewhere (nodeset: u0, ic: s0)
    initial_rho: np.ndarray | None  # (N,) v(r<i>) values of .nodeset lines, NaN elsewhere
    header: dict[str, str]  # as written ({} when there was none)
    notes: list[str]  # what could not be recovered or was changed on the way
    netlist: Netlist  # every parsed record (options, analyses, positions)
    # physical level: the non-idealities found, as the plain dict build_circuit(physical=...) takes
    # (blocks_physical.OFF's keys; a user neuron's neuron_lib is the file its .subckt was read from)
    physical: dict | None = None

    @property
    def folded(self) -> bool:
        return self.inputs == "folded"


def _close(a: float, b: float) -> bool:
    return bool(np.isfinite(a) and np.isfinite(b) and abs(a - b) <= _REL * max(abs(a), abs(b)))


def _format_name(name: str, split):
    """``split(name)``, or None for a name the format never writes (non-ASCII digits, indices
    too long for int(): neither can be one of its element or node names)."""
    return split(name) if name.isascii() and len(name) <= 64 else None


class _Reader:
    def __init__(self, net: Netlist, sizes, directed):
        self.net, self.notes = net, []
        h = read_header(net, sizes, directed)
        self.header, self.header_pos, self.sizes, self.directed = h.values, h.pos, h.sizes, h.directed

    def fail(self, message: str, pos: Pos | None = None, cls=NetworkReadError):
        self.net.error(cls, message, pos or Pos(self.net.file, 1, 1))

    # -- header (line 1) ---------------------------------------------------------------
    def number(self, key: str, default: float | None, positive: bool = False) -> float | None:
        if key not in self.header:
            return default
        try:
            v = float(self.header[key])
        except ValueError:
            v = float("nan")
        if not np.isfinite(v) or v < 0 or (positive and v == 0):
            self.fail(f"header {key}={self.header[key]} is not a {'positive' if positive else 'non-negative'} "
                      f"number", self.header_pos[key])
        return v

    # -- elements ----------------------------------------------------------------------
    def classify(self) -> dict[tuple, Element]:
        """(prefix, index...) -> element, with nodes checked against the name."""
        out = {}
        for e in self.net.elements:
            parsed = _format_name(e.name, nf.split_element_name)
            if parsed is None:
                hint = {"G": f"a G element here is a synapse {nf.SYNAPSE.name('<dst>', '<src>')}, a clamp "
                             f"{nf.CLAMP.name('<i>')} or a nudge {nf.NUDGE_G.name('<o>')}"}.get(
                    e.kind, "docs/netlist-format.md section 4 lists the elements")
                if not self.header and _PHYSICAL_NAME.fullmatch(e.name.lower()):
                    hint = f"it looks {blocks_physical.LEVEL}-level: such netlists are read with their header line"
                self.fail(f"element '{e.name}' is not part of the {nf.HEADER_TAG} format ({hint})", e.pos)
            key, idx = parsed
            nodes, what = nf.ELEMENTS[key].nodes, nf.ELEMENTS[key].what
            n = sum(self.sizes)
            for i in idx:
                if i >= n:
                    self.fail(f"{what} '{e.name}' refers to neuron {i}, but sizes {self.sizes} have {n} neurons "
                              f"(0..{n - 1})", e.pos)
            want = nodes.format(*idx).split()
            if [x.lower() for x in e.nodes] != want:
                self.fail(f"'{e.name}' is not a {what} pattern: expected nodes {' '.join(want)}, got "
                          f"{' '.join(e.nodes)}", e.pos)
            if (any(k != "ic" or e.kind != "C" for k in e.params) or e.waveform is not None or e.flags
                    or (e.ref is not None and e.kind in "RC")):
                self.fail(f"'{e.name}': parameters, models and waveforms are not part of the format", e.pos)
            out[(key,) + idx] = e
        return out

    def value(self, els, key, what_if_missing: str | None = None) -> float | None:
        e = els.get(key)
        if e is None and what_if_missing is not None:
            self.fail(what_if_missing)
        return None if e is None else e.value

    def check(self, els, key, ok: bool, message: str) -> None:
        if not ok:
            self.fail(f"'{els[key].name}' {message}", els[key].pos)

    def scaled(self, e: Element, value: float, what: str) -> float:
        """``value`` (derived from e's value) if finite; refuses e where a division overflowed."""
        if not np.isfinite(value):
            self.fail(f"'{e.name}' = {e.value!r} gives {what} = {value!r}: not a finite number", e.pos)
        return float(value)

    def roles(self, els, n_in: int, n: int, inputs: str) -> None:
        """Which indices may appear where: u nodes are non-inputs', Vx inputs', Gn/In outputs'."""
        outputs = range(n - self.sizes[-1], n)
        for key, e in els.items():
            prefix, first = key[0], key[1]
            if prefix == _VX and (first >= n_in or inputs == "folded"):
                self.fail(f"'{e.name}': {nf.INPUT_SOURCE.prefix} sources hold the inputs 0..{n_in - 1} of an "
                          "unfolded netlist", e.pos)
            if prefix != _VX and first < n_in:
                self.fail(f"'{e.name}' refers to input neuron {first}: inputs are clamped and have no neuron "
                          f"block, bias or synapses into them", e.pos)
            if prefix in (_GN, _IN) and first not in outputs:
                self.fail(f"'{e.name}': only output neurons ({outputs.start}..{n - 1}) have a nudge", e.pos)
            if len(key) == 3 and key[2] < n_in and inputs == "folded":
                self.fail(f"'{e.name}' comes from input {key[2]}, but the netlist is folded (inputs=folded): "
                          f"it has no r{key[2]} node", e.pos)
            if len(key) == 3 and key[1] == key[2]:
                self.fail(f"'{e.name}' connects neuron {key[1]} to itself", e.pos)

    def build(self, els: dict, asymmetric: str, dtype) -> ReadResult:
        n_in, n = self.sizes[0], sum(self.sizes)
        kinds = {k[0] for k in els}
        level = self.header.get("level") or ("crossbar" if kinds & {_RP, _RM, _FP, _FM} else "ideal")
        inputs = self.inputs_form(kinds)
        for key, e in els.items():
            if key[0] in ({k.key for k in nf.CROSSBAR_KINDS} if level == "ideal" else {_GW}):
                self.fail(f"'{e.name}' is a {level == 'ideal' and 'crossbar' or 'ideal'}-level synapse element "
                          f"in a {level}-level netlist", e.pos)
        self.roles(els, n_in, n, inputs)
        first = n_in  # the first neuron's block sets g0/c/clamp when there is no header
        g0 = self.number("g0", None, positive=True)
        if g0 is None:
            r_leak = self.value(els, (_RL, first), f"neuron {first} has no {nf.LEAK.name(first)}")
            self.check(els, (_RL, first), r_leak > 0, "must be a positive resistance (1/g0)")
            g0 = self.scaled(els[_RL, first], 1.0 / r_leak, "g0 = 1/R")
        c = self.number("c", None, positive=True)
        if c is None:
            c = self.value(els, (_CN, first), f"neuron {first} has no {nf.cap_name(first)}")
            self.check(els, (_CN, first), c > 0, "must be a positive capacitance (c)")
        clamp = self.number("clamp", None)
        if clamp is None:
            gc = els.get((_GC, first))
            clamp = 0.0 if gc is None else self.scaled(gc, gc.value / g0, "clamp = gain/g0")
        for i in range(n_in, n):
            self.neuron(els, i, g0, c, clamp)
        b, x, drive = self.biases_and_inputs(els, inputs, g0)
        W, mask, conductances, g_unit = self.weights(els, level, n, g0)
        return self.result(els, level, inputs, (g0, c, clamp, g_unit), b, x, drive, W, mask, conductances,
                           asymmetric, dtype)

    def inputs_form(self, kinds) -> str:
        return self.header.get("inputs") or ("unfolded" if _VX in kinds else "folded")

    def biases_and_inputs(self, els, inputs: str, g0: float):
        """(b, x, input_drive) from the Ib, Vx and Ix elements (every neuron's Ib is known to be there)."""
        n_in, n = self.sizes[0], sum(self.sizes)
        b = np.zeros(n)
        for i in range(n_in, n):
            b[i] = self.scaled(els[_IB, i], els[_IB, i].value / g0, f"b[{i}] (bias/g0)")
        x = drive = None
        if inputs == "unfolded":  # before the (N, N) matrices: every input must be there
            x = np.array([self.value(els, (_VX, k), f"input {k} has no {nf.input_source_name(k)} source")
                          for k in range(n_in)])
            if any(k[0] == _IX for k in els):
                self.fail(f"an unfolded netlist has no {nf.FOLDED_INPUT.prefix} ({nf.FOLDED_INPUT.what}) elements",
                          next(e.pos for k, e in els.items() if k[0] == _IX))
        else:
            drive = np.zeros(n)
            for key, e in els.items():
                if key[0] == _IX:
                    drive[key[1]] = self.scaled(e, e.value / g0, f"input drive[{key[1]}] (Ix/g0)")
            self.notes.append("inputs are folded: the input weights are not in the netlist (rows 0.."
                              f"{n_in - 1} of W and mask are zero/False); input_drive holds their summed "
                              "effect Ix/g0 per neuron")
        return b, x, drive

    def result(self, els, level, inputs, units, b, x, drive, W, mask, conductances, asymmetric, dtype,
               physical: dict | None = None) -> ReadResult:
        """The nudge, the symmetry and the initial state, then the network: what every level shares."""
        g0, c, clamp, g_unit = units
        n_in, n = self.sizes[0], sum(self.sizes)
        beta, target = self.nudge(els, n, g0)
        W_circuit = W.copy()
        W, mask, directed = self.symmetry(els, W, mask, n_in, inputs, asymmetric, level)
        try:
            topo = Topology(self.sizes, mask, directed, info={"kind": "netlist", "file": self.net.file})
            network = Network(topo, torch.tensor(W, dtype=dtype), torch.tensor(b, dtype=dtype))
        except ValueError as e:  # e.g. float32 overflow of a float64 weight
            self.fail(f"the netlist's values do not make a network: {e}")
        use, u0, rho0 = self.initial(n, n_in)
        return ReadResult(network, W_circuit, level, inputs, g0, c, clamp, g_unit, conductances, x, drive, beta,
                          target, use, u0, rho0, dict(self.header), self.notes, self.net, physical)

    def neuron(self, els, i: int, g0: float, c: float, clamp: float) -> None:
        """Neuron i's block is complete and holds the values the header implies."""
        for prefix in (_CN, _RL, _BR, _IB) + ((_GC,) if clamp > 0 else ()):
            if (prefix, i) not in els:
                kind = nf.ELEMENTS[prefix]
                self.fail(f"neuron {i} has no {kind.name(i)} ({kind.what}) element")
        cap, leak, rho = els[_CN, i], els[_RL, i], els[_BR, i]
        self.check(els, (_CN, i), _close(cap.value, c), f"= {cap.value} differs from c={c}")
        self.check(els, (_RL, i), leak.value > 0 and _close(1.0 / leak.value, g0), f"is no leak of g0={g0} (1/g0 ohm)")
        clamp_text = nf.activation_expr(i)
        self.check(els, (_BR, i), rho.expr_kind == "v" and re.sub(r"\s", "", rho.expr.lower()) == clamp_text,
                   f"is not the ideal clamp v={clamp_text}")
        if (_GC, i) in els:
            self.check(els, (_GC, i), clamp > 0 and _close(els[_GC, i].value, clamp * g0),
                       f"gain differs from clamp*g0 = {clamp * g0}")

    def weights(self, els, level, n, g0):
        W, mask = np.zeros((n, n)), np.zeros((n, n), bool)
        if level == "ideal":
            for key, e in els.items():
                if key[0] == _GW:
                    W[key[2], key[1]] = self.scaled(e, e.value / g0, f"W[{key[2]},{key[1]}] (gain/g0)")
                    mask[key[2], key[1]] = True
            return W, mask, None, None
        g_unit = self.number("g_unit", None, positive=True)
        Gp, Gm = np.zeros((n, n)), np.zeros((n, n))
        for key, e in els.items():
            if key[0] not in (_RP, _RM):
                continue
            dst, src = key[1], key[2]
            partner = nf.DEVICE_M if key[0] == _RP else nf.DEVICE_P
            if (partner.key, dst, src) not in els:
                self.fail(f"'{e.name}' has no partner {partner.name(dst, src)}: a crossbar weight is a "
                          f"G+/G- pair", e.pos)
            self.check(els, key, e.value > 0, "must be a positive resistance (1/G)")
            (Gp if key[0] == _RP else Gm)[src, dst] = self.scaled(e, 1.0 / e.value, "its conductance 1/R")
            mask[src, dst] = True
            for part in (nf.AMMETER_P, nf.AMMETER_M, nf.COLUMN_GAIN_P, nf.COLUMN_GAIN_M):
                if (part.key, dst) not in els:
                    self.fail(f"column {dst} has device '{e.name}' but no {part.name(dst)} ({part.what})", e.pos)
            if g_unit is None:  # no header: the column gain g0/g_unit tells it
                self.check(els, (_FP, dst), els[_FP, dst].value > 0, "must be positive (g0/g_unit)")
                g_unit = g0 / els[_FP, dst].value
                self.check(els, (_FP, dst), np.isfinite(g_unit) and g_unit > 0,
                           f"gives g_unit = g0/gain = {g_unit!r}: not a positive finite number")
            for (gain, ammeter), sign in zip(nf.COLUMN_PAIRS, (1.0, -1.0)):
                self.check(els, (gain.key, dst), _close(els[gain.key, dst].value, sign * g0 / g_unit)
                           and els[gain.key, dst].ref.lower() == ammeter.name(dst).lower(),
                           f"should be '{ammeter.name(dst)} {sign * g0 / g_unit!r}' (gain ±g0/g_unit)")
                self.check(els, (ammeter.key, dst), els[ammeter.key, dst].value == 0.0,
                           "must be 0.0 V: it is the column's virtual ground")
        W = (Gp - Gm) / g_unit
        if not np.isfinite(W).all():
            src, dst = (int(v) for v in np.argwhere(~np.isfinite(W))[0])
            e = els[_RP, dst, src]
            self.fail(f"'{e.name}' and its partner give W[{src},{dst}] = (Gp - Gm)/g_unit = {W[src, dst]!r}: "
                      "not a finite number", e.pos)
        return W, mask, (Gp, Gm), g_unit

    def nudge(self, els, n, g0) -> tuple[float, np.ndarray | None]:
        outputs = list(range(n - self.sizes[-1], n))
        have = [o for o in outputs if (_GN, o) in els or (_IN, o) in els]
        if not have:
            return 0.0, None
        for o in outputs:
            if (_GN, o) not in els or (_IN, o) not in els:
                self.fail(f"output {o} lacks its nudge pair {'/'.join(nf.nudge_names(o))} "
                          f"(present for output {have[0]})")
        gains = {o: els[_GN, o].value for o in outputs}
        beta = self.scaled(els[_GN, outputs[0]], beta_from_gain(gains[outputs[0]], g0), "beta = -gain/(2 g0)")
        for o in outputs:
            self.check(els, (_GN, o), _close(gains[o], gains[outputs[0]]),
                       f"gain differs from {nf.NUDGE_G.name(outputs[0])}'s: one beta for all outputs")
        if beta == 0.0:
            for o in outputs:
                self.check(els, (_IN, o), els[_IN, o].value == 0.0, "must be 0.0 when the nudge gain is 0")
            return 0.0, None
        # In/(-Gn) = nudge_current/-nudge_gain: the same product beta g0 divided out, so y_d comes back exactly
        return beta, np.array([self.scaled(els[_IN, o], els[_IN, o].value / -els[_GN, o].value, f"target[{o}]")
                               for o in outputs])

    def symmetry(self, els, W, mask, n_in, inputs, asymmetric, level):
        """(W, mask, directed) for the Network: undirected nets get their input columns back by
        symmetry (never written, section 4.3); weights whose two directions differ follow
        ``asymmetric``."""
        if self.directed:
            return W, mask, True
        mask, W = mask.copy(), W.copy()
        mask[n_in:, :n_in] = mask[:n_in, n_in:].T
        W[n_in:, :n_in] = W[:n_in, n_in:].T
        missing = np.argwhere(mask & ~mask.T)
        if len(missing):
            src, dst = (int(v) for v in missing[0])
            e = self.synapse(els, src, dst, level)
            self.fail(f"'{e.name}' (synapse {src} -> {dst}) has no reverse synapse {dst} -> {src}: a directed=0 "
                      f"netlist writes both directions", e.pos)
        diff = np.argwhere(np.triu(W != W.T))
        if not len(diff):
            return W, mask, False
        src, dst = (int(v) for v in diff[0])
        e, rev = self.synapse(els, src, dst, level), self.synapse(els, dst, src, level)
        what = (f"{len(diff)} weight(s) differ between their two directions, e.g. W[{src},{dst}] = "
                f"{float(W[src, dst])!r} ('{e.name}') vs W[{dst},{src}] = {float(W[dst, src])!r} ('{rev.name}', "
                f"line {rev.pos.line})")
        if asymmetric == "error":
            self.fail(what + "; pass asymmetric='directed' or 'average' to read it", e.pos)
        if asymmetric == "average":
            self.notes.append(what + ": the network holds their mean (W_circuit keeps both)")
            return (W + W.T) / 2.0, mask, False
        self.notes.append(what + ": read as a directed network (topology.directed=True), as the circuit is")
        mask[n_in:, :n_in] = False  # nothing drives a clamped input
        W[n_in:, :n_in] = 0.0
        return W, mask, True

    def synapse(self, els, src, dst, level) -> Element:
        key = ({"ideal": _GW, "crossbar": _RP}.get(level, _GP), dst, src)
        if key not in els:  # a direction restored by symmetry (into an input): name the written one
            key = (key[0], src, dst)
        return els[key]

    def initial(self, n, n_in):
        given = self.net.ic or self.net.nodeset
        if not given:
            return None, None, None
        u, rho = np.full(n, np.nan), np.full(n, np.nan)
        for nv in given:
            node = _format_name(nv.node, nf.split_neuron_node)
            if node is None or node[1] >= n or (node[0] == nf.STATE_NODE and node[1] < n_in):
                self.fail(f"v({nv.node}): no such neuron node ({nf.u_node('<i>')} for non-inputs, "
                          f"{nf.r_node('<i>')}, i < {n})", nv.pos)
            (u if node[0] == nf.STATE_NODE else rho)[node[1]] = nv.value
        return ("ic" if self.net.ic else "nodeset"), u, rho


def network_from_netlist(netlist: Netlist, *, sizes=None, directed: bool | None = None,
                         asymmetric: str = "directed", dtype=torch.float64) -> ReadResult:
    """Map parsed records to a network; see ``read_netlist``."""
    if asymmetric not in ("directed", "average", "error"):
        raise ValueError(f"asymmetric must be 'directed', 'average' or 'error', got {asymmetric!r}")
    reader = _Reader(netlist, sizes, directed)
    if reader.header.get("level") == blocks_physical.LEVEL:
        from .reader_physical import read_physical  # it builds on _Reader
        return read_physical(reader, asymmetric, dtype)
    return reader.build(reader.classify(), asymmetric, dtype)


def read_netlist(source, *, sizes=None, directed: bool | None = None, asymmetric: str = "directed",
                 dtype=torch.float64, base_dir=None, name: str | None = None) -> ReadResult:
    """Read an eqprop-spice netlist (docs/netlist-format.md) back into a Network.

    ``source``: a path (``Path`` or a str without a newline) or the netlist text.
    ``sizes``/``directed``: needed when line 1 holds no ``* eqprop-spice`` header (then
    level, inputs, g0, c, clamp and g_unit are inferred from the elements); checked
    against the header otherwise. ``asymmetric``: what to do when the two directions of an
    undirected (directed=0) weight differ, as crossbar device pairs may: "directed" (a
    directed network with exactly the circuit's weights), "average" or "error".
    ``dtype``: of W and b (float64 keeps every written value exactly).
    Raises ``NetlistSyntaxError``, ``UnsupportedNetlistError`` or ``NetworkReadError``
    (all ``NetlistError``, a ValueError), each naming file, line and column.
    """
    net = parse_netlist(source, base_dir=base_dir, name=name)
    return network_from_netlist(net, sizes=sizes, directed=directed, asymmetric=asymmetric, dtype=dtype)
