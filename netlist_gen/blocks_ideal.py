"""Block templates of the ``ideal`` level: behavioural neuron, signed VCCS synapses.

Every block returns ``Element`` records (name, nodes, value); the generator only
composes them. Node and element names are the ones docs/netlist-format.md fixes: the
runner alters elements by these names, so they must not change without the doc.
Numbers are written by ``fmt`` (``repr(float(x))``): numpy 2 reprs (``np.float64(..)``)
break ngspice, and repr is the shortest string that reads back bit for bit.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

LEVEL = "ideal"


class Element(NamedTuple):
    """One SPICE element line: ``<name> <nodes> <value>``.

    Bulk blocks (synapses) return plain ``(name, nodes, value)`` tuples, which print the
    same and are several times cheaper to make. ``value`` is a float (written with ``fmt``) or a string written verbatim (the B
    source expression).
    """

    name: str
    nodes: str
    value: float | str


def fmt(x: float) -> str:
    # + 0.0 turns -0.0 into 0.0, so equal circuits print equal text
    return repr(float(x) + 0.0)


def u_node(i: int) -> str:
    return f"u{i}"


def r_node(i: int) -> str:
    return f"r{i}"


# -- inputs and neurons ----------------------------------------------------------
def input_source(k: int, value: float) -> Element:
    """Unfolded input k: a voltage source holds rho(x_k) on its rho node."""
    return Element(f"Vx{k}", f"r{k} 0", value)


def neuron(i: int, g0: float, c: float, bias_current: float, clamp: float) -> list[Element]:
    """Leaky integrator (C, leak g0), ideal clamp rho(u) in [0, 1] V, bias current.

    The optional ``Gc`` penalty draws clamp*g0*(u - rho(u)): zero inside [0, 1], so it
    leaves the fixed point's rho alone but keeps u itself near [0, 1] as the clipped
    Euler state is, which makes .tran pick the Euler reference's equilibrium.
    """
    els = [
        Element(f"Cn{i}", f"u{i} 0", c),
        Element(f"Rl{i}", f"u{i} 0", 1.0 / g0),
        Element(f"Br{i}", f"r{i} 0", f"v=min(max(v(u{i}),0),1)"),
        Element(f"Ib{i}", f"0 u{i}", bias_current),
    ]
    if clamp > 0:
        els.append(Element(f"Gc{i}", f"u{i} 0 u{i} r{i}", clamp * g0))
    return els


def folded_input(i: int, current: float) -> Element:
    """The clamped inputs' drive on neuron i, g0 * sum_k W[k, i] rho(x_k)."""
    return Element(f"Ix{i}", f"0 u{i}", current)


def nudge(o: int, gain: float, current: float) -> list[Element]:
    """Output nudge: -2 beta g0 rho(u_o) (VCCS) plus 2 beta g0 y_d (current source)."""
    return [Element(f"Gn{o}", f"0 u{o} r{o} 0", gain), Element(f"In{o}", f"0 u{o}", current)]


# -- synapses --------------------------------------------------------------------
def synapse_names(dst: int, src: int) -> tuple[str, ...]:
    return (f"Gw{dst}_{src}",)


def synapse_header(arrays) -> dict[str, str]:
    """Extra header tokens of this level (docs/netlist-format.md section 3)."""
    return {}


def effective_weights(W: np.ndarray, arrays) -> np.ndarray:
    return W


def synapse_count(n_synapses: int, n_columns: int) -> int:
    return n_synapses


def synapses(dst: int, srcs: list[int], W: np.ndarray, arrays, g0: float) -> list[Element]:
    """One signed VCCS per direction src -> dst: injects g0*W[src,dst]*V(r_src) into u_dst."""
    vals = (W[srcs, dst] * g0).tolist()
    # plain tuples: NamedTuple construction dominated the time of 400k-synapse netlists
    return [(f"Gw{dst}_{s}", f"0 u{dst} r{s} 0", v) for s, v in zip(srcs, vals)]
