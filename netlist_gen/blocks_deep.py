"""Block templates of DEEP's neuron (Farinha et al. 2020): the circuit of eqprop.deep's dynamics.

DEEP's neuron j integrates  c du_j/dt = g0 [sum_i W_ij s_i + b_j - s_j R_j]  with R_j = sum_k W_jk,
its total *outgoing* weight, and s = rho(u) = clip(u, 0, 1). The synapses (one VCCS per direction
at ideal level, one device pair at crossbar level) and the output nudge are the leaky circuit's:
the generator takes them from the level's block module. What differs is the neuron:

* no unit leak resistor (DEEP has no -u term);
* the self term ``Gs<j>``: a VCCS from u_j to ground, controlled by rho(u_j), of value g0 R_j. It
  draws g0 R_j s_j out of the node. Its value is the row sum of the weights that act (the realised
  device weights at crossbar level) and is altered whenever a weight of row j changes. R_j may have
  either sign: for R_j > 0 the element sinks current like a conductance g0 R_j seen through the
  activation (inside [0, 1] u = s, so it is a resistor to ground there); for R_j < 0 it sources
  current, a negative conductance, which only an active element realises: that is why it is a
  VCCS (in hardware a transconductor or negative-impedance converter) and not a resistor. A
  single signed VCCS covers both cases without re-netlisting when the sign flips in training;
* the stiff clamp ``Gc`` (as in the leaky circuit, clamp * g0 * (u - rho(u)), zero inside the box)
  keeps u near [0, 1] as DEEP's clipped state is: at a saturated neuron u = 1 + f/clamp (or
  -|f|/clamp), rho(u) is exactly 1 (0), so the circuit's fixed points are those of the clipped
  Euler dynamics. Without a leak the clamp is also the only direct path from u_j to ground, so
  DEEP circuits need clamp > 0.

Names: ``Gs<j>`` for the self term; everything else as docs/netlist-format.md. The netlist reader
(netlist_gen.reader) reads leaky circuits only: a DEEP netlist (header ``dynamics=deep``) is written
for ngspice, not read back.
"""
from __future__ import annotations

import numpy as np

from . import netlist_format as nf
from .blocks_ideal import Element

DYNAMICS = "deep"
SELF_TERM = nf.ElementKind("Gs", 1, "u{0} 0 r{0} 0", "DEEP self term")


def self_term_name(j: int) -> str:
    return SELF_TERM.name(j)


def outgoing_sums(W_eff: np.ndarray) -> np.ndarray:
    """R_j = sum_k W_jk of the weights that act (masked, effective): (N,)."""
    return np.asarray(W_eff, dtype=np.float64).sum(axis=1)


def neuron(i: int, g0: float, c: float, bias_current: float, clamp: float, self_gain: float) -> list[Element]:
    """DEEP neuron i: capacitor, ideal activation rho(u) in [0, 1] V, bias current, the self term
    g0 R_i (``self_gain``) and the stiff clamp (required: clamp > 0)."""
    if not clamp > 0:
        raise ValueError("a DEEP circuit needs clamp > 0: without a leak the clamp keeps u near [0, 1] and is the "
                         "node's direct path to ground (e.g. clamp=1e3)")
    return [
        Element(nf.CAPACITOR.name(i), nf.CAPACITOR.nodes_for(i), c),
        Element(nf.ACTIVATION.name(i), nf.ACTIVATION.nodes_for(i), f"v={nf.activation_expr(i)}"),
        Element(nf.BIAS.name(i), nf.BIAS.nodes_for(i), bias_current),
        Element(SELF_TERM.name(i), SELF_TERM.nodes_for(i), self_gain),
        Element(nf.CLAMP.name(i), nf.CLAMP.nodes_for(i), clamp * g0),
    ]


def nodeset_state(s0: np.ndarray, rx: np.ndarray, n_in: int) -> np.ndarray:
    """Node voltages for a ``.nodeset``/``.ic`` from a DEEP state: the clipped state (inputs rho(x))."""
    u = np.clip(np.asarray(s0, dtype=np.float64), 0.0, 1.0)
    u[:n_in] = rx
    return u
