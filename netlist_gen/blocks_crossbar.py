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

from .blocks_ideal import Element, folded_input, input_source, neuron, nudge, r_node, u_node  # noqa: F401

LEVEL = "crossbar"


def synapse_names(dst: int, src: int) -> tuple[str, ...]:
    return (f"Rp{dst}_{src}", f"Rm{dst}_{src}")


def synapse_header(arrays) -> dict[str, str]:
    return {"g_unit": repr(float(arrays[2]))}


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
        Element(f"Vp{dst}", f"cp{dst} 0", 0.0),
        Element(f"Vm{dst}", f"cm{dst} 0", 0.0),
        # I(V) is the current into the + node, i.e. the column's sum of G * V(r_src)
        Element(f"Fp{dst}", f"0 u{dst} Vp{dst}", k),
        Element(f"Fm{dst}", f"0 u{dst} Vm{dst}", -k),
    ]
    rp = (1.0 / Gp[srcs, dst]).tolist()
    rm = (1.0 / Gm[srcs, dst]).tolist()
    for s, a, b in zip(srcs, rp, rm):
        els.append((f"Rp{dst}_{s}", f"r{s} cp{dst}", a))
        els.append((f"Rm{dst}_{s}", f"r{s} cm{dst}", b))
    return els
