"""Physical-level netlists (docs/physical.md) back into a Network, with the non-idealities they hold.

Which elements a physical netlist has depends on its parameters (diode clamp, user ``.subckt``
neuron, TIA op-amp macro-model or ideal virtual ground, wire resistance and capacitance, read
nonlinearity, nudge form). The reader takes each parameter from the first element that carries
it, then asks the generator's own block templates (``blocks_physical``) which netlist those
parameters and the values read (biases, inputs, device conductances, nudge) make, and compares
the two element by element: every name, every node, and every value the parameters fix. So the
layout is written down once (in the templates), and an element the templates do not make, a
node moved, a value edited in one cell only, or a missing one is refused at its line and column,
as in the other levels (reader.py). The Network is the one the generator was given,
W = (G+ - G-)/g_unit; the non-idealities come back separately (``ReadResult.physical``).
"""
from __future__ import annotations

import math
import re
import types

import numpy as np

from . import blocks_physical as bp
from . import netlist_format as nf
from .spice_expr import spice_number
from .spice_parse import Element, Pos

_IB, _IX, _GN, _IN, _VX = (k.key for k in (nf.BIAS, nf.FOLDED_INPUT, nf.NUDGE_G, nf.NUDGE_I, nf.INPUT_SOURCE))
_GP, _GM = bp.DEVICE_P.key, bp.DEVICE_M.key
# the elements whose values are the network's data (read); every other value follows from the parameters
_DATA = re.compile(rf"({_IB}|{_IX}|{_GN}|{_IN}|{_VX})(0|[1-9]\d*)|({_GP}|{_GM})(0|[1-9]\d*)_(0|[1-9]\d*)")
# what each element is, for messages (lower-case name patterns; blocks_physical writes them)
_WHAT = tuple((re.compile(p, re.ASCII), w) for p, w in (
    (r"cn\d+", "capacitor"), (r"rl\d+", "leak"), (r"br\d+", "ideal clamp activation"), (r"ib\d+", "bias"),
    (r"gc\d+", "stiff clamp"), (r"ix\d+", "folded input"), (r"vx\d+", "input source"), (r"gn\d+", "nudge gain"),
    (r"in\d+", "nudge current"), (r"rs\d+", "diode clamp series resistor"), (r"dh\d+", "upper clamp diode"),
    (r"dl\d+", "lower clamp diode"), (r"er\d+", "activation buffer"), (r"vrh", "upper clamp rail"),
    (r"vrl", "lower clamp rail"), (r"xn\d+", "user neuron (.subckt instance)"), (r"vos", "TIA input offset source"),
    (r"v[pm]\d+", "column ammeter (ideal TIA)"), (r"f[pm]\d+", "column gain (ideal TIA)"),
    (r"rf[pm]\d+", "TIA feedback resistor"), (r"ea[pm]\d+", "TIA op-amp"), (r"ga[pm]\d+", "TIA op-amp input stage"),
    (r"ra[pm]\d+", "TIA op-amp gain resistor"), (r"ca[pm]\d+", "TIA op-amp pole capacitor"),
    (r"eo[pm]\d+", "TIA op-amp output"), (r"bo[pm]\d+", "TIA op-amp output swing"),
    (r"gt\d+", "TIA output transconductance"), (r"g[pm]\d+_\d+", "device (conductance)"),
    (r"bf[pm]\d+_\d+", "device read nonlinearity"), (r"rx[pm]\d+_\d+", "row wire resistance"),
    (r"ry[pm]\d+_\d+", "column wire resistance"), (r"c(?:[xy][pm]\d+_\d+|c[pm]\d+)", "wire capacitance")))
_SWING = re.compile(r"min\(max\(v\([^()]*\),([^(),]+)\),([^(),]+)\)")
_READ = re.compile(r"([^*()]+)\*sinh\(v\([^()]*\)/([^()]+)\)")
_REL = 1e-12  # as reader._REL: values derived from the parameters, written with repr


def _what(name: str) -> str:
    low = name.lower()
    return next((w for rx, w in _WHAT if rx.fullmatch(low)), "element")


def _close(a, b) -> bool:
    return bool(isinstance(a, float) and np.isfinite(a) and abs(a - b) <= _REL * max(abs(a), abs(b)))


def _norm(text: str) -> str:
    return re.sub(r"\s", "", text).lower()


def _as_written(e: Element) -> tuple[list[str], float | str | None]:
    """An element's nodes and value in the templates' terms: F's controlling source is one of
    its nodes, D's model and X's subcircuit are its value, B's ``v=...`` is its value."""
    nodes = list(e.nodes) + ([e.ref] if e.kind == "F" else [])
    if e.kind in "DX":
        return nodes, e.ref
    if e.kind == "B" or e.expr is not None:
        return nodes, f"{e.expr_kind}={e.expr}"
    return nodes, e.value


class _Physical:
    """One physical-level read: the parameters found, the data elements, the template check."""

    def __init__(self, reader):
        self.r, self.net = reader, reader.net
        self.n_in, self.n = reader.sizes[0], sum(reader.sizes)
        self.outputs = range(self.n - reader.sizes[-1], self.n)

    def fail(self, message: str, pos: Pos | None = None):
        self.r.fail(message, pos)

    def first(self, pattern: str) -> Element | None:
        """The first element (text order) whose name is ``pattern``: ASCII and short, as every name the
        level writes (int() of a 5,000-digit index would raise, and \\d would take other scripts' digits)."""
        rx = re.compile(pattern, re.ASCII)
        return next((e for e in self.net.elements
                     if len(e.name) <= 64 and e.name.isascii() and rx.fullmatch(e.name.lower())), None)

    def positive(self, e: Element, what: str, unit: str) -> float:
        v = e.value
        if not (isinstance(v, float) and math.isfinite(v) and v > 0):
            self.fail(f"'{e.name}' = {v!r}: {what} must be a positive number ({unit})", e.pos)
        return v

    # -- the data elements ----------------------------------------------------------------
    def classify(self) -> dict[tuple, Element]:
        """(prefix, index...) -> element for the elements that hold the network's values."""
        out = {}
        for e in self.net.elements:
            m = _DATA.fullmatch(e.name.lower()) if e.name.isascii() and len(e.name) <= 64 else None
            if m is None:
                continue
            key = (m.group(1), int(m.group(2))) if m.group(1) else (m.group(3), int(m.group(4)), int(m.group(5)))
            for i in key[1:]:
                if i >= self.n:
                    self.fail(f"{_what(e.name)} '{e.name}' refers to neuron {i}, but sizes {self.r.sizes} have "
                              f"{self.n} neurons (0..{self.n - 1})", e.pos)
            out[key] = e
        return out

    # -- the parameters ---------------------------------------------------------------------
    def model(self) -> dict:
        """The non-idealities, each from the first element that carries it (the template check
        then holds every other element to the same values)."""
        m = dict(bp.OFF)
        xn = self.first(r"xn\d+")
        if xn is not None:
            m.update(self.user_neuron(xn))
        elif self.first(r"d[hl]\d+|rs\d+|er\d+") is not None:
            m.update(self.diode())
        if self.first(r"(ea|ra)[pm]\d+") is not None:  # the op-amp's gain element: a macro-model TIA
            m.update(self.tia())
        for key, pattern, what, unit in (("r_row", r"rx[pm]\d+_\d+", "a row wire resistance", "Ohm per cell"),
                                         ("r_col", r"ry[pm]\d+_\d+", "a column wire resistance", "Ohm per cell"),
                                         ("c_wire", r"c(?:[xy][pm]\d+_\d+|c[pm]\d+)", "a wire capacitance",
                                          "F per wire node")):
            e = self.first(pattern)
            if e is not None:
                m[key] = self.positive(e, what, unit)
        bf = self.first(r"bf[pm]\d+_\d+")
        if bf is not None:
            m["read_v0"] = self.read_v0(bf)
        gn = self.first(rf"{_GN}\d+")
        if gn is not None and len(gn.nodes) == 4:
            ctrl = nf.split_neuron_node(gn.nodes[2]) if gn.nodes[2].isascii() else None
            if ctrl is not None and ctrl[0] == nf.STATE_NODE:  # a conductance: the VCCS reads u itself
                m["nudge"] = "conductance"
        return m

    def diode(self) -> dict:
        d = self.first(r"d[hl]\d+")
        rs = self.first(r"rs\d+")
        if d is None or rs is None:
            e = d or rs or self.first(r"er\d+")
            self.fail(f"'{e.name}': a diode-clamp neuron has a series resistor Rs<i>, clamp diodes Dh<i> and Dl<i> "
                      "and a buffer Er<i>; this netlist lacks " + ("the diodes" if d is None else "Rs<i>"), e.pos)
        model = self.net.models.get(d.ref.lower())
        if model is None:
            self.fail(f"'{d.name}' uses diode model '{d.ref}', which no .model in the netlist defines", d.pos)
        if model.type.lower() != "d":
            self.fail(f"model '{model.name}' of '{d.name}' is of type {model.type}, not a diode (D)", model.pos)
        extra = sorted(set(model.params) - {"is", "n"})
        if extra:
            self.fail(f"model '{model.name}': the physical level's clamp diode has is= and n= only (docs/physical.md); "
                      f"{', '.join(extra)} would make a circuit other than the one this reader returns", model.pos)
        found = {}
        for key, default, unit in (("is", 1e-14, "A"), ("n", 1.0, "unitless")):  # ngspice's defaults
            v = model.params.get(key, default)
            if not (isinstance(v, float) and math.isfinite(v) and v > 0):
                self.fail(f"model '{model.name}': {key}={v!r} must be a positive number ({unit})", model.pos)
            found[key] = v
        rails = {}
        for name in (bp.RAIL_HIGH, bp.RAIL_LOW):
            e = self.first(name)
            if e is None:
                self.fail(f"the diode clamp's rail source V{name[1:]} ({name}) is missing")
            if not (isinstance(e.value, float) and math.isfinite(e.value)):
                self.fail(f"'{e.name}' = {e.value!r}: a clamp rail must be a finite voltage (V)", e.pos)
            rails[name] = e
        if not rails[bp.RAIL_LOW].value < rails[bp.RAIL_HIGH].value:
            e = rails[bp.RAIL_LOW]
            self.fail(f"'{e.name}' = {e.value!r} V is not below the upper rail {rails[bp.RAIL_HIGH].value!r} V", e.pos)
        return {"activation": "diode", "diode_is": found["is"], "diode_n": found["n"],
                "diode_rs": self.positive(rs, "the clamp's series resistance", "Ohm"),
                "v_high": rails[bp.RAIL_HIGH].value, "v_low": rails[bp.RAIL_LOW].value}

    def tia(self) -> dict:
        ea = self.first(r"ea[pm]\d+")
        gain = self.positive(ea or self.first(r"ra[pm]\d+"), "the TIA op-amp's DC gain", "V/V")
        out = {"tia_gain": gain}
        ca = self.first(r"ca[pm]\d+")
        if ca is not None:  # C = 1/(2 pi gbw) on a 1 S stage into R = gain
            out["tia_gbw"] = 1.0 / (2 * math.pi * self.positive(ca, "the op-amp's pole capacitance", "F"))
        bo = self.first(r"bo[pm]\d+")
        if bo is not None:
            m = _SWING.fullmatch(_norm(f"{bo.expr}")) if bo.kind == "B" else None
            sw = self.number(m.group(2)) if m else None
            if sw is None or not (math.isfinite(sw) and sw > 0):
                self.fail(f"'{bo.name}' is not an op-amp output swing v=min(max(v(<node>),-sw),sw) with sw > 0 (V)",
                          bo.pos)
            out["tia_swing"] = sw
        vos = self.first(bp.OFFSET_NODE)
        if vos is not None:
            if not (isinstance(vos.value, float) and math.isfinite(vos.value)):
                self.fail(f"'{vos.name}' = {vos.value!r}: the TIA input offset must be a finite voltage (V)", vos.pos)
            out["tia_offset"] = vos.value
        return out

    def read_v0(self, bf: Element) -> float:
        m = _READ.fullmatch(_norm(f"{bf.expr}")) if bf.kind == "B" else None
        v0 = self.number(m.group(1)) if m else None
        if v0 is None or not (math.isfinite(v0) and v0 > 0):
            self.fail(f"'{bf.name}' is not a device read nonlinearity v=V0*sinh(v(<row>,<col>)/V0) with V0 > 0 (V)",
                      bf.pos)
        return v0

    @staticmethod
    def number(text: str) -> float | None:
        try:
            return spice_number(text)
        except ValueError:
            return None

    def user_neuron(self, xn: Element) -> dict:
        """The user's .subckt neuron: which subcircuit, from which file, each pin's role."""
        i = int(xn.name[2:])
        sub = self.net.subckts.get(xn.ref.lower())
        if sub is None:
            self.fail(f"'{xn.name}' calls subcircuit '{xn.ref}', which no .subckt in the netlist defines (is the user "
                      "neuron's .lib file included?)", xn.pos)
        roles = []
        for node in xn.nodes:
            role = next((r for r, pin in bp.PIN_NODES.items() if pin(i) == node.lower()), None)
            if role is None:
                known = ", ".join(f"{pin(i)} ({r})" for r, pin in bp.PIN_NODES.items())
                self.fail(f"'{xn.name}': node '{node}' is no pin node of neuron {i}'s user neuron (one of {known})",
                          xn.pos)
            roles.append(role)
        self.pin_count(xn, sub)
        if len(set(roles)) != len(roles) or not {"state", "activation"} <= set(roles):
            self.fail(f"'{xn.name}': a user neuron connects each pin role once, with state ({nf.u_node(i)}) and "
                      f"activation ({nf.r_node(i)}); got {' '.join(xn.nodes)}", xn.pos)
        self.r.notes.append(f"user neuron: .subckt {sub.name} ({' '.join(sub.ports)}) from {sub.pos}, pins "
                            f"{', '.join(roles)}, {len(sub.elements)} elements; not expanded: the network holds the "
                            "synapses and biases around it, not what is inside it")
        return {"activation": "subckt", "neuron_lib": sub.pos.file, "neuron_subckt": xn.ref,
                "neuron_pins": tuple(roles)}

    def pin_count(self, x: Element, sub=None) -> None:
        sub = sub or self.net.subckts.get(x.ref.lower())
        if sub is not None and len(x.nodes) != len(sub.ports):
            self.fail(f"'{x.name}' connects {len(x.nodes)} pins ({' '.join(x.nodes)}), but .subckt {sub.name} "
                      f"({sub.pos}) has {len(sub.ports)} ({' '.join(sub.ports)})", x.pos)

    # -- the netlist the parameters make, against the one read ---------------------------------
    def expected(self, els, model, mask, arrays, units, inputs) -> list:
        g0, c, clamp, _ = units
        fold = inputs == "folded"
        blocks = bp.bind(model, types.SimpleNamespace(n_in=self.n_in, n=self.n, mask=mask), fold)

        def val(key):
            return els[key].value if key in els else 0.0  # a missing one is reported by the comparison

        out = [] if fold else [blocks.input_source(k, val((_VX, k))) for k in range(self.n_in)]
        nudged = any(k[0] in (_GN, _IN) for k in els)  # a hand-edited free-phase netlist may drop the pair
        for i in range(self.n_in, self.n):
            out += blocks.neuron(i, g0, c, val((_IB, i)), clamp)
            if (_IX, i) in els:
                out.append(blocks.folded_input(i, val((_IX, i))))
            out += blocks.synapses(i, np.nonzero(mask[:, i])[0].tolist(), None, arrays, g0)
            if i in self.outputs and nudged:
                out += blocks.nudge(i, val((_GN, i)), val((_IN, i)))
        return [e for e in out if not e[0].startswith(".")]  # .model/.include lines: checked in model()

    def compare(self, expected: list, model: dict) -> None:
        want = {e[0].lower(): e for e in expected}
        for e in self.net.elements:
            w = want.pop(e.name.lower(), None)
            if w is None:
                self.fail(f"'{e.name}' ({_what(e.name)}) is not part of this physical-level netlist "
                          f"({describe(model)}): docs/physical.md lists the elements of each non-ideality", e.pos)
            if (e.params and not (e.kind == "C" and set(e.params) <= {"ic"})) or e.waveform is not None or e.flags \
                    or e.ac is not None or (e.kind in "RC" and e.ref is not None) \
                    or (e.kind == "D" and e.value is not None):
                self.fail(f"'{e.name}': parameters, models and waveforms are not part of the format", e.pos)
            if e.kind == "X":
                self.pin_count(e)
            nodes, value = _as_written(e)
            want_nodes = w[1].split()
            if [x.lower() for x in nodes] != [x.lower() for x in want_nodes]:
                self.fail(f"'{e.name}' is not a {_what(e.name)} pattern: expected nodes {' '.join(want_nodes)}, got "
                          f"{' '.join(nodes)}", e.pos)
            ok = (isinstance(value, str) and _norm(value) == _norm(w[2])) if isinstance(w[2], str) \
                else _close(value, float(w[2]))
            if not ok:
                self.fail(f"'{e.name}' = {value!r} differs from {w[2]!r}, the value this netlist's parameters give "
                          f"its {_what(e.name)} ({describe(model)})", e.pos)
        if want:
            name = next(iter(want.values()))[0]
            self.fail(f"'{name}' ({_what(name)}) is missing: this physical-level netlist ({describe(model)}) has one")


def describe(model: dict) -> str:
    """The parameters that differ from "off", as ``key=value`` (all off: "every non-ideality off")."""
    shown = []
    for k, off in bp.OFF.items():
        v = model[k]
        if v == off or (model["activation"] != "diode" and (k.startswith("diode_") or k in ("v_low", "v_high"))):
            continue
        shown.append(f"{k}={' '.join(v) if k == 'neuron_pins' else v}")
    return ", ".join(shown) or "every non-ideality off"


def read_physical(reader, asymmetric: str, dtype):
    """A physical-level netlist -> ``ReadResult`` with ``physical`` = the parameters found."""
    p = _Physical(reader)
    n_in, n = p.n_in, p.n
    els = p.classify()
    inputs = reader.inputs_form({k[0] for k in els})
    reader.roles(els, n_in, n, inputs)
    g0 = reader.number("g0", None, positive=True)
    c = reader.number("c", None, positive=True)
    clamp = reader.number("clamp", 0.0)
    g_unit = reader.number("g_unit", None, positive=True)
    for key, v in (("g0", g0), ("c", c), ("g_unit", g_unit)):
        if v is None:
            p.fail(f"the header of a physical-level netlist needs {key}= (docs/netlist-format.md section 3)")
    model = p.model()
    mask = np.zeros((n, n), bool)
    Gp, Gm = np.zeros((n, n)), np.zeros((n, n))
    for key, e in els.items():
        if key[0] not in (_GP, _GM):
            continue
        dst, src = key[1], key[2]
        partner = bp.DEVICE_M if key[0] == _GP else bp.DEVICE_P
        if (partner.key, dst, src) not in els:
            p.fail(f"'{e.name}' has no partner {partner.name(dst, src)}: a device weight is a G+/G- pair", e.pos)
        (Gp if key[0] == _GP else Gm)[src, dst] = p.positive(e, "a device conductance", "S")
        mask[src, dst] = True
    p.compare(p.expected(els, model, mask, (Gp, Gm, g_unit), (g0, c, clamp, g_unit), inputs), model)
    b, x, drive = reader.biases_and_inputs(els, inputs, g0)
    W = (Gp - Gm) / g_unit
    if not np.isfinite(W).all():
        src, dst = (int(v) for v in np.argwhere(~np.isfinite(W))[0])
        e = els[_GP, dst, src]
        p.fail(f"'{e.name}' and its partner give W[{src},{dst}] = (Gp - Gm)/g_unit = {W[src, dst]!r}: not a finite "
               "number", e.pos)
    reader.notes.append(f"physical level: {describe(model)}; W = (G+ - G-)/g_unit of the devices, the network "
                        "the circuit was generated from (the non-idealities are in ReadResult.physical)")
    return reader.result(els, bp.LEVEL, inputs, (g0, c, clamp, g_unit), b, x, drive, W, mask, (Gp, Gm),
                         asymmetric, dtype, physical=model)
