"""Block templates of the ``ideal`` level: behavioural neuron, signed VCCS synapses.

Every block returns ``Element`` records (name, nodes, value); the generator only
composes them. Node and element names come from ``netlist_format`` (the table the reader
checks against; docs/netlist-format.md in prose): the runner alters elements by them.
Numbers are written by ``fmt`` (``repr(float(x))``): numpy 2 reprs (``np.float64(..)``)
break ngspice, and repr is the shortest string that reads back bit for bit.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import netlist_format as nf

LEVEL = "ideal"


class Element(NamedTuple):
    """One SPICE element line: ``<name> <nodes> <value>``.

    Bulk blocks (synapses) return plain ``(name, nodes, value)`` tuples, which print the
    same and are several times cheaper to make. ``value`` is a float (written with ``fmt``) or a string written
    verbatim (the B
    source expression).
    """

    name: str
    nodes: str
    value: float | str


def fmt(x: float) -> str:
    # + 0.0 turns -0.0 into 0.0, so equal circuits print equal text
    return repr(float(x) + 0.0)


# -- inputs and neurons ----------------------------------------------------------
def input_source(k: int, value: float) -> Element:
    """Unfolded input k: a voltage source holds rho(x_k) on its rho node."""
    return Element(nf.INPUT_SOURCE.name(k), nf.INPUT_SOURCE.nodes_for(k), value)


def neuron(i: int, g0: float, c: float, bias_current: float, clamp: float) -> list[Element]:
    """Leaky integrator (C, leak g0), ideal clamp rho(u) in [0, 1] V, bias current.

    The optional ``Gc`` penalty draws clamp*g0*(u - rho(u)): zero inside [0, 1], so it
    leaves the fixed point's rho alone but keeps u itself near [0, 1] as the clipped
    Euler state is, which makes .tran pick the Euler reference's equilibrium.
    """
    els = [
        Element(nf.CAPACITOR.name(i), nf.CAPACITOR.nodes_for(i), c),
        Element(nf.LEAK.name(i), nf.LEAK.nodes_for(i), 1.0 / g0),
        Element(nf.ACTIVATION.name(i), nf.ACTIVATION.nodes_for(i), f"v={nf.activation_expr(i)}"),
        Element(nf.BIAS.name(i), nf.BIAS.nodes_for(i), bias_current),
    ]
    if clamp > 0:
        els.append(Element(nf.CLAMP.name(i), nf.CLAMP.nodes_for(i), clamp * g0))
    return els


def folded_input(i: int, current: float) -> Element:
    """The clamped inputs' drive on neuron i, g0 * sum_k W[k, i] rho(x_k)."""
    return Element(nf.FOLDED_INPUT.name(i), nf.FOLDED_INPUT.nodes_for(i), current)


def nudge(o: int, gain: float, current: float) -> list[Element]:
    """Output nudge: gain * rho(u_o) (VCCS) plus current (source); eqprop.dynamics gives both."""
    return [Element(nf.NUDGE_G.name(o), nf.NUDGE_G.nodes_for(o), gain),
            Element(nf.NUDGE_I.name(o), nf.NUDGE_I.nodes_for(o), current)]


# -- synapses --------------------------------------------------------------------
def synapse_names(dst: int, src: int) -> tuple[str, ...]:
    return (nf.synapse_name(dst, src),)


def synapse_header(arrays) -> dict[str, str]:
    """Extra header tokens of this level (docs/netlist-format.md section 3)."""
    return {}


def effective_weights(W: np.ndarray, arrays) -> np.ndarray:
    return W


def synapse_count(n_synapses: int, n_columns: int) -> int:
    return n_synapses


def synapses(dst: int, srcs: list[int], W: np.ndarray, arrays, g0: float) -> list[Element]:
    """One signed VCCS per direction src -> dst: injects g0*W[src,dst]*V(r_src) into u_dst."""
    # plain tuples: NamedTuple construction dominated the time of 400k-synapse netlists
    return nf.SYNAPSE.records(dst, srcs, (W[srcs, dst] * g0).tolist())
