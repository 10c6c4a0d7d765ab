"""Block templates of the ``physical`` level: the crossbar with the non-idealities of a real circuit.

Each weight direction is a device pair (G+, G-) into two columns of the destination
neuron, as at crossbar level, but every device is a conductance element whose value is
its conductance G (S; alterable as ``@name[gain]``), and the parts the crossbar level
keeps ideal can be made physical, each by a parameter (``circuits.physical.PhysicalModel``,
passed here as a plain dict; docs/physical.md draws each circuit):

* activation: the behavioural clamp, or u -> Rs -> node a<i> clamped by two Shockley
  diodes to rails, copied to rho (r<i>) by a unity buffer (rho drives the devices);
* device read nonlinearity I = G V0 sinh(V/V0): the device's VCCS reads an auxiliary
  node f.. = V0 sinh(V/V0) of its own terminal voltage;
* wire resistance per cell along rows (from r<src> through the cells of src's row, in
  destination order) and along columns (through the cells, src in order, into the TIA);
  parasitic capacitance on every wire node;
* column TIA: ideal (zero-volt ammeter + current gain, the crossbar level's) or an op-amp
  macro-model (DC gain, a single pole at gbw/gain, output swing, input offset) with
  feedback resistor 1/g_unit; a transconductance g0 takes the two outputs' difference
  into u<dst>;
* nudge: the ideal level's VCCS on rho, or a conductance 2 beta g0 from u to a target
  voltage y_d in its Norton form (the same ``Gn``/``In`` names: altered in place).

With every non-ideality off the circuit equals the crossbar level with the ideal neuron,
hence the ideal level (effective weight (G+ - G-)/g_unit) to solver precision.
"""
from __future__ import annotations

import math

import numpy as np

from . import blocks_crossbar, blocks_ideal
from . import netlist_format as nf
from .blocks_ideal import Element, fmt

LEVEL = "physical"
DIODE_MODEL = "dclamp"
# the op-amp macro-model's internal pole network (Ga into Ra || Ca): a model of the gain, not of
# where energy goes; circuits.physical_measure leaves these out of the energy
MACRO_MODEL_PREFIXES = ("Ga", "Ra", "Ca")
RAIL_HIGH, RAIL_LOW, OFFSET_NODE = "vrh", "vrl", "vos"

# the elements only this level writes (the shared ones come from netlist_format)
# (nodes: row tap, column tap, then the controlling pair: the same two, or the read node f..)
DEVICE_P = nf.ElementKind("Gp", 2, "x 0 x 0", "G+ device (conductance)")
DEVICE_M = nf.ElementKind("Gm", 2, "x 0 x 0", "G- device (conductance)")

input_source = blocks_ideal.input_source
folded_input = blocks_ideal.folded_input
effective_weights = blocks_crossbar.effective_weights
synapse_header = blocks_crossbar.synapse_header


def synapse_names(dst: int, src: int) -> tuple[str, str]:
    return DEVICE_P.name(dst, src), DEVICE_M.name(dst, src)


def synapse_count(n_synapses: int, n_columns: int) -> int:
    """Elements without wire or read non-idealities (each adds up to 2 per device)."""
    return blocks_crossbar.synapse_count(n_synapses, n_columns)


def bind(model: dict | None, topology, fold_inputs: bool) -> "PhysicalBlocks":
    """The block templates for one model and topology (rows need each source's destinations)."""
    return PhysicalBlocks(dict(OFF if model is None else model), topology, fold_inputs)


OFF = {"activation": "ideal", "diode_is": 1e-14, "diode_n": 1.0, "diode_rs": 1e4, "v_low": 0.0, "v_high": 1.0,
       "tia_gain": math.inf, "tia_gbw": math.inf, "tia_swing": math.inf, "tia_offset": 0.0, "r_row": 0.0,
       "r_col": 0.0, "c_wire": 0.0, "read_v0": math.inf, "nudge": "current", "neuron_lib": "", "neuron_subckt": "",
       "neuron_pins": ()}
# a user neuron's pin roles -> the node of neuron i each connects to (docs/tutorial-subckt.md)
PIN_NODES = {"state": nf.u_node, "activation": nf.r_node, "ground": lambda i: "0", "input": lambda i: f"in{i}",
             "bias": lambda i: f"bi{i}", "nudge": lambda i: f"nu{i}"}


class PhysicalBlocks:
    """This level's templates, bound to one non-ideality model (a dict of OFF's keys)."""

    LEVEL = LEVEL
    input_source = staticmethod(input_source)
    effective_weights = staticmethod(effective_weights)
    synapse_header = staticmethod(synapse_header)
    synapse_names = staticmethod(synapse_names)
    synapse_count = staticmethod(synapse_count)

    def __init__(self, model: dict, topology, fold_inputs: bool):
        unknown = set(model) - set(OFF)
        if unknown:
            raise ValueError(f"physical level: unknown model keys {sorted(unknown)}; known: {sorted(OFF)}")
        self.m = {**OFF, **model}
        self.n_in = topology.n_in
        self.first_neuron = topology.n_in
        first_src = topology.n_in if fold_inputs else 0
        mask = topology.mask
        # along src's row the cells come in destination order: (dst, +), (dst, -) for each dst
        self.prev_row: dict[tuple[int, int], str] = {}
        for src in range(first_src, topology.n):
            prev = nf.r_node(src)
            for dst in np.nonzero(mask[src, topology.n_in:])[0] + topology.n_in:
                self.prev_row[(src, int(dst))] = prev
                prev = self._row_tap("m", int(dst), src)
        self.tia_ideal = math.isinf(self.m["tia_gain"])

    # -- nodes ---------------------------------------------------------------------------
    def _row_tap(self, sign: str, dst: int, src: int) -> str:
        return f"x{sign}{dst}_{src}" if self.m["r_row"] > 0 else nf.r_node(src)

    def _col_tap(self, sign: str, dst: int, src: int) -> str:
        return f"y{sign}{dst}_{src}" if self.m["r_col"] > 0 else nf.column_nodes(dst)["pm".index(sign)]

    # -- neurons -------------------------------------------------------------------------
    def _pin(self, role: str, i: int) -> str:
        """The node a current of this role enters: the user neuron's declared pin, else u<i>."""
        pins = self.m["neuron_pins"] if self.m["activation"] == "subckt" else ()
        return PIN_NODES[role](i) if role in pins else nf.u_node(i)

    def neuron(self, i: int, g0: float, c: float, bias_current: float, clamp: float) -> list[Element]:
        m = self.m
        els = self._shared() if i == self.first_neuron else []
        base = blocks_ideal.neuron(i, g0, c, bias_current, clamp)
        if m["activation"] == "ideal":
            return els + base
        if m["activation"] == "subckt":  # the user's neuron replaces the clamp; C and leak stay (u's initial state)
            base = [e for e in base if e.name != nf.ACTIVATION.name(i)]
            bias = nf.BIAS.name(i)
            base = [Element(e.name, f"0 {self._pin('bias', i)}", e.value) if e.name == bias else e for e in base]
            pins = " ".join(PIN_NODES[role](i) for role in m["neuron_pins"])
            return els + base + [Element(f"Xn{i}", pins, m["neuron_subckt"])]
        a = f"a{i}"
        diode = [Element(f"Rs{i}", f"{nf.u_node(i)} {a}", float(m["diode_rs"])),
                 Element(f"Dh{i}", f"{a} {RAIL_HIGH}", DIODE_MODEL),
                 Element(f"Dl{i}", f"{RAIL_LOW} {a}", DIODE_MODEL),
                 Element(nf.ACTIVATION.name(i).replace("B", "E", 1), f"{nf.r_node(i)} 0 {a} 0", 1.0)]
        return els + [e for e in base if e.name != nf.ACTIVATION.name(i)] + diode

    def _shared(self) -> list[Element]:
        """Elements the whole circuit shares: the diode model and rails, the TIAs' offset source."""
        m, els = self.m, []
        if m["activation"] == "subckt":
            els.append(Element(".include", m["neuron_lib"], ""))
        if m["activation"] == "diode":
            els += [Element(".model", DIODE_MODEL, f"D(is={fmt(m['diode_is'])} n={fmt(m['diode_n'])})"),
                    Element("Vrh", f"{RAIL_HIGH} 0", float(m["v_high"])),
                    Element("Vrl", f"{RAIL_LOW} 0", float(m["v_low"]))]
        if not self.tia_ideal:
            els.append(Element("Vos", f"{OFFSET_NODE} 0", float(m["tia_offset"])))
        return els

    def folded_input(self, i: int, current: float) -> Element:
        e = folded_input(i, current)
        return Element(e.name, f"0 {self._pin('input', i)}", e.value)

    def nudge(self, o: int, gain: float, current: float) -> list[Element]:
        els = blocks_ideal.nudge(o, gain, current)
        into = self._pin("nudge", o)
        els = [Element(e.name, e.nodes.replace(f"0 {nf.u_node(o)}", f"0 {into}", 1), e.value) for e in els]
        if self.m["nudge"] == "conductance":
            # -gain from u itself: a conductance 2 beta g0 to ground, In = 2 beta g0 y_d: the Norton
            # form of that conductance to a source y_d (alterable, and zero in the free phase)
            u = nf.u_node(o)
            els[0] = Element(els[0].name, f"0 {u} {u} 0", gain)
        return els

    # -- synapses ------------------------------------------------------------------------
    def synapses(self, dst: int, srcs: list[int], W: np.ndarray, arrays, g0: float) -> list:
        if not srcs:
            return []
        Gp, Gm, g_unit = arrays
        els = self._tia(dst, g0, g_unit)
        m = self.m
        for sign, G in (("p", Gp), ("m", Gm)):
            kind = DEVICE_P if sign == "p" else DEVICE_M
            for k, src in enumerate(srcs):
                row, col = self._row_tap(sign, dst, src), self._col_tap(sign, dst, src)
                if m["r_row"] > 0:
                    prev = self.prev_row[(src, dst)] if sign == "p" else self._row_tap("p", dst, src)
                    els.append(Element(f"Rx{sign}{dst}_{src}", f"{prev} {row}", float(m["r_row"])))
                if m["r_col"] > 0:  # towards the TIA: this cell's tap to the next one (or the TIA input)
                    nxt = self._col_tap(sign, dst, srcs[k + 1]) if k + 1 < len(srcs) else nf.column_nodes(dst)[
                        "pm".index(sign)]
                    els.append(Element(f"Ry{sign}{dst}_{src}", f"{col} {nxt}", float(m["r_col"])))
                if m["c_wire"] > 0:
                    # row tap, then column tap (a set's order would change with the string hash seed)
                    for node in [n for n in (row, col) if n not in (nf.r_node(src), *nf.column_nodes(dst))]:
                        els.append(Element(f"C{node}", f"{node} 0", float(m["c_wire"])))
                g = float(G[src, dst])
                if math.isinf(m["read_v0"]):
                    els.append((kind.name(dst, src), f"{row} {col} {row} {col}", g))
                else:  # the VCCS reads V0 sinh(V/V0) of its own terminal voltage from an auxiliary node
                    f, v0 = f"f{sign}{dst}_{src}", fmt(m["read_v0"])
                    els.append(Element(f"Bf{sign}{dst}_{src}", f"{f} 0", f"v={v0}*sinh(v({row},{col})/{v0})"))
                    els.append((kind.name(dst, src), f"{row} {col} {f} 0", g))
        return els

    def _tia(self, dst: int, g0: float, g_unit: float) -> list:
        """The two column TIAs of neuron dst and the current they inject into u<dst>."""
        if self.tia_ideal:  # the crossbar level's: zero-volt ammeters and current gains
            return [
                Element(nf.AMMETER_P.name(dst), nf.AMMETER_P.nodes_for(dst), 0.0),
                Element(nf.AMMETER_M.name(dst), nf.AMMETER_M.nodes_for(dst), 0.0),
                Element(nf.COLUMN_GAIN_P.name(dst), nf.column_gain_nodes(nf.COLUMN_GAIN_P, dst), g0 / g_unit),
                Element(nf.COLUMN_GAIN_M.name(dst), nf.column_gain_nodes(nf.COLUMN_GAIN_M, dst), -g0 / g_unit)]
        m, els = self.m, []
        outs = {}
        for sign, cin in zip("pm", nf.column_nodes(dst)):
            out, pole = f"o{sign}{dst}", f"t{sign}{dst}"
            outs[sign] = out
            els.append(Element(f"Rf{sign}{dst}", f"{out} {cin}", 1.0 / g_unit))
            if self.c_wire_on:
                els.append(Element(f"C{cin}", f"{cin} 0", float(m["c_wire"])))
            if math.isinf(m["tia_gbw"]) and math.isinf(m["tia_swing"]):
                els.append(Element(f"Ea{sign}{dst}", f"{out} 0 {OFFSET_NODE} {cin}", float(m["tia_gain"])))
                continue
            # gm = 1 S into R = gain Ohm: DC gain `gain`; C = 1/(2 pi gbw) puts the pole at gbw/gain
            els.append(Element(f"Ga{sign}{dst}", f"0 {pole} {OFFSET_NODE} {cin}", 1.0))
            els.append(Element(f"Ra{sign}{dst}", f"{pole} 0", float(m["tia_gain"])))
            if math.isfinite(m["tia_gbw"]):
                els.append(Element(f"Ca{sign}{dst}", f"{pole} 0", 1.0 / (2 * math.pi * m["tia_gbw"])))
            sw = m["tia_swing"]
            if math.isinf(sw):
                els.append(Element(f"Eo{sign}{dst}", f"{out} 0 {pole} 0", 1.0))
            else:
                els.append(Element(f"Bo{sign}{dst}", f"{out} 0", f"v=min(max(v({pole}),{fmt(-sw)}),{fmt(sw)})"))
        # V(out) = -I_column / g_unit: g0 (V(om) - V(op)) = (g0/g_unit)(I+ - I-) into u<dst>
        els.append(Element(f"Gt{dst}", f"0 {nf.u_node(dst)} {outs['m']} {outs['p']}", g0))
        return els

    @property
    def c_wire_on(self) -> bool:
        return self.m["c_wire"] > 0
