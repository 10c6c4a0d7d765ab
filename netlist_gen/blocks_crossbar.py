"""Block templates of the ``crossbar`` level: each weight direction is a device pair.

A synapse src -> dst is two positive conductances G+ and G- (resistors) from rho(u_src)
into two virtual-ground columns of neuron dst, held at 0 V by zero-volt sources that
double as ammeters. Two F elements inject (I+ - I-) * g0/g_unit into u_dst, so the
effective weight is (G+ - G-)/g_unit. Neurons, inputs and the nudge are the ideal ones:
this level is about the synapses. The conductances come in as plain arrays (from
``circuits.devices``); this module never imports ``circuits``.
"""
from __future__ import annotations

import numpy as np

from . import netlist_format as nf

# the ideal neuron, inputs and nudge are this level's too: the generator takes every block from here
from .blocks_ideal import Element, folded_input, input_source, neuron, nudge  # noqa: F401

LEVEL = "crossbar"


def synapse_names(dst: int, src: int) -> tuple[str, ...]:
    return nf.device_names(dst, src)


def synapse_header(arrays) -> dict[str, str]:
    return dict(zip(nf.CROSSBAR_HEADER_KEYS, (repr(float(arrays[2])),), strict=True))


def effective_weights(W: np.ndarray, arrays) -> np.ndarray:
    """The weights the devices realise (quantised, noisy): used to fold the inputs."""
    Gp, Gm, g_unit = arrays
    return (Gp - Gm) / g_unit


def synapse_count(n_synapses: int, n_columns: int) -> int:
    return 2 * n_synapses + 4 * n_columns


def synapses(dst: int, srcs: list[int], W: np.ndarray, arrays, g0: float) -> list[Element]:
    if not srcs:
        return []
    Gp, Gm, g_unit = arrays
    k = g0 / g_unit
    els = [
        Element(nf.AMMETER_P.name(dst), nf.AMMETER_P.nodes_for(dst), 0.0),
        Element(nf.AMMETER_M.name(dst), nf.AMMETER_M.nodes_for(dst), 0.0),
        # I(V) is the current into the + node, i.e. the column's sum of G * V(r_src)
        Element(nf.COLUMN_GAIN_P.name(dst), nf.column_gain_nodes(nf.COLUMN_GAIN_P, dst), k),
        Element(nf.COLUMN_GAIN_M.name(dst), nf.column_gain_nodes(nf.COLUMN_GAIN_M, dst), -k),
    ]
    plus = nf.DEVICE_P.records(dst, srcs, (1.0 / Gp[srcs, dst]).tolist())
    minus = nf.DEVICE_M.records(dst, srcs, (1.0 / Gm[srcs, dst]).tolist())
    for a, b in zip(plus, minus):  # each synapse's G+ then its G- (docs/netlist-format.md 4.2)
        els.append(a)
        els.append(b)
    return els
