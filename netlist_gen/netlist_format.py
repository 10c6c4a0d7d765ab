"""The eqprop-spice netlist format as data: version, header keys, node and element names.

docs/netlist-format.md describes the format in prose; this module is its one machine
copy. The generator's block templates write names and nodes from the ``ElementKind``
table below, the reader checks elements against the same table, and runners build alter
keys with the name functions: a renamed element cannot reach one side only.
"""
from __future__ import annotations

import re
from typing import NamedTuple

FORMAT_VERSION = 1
HEADER_TAG = "eqprop-spice"  # first word of line 1 (after "* "): what marks a netlist as ours
# line 1's key=value tokens, in written order; the crossbar level appends its own keys
HEADER_KEYS = ("format", "sizes", "level", "inputs", "directed", "g0", "c", "clamp")
CROSSBAR_HEADER_KEYS = ("g_unit",)
HEADER_CHOICES = {"level": ("ideal", "crossbar"), "inputs": ("folded", "unfolded")}

# -- nodes ---------------------------------------------------------------------------
STATE_NODE, RHO_NODE = "u", "r"  # u<i>: neuron i's state u_i; r<i>: rho(u_i)
_NODE = re.compile(rf"([{STATE_NODE}{RHO_NODE}])(0|[1-9]\d*)")
_ELEMENT_NAME = re.compile(r"([a-z]{2})(0|[1-9]\d*)(?:_(0|[1-9]\d*))?")


def u_node(i: int) -> str:
    return f"{STATE_NODE}{i}"


def r_node(i: int) -> str:
    return f"{RHO_NODE}{i}"


def column_nodes(dst: int) -> tuple[str, str]:
    """The virtual-ground nodes of neuron dst's G+ and G- crossbar columns."""
    return f"cp{dst}", f"cm{dst}"


def activation_expr(i: int) -> str:
    """The ideal clamp rho(u_i) in [0, 1] V, as a B source's ``v=`` expression."""
    return f"min(max(v({u_node(i)}),0),1)"


def split_neuron_node(node: str) -> tuple[str, int] | None:
    """``u5`` -> (STATE_NODE, 5), ``r2`` -> (RHO_NODE, 2) (any case); None for other nodes."""
    m = _NODE.fullmatch(node.lower())
    return None if m is None else (m.group(1), int(m.group(2)))


# -- elements ------------------------------------------------------------------------
class ElementKind(NamedTuple):
    """One kind of element: its name is ``<prefix><i>`` or ``<prefix><dst>_<src>``.

    ``nodes`` is the node list as written, ``{0}`` standing for the first index and
    ``{1}`` for the second (F elements: without their controlling source, see
    ``column_gain_nodes``).
    """

    prefix: str
    indices: int  # 1 or 2
    nodes: str
    what: str

    @property
    def key(self) -> str:
        """The prefix as ngspice (case-insensitive) and the reader's table see it."""
        return self.prefix.lower()

    def name(self, *idx) -> str:
        return self.prefix + "_".join(map(str, idx))

    def nodes_for(self, *idx) -> str:
        return self.nodes.format(*idx)

    def records(self, dst: int, srcs, values) -> list[tuple[str, str, float]]:
        """(name, nodes, value) per src of a two-index kind, into one dst.

        The template is split once per dst and each record is an f-string: this is the
        loop of 400k-synapse netlists, where a format call per element cost ~50% more.
        """
        pre = f"{self.prefix}{dst}_"
        head, tail = self.nodes.replace("{0}", str(dst)).split("{1}")
        return [(f"{pre}{s}", f"{head}{s}{tail}", v) for s, v in zip(srcs, values)]


CAPACITOR = ElementKind("Cn", 1, "u{0} 0", "capacitor")
LEAK = ElementKind("Rl", 1, "u{0} 0", "leak")
ACTIVATION = ElementKind("Br", 1, "r{0} 0", "activation")
BIAS = ElementKind("Ib", 1, "0 u{0}", "bias")
CLAMP = ElementKind("Gc", 1, "u{0} 0 u{0} r{0}", "clamp")
FOLDED_INPUT = ElementKind("Ix", 1, "0 u{0}", "folded input")
INPUT_SOURCE = ElementKind("Vx", 1, "r{0} 0", "input")
SYNAPSE = ElementKind("Gw", 2, "0 u{0} r{1} 0", "synapse")
AMMETER_P = ElementKind("Vp", 1, "cp{0} 0", "G+ column ammeter")
AMMETER_M = ElementKind("Vm", 1, "cm{0} 0", "G- column ammeter")
COLUMN_GAIN_P = ElementKind("Fp", 1, "0 u{0}", "G+ column gain")
COLUMN_GAIN_M = ElementKind("Fm", 1, "0 u{0}", "G- column gain")
DEVICE_P = ElementKind("Rp", 2, "r{1} cp{0}", "G+ device")
DEVICE_M = ElementKind("Rm", 2, "r{1} cm{0}", "G- device")
NUDGE_G = ElementKind("Gn", 1, "0 u{0} r{0} 0", "nudge gain")
NUDGE_I = ElementKind("In", 1, "0 u{0}", "nudge current")

ELEMENTS = {k.key: k for k in (CAPACITOR, LEAK, ACTIVATION, BIAS, CLAMP, FOLDED_INPUT, SYNAPSE, AMMETER_P,
                               AMMETER_M, COLUMN_GAIN_P, COLUMN_GAIN_M, DEVICE_P, DEVICE_M, NUDGE_G, NUDGE_I,
                               INPUT_SOURCE)}
CROSSBAR_KINDS = (AMMETER_P, AMMETER_M, COLUMN_GAIN_P, COLUMN_GAIN_M, DEVICE_P, DEVICE_M)
COLUMN_PAIRS = ((COLUMN_GAIN_P, AMMETER_P), (COLUMN_GAIN_M, AMMETER_M))  # each F reads its column's ammeter


def split_element_name(name: str) -> tuple[str, tuple[int, ...]] | None:
    """``Gw5_3`` -> ("gw", (5, 3)); None unless the name is an ``ELEMENTS`` kind with its index count."""
    m = _ELEMENT_NAME.fullmatch(name.lower())
    if m is None or m.group(1) not in ELEMENTS or (m.group(3) is None) != (ELEMENTS[m.group(1)].indices == 1):
        return None
    return m.group(1), tuple(int(g) for g in m.groups()[1:] if g is not None)


# -- names a runner alters (docs/netlist-format.md section 8) ------------------------------
def cap_name(i: int) -> str:
    return CAPACITOR.name(i)


def cap_ic_key(i: int) -> str:
    """Alter key of neuron i's initial condition: a transient with ``uic`` starts from it."""
    return f"{CAPACITOR.name(i)}[ic]"


def bias_name(i: int) -> str:
    return BIAS.name(i)


def folded_input_name(i: int) -> str:
    return FOLDED_INPUT.name(i)


def input_source_name(k: int) -> str:
    return INPUT_SOURCE.name(k)


def synapse_name(dst: int, src: int) -> str:
    return SYNAPSE.name(dst, src)


def device_names(dst: int, src: int) -> tuple[str, str]:
    """The G+ and G- device (resistor) of the crossbar synapse src -> dst."""
    return DEVICE_P.name(dst, src), DEVICE_M.name(dst, src)


def column_gain_nodes(kind: ElementKind, dst: int) -> str:
    """An F element's nodes plus its controlling ammeter (``COLUMN_PAIRS``), as written."""
    return f"{kind.nodes_for(dst)} {dict(COLUMN_PAIRS)[kind].name(dst)}"


def nudge_names(o: int) -> tuple[str, str]:
    """Output o's nudge pair: the VCCS gain on rho(u_o) and the target current source."""
    return NUDGE_G.name(o), NUDGE_I.name(o)
