"""Physical outputs of a transient: time to equilibrium and the energy the sources deliver.

Read from the waveforms of the transient that is still the current plot (every node is
saved by a transient without ``.save`` lines):

* settling time (s): the earliest time after which every activation node stays within
  ``settle_v`` volts of its final value, from the transient's start (the free phase starts
  from the caller's u0, the nudged phase from the free state);
* energy (J) to equilibrium: from the start to the settling time, what the sources
  (supplies, bias and input currents, buffers, TIAs, transconductors, clamp and nudge)
  deliver, by Tellegen's theorem the integral of the power the passive elements absorb
  (resistors, device conductances with their read nonlinearity, diodes) plus the change of
  the energy stored in the capacitors. Quiescent currents of real amplifiers are not in the
  circuit, hence not in this number, nor the op-amp macro-model's internal pole network.
The integral is the trapezoid rule over ngspice's own time points. ``power_w`` is the power
the sources deliver at the end (the static power of holding the equilibrium).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from netlist_gen.blocks_physical import MACRO_MODEL_PREFIXES

from .physical import PhysicalModel
from .physical_surrogate import diode_current


@dataclasses.dataclass
class PassiveElements:
    """The passive elements of one circuit as index arrays into its node list (node 0 = ground)."""

    nodes: list[str]  # node names read from ngspice (ground excluded)
    r: tuple[np.ndarray, np.ndarray, np.ndarray]  # (node a, node b, conductance S)
    g_nl: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # nonlinear devices (a, b, read node f, gain)
    caps: tuple[np.ndarray, np.ndarray, np.ndarray]  # (a, b, C)
    diodes: tuple[np.ndarray, np.ndarray]  # (anode, cathode)


def passive_elements(circuit) -> PassiveElements:
    """Classify ``circuit.elements`` (netlist_gen.Circuit) once."""
    index: dict[str, int] = {"0": -1}

    def idx(node):
        node = node.lower()
        if node not in index:
            index[node] = len(index) - 1
        return index[node]

    for i in circuit.neurons:  # activation nodes are read for the settling time
        idx(circuit.r_node[i])
    r, g_nl, caps, diodes = [], [], [], []
    for name, nodes, value in circuit.elements:
        kind, parts = name[:1].upper(), nodes.split()
        if name.startswith(".") or name[:2].lower() == "gn" or name[:2] in MACRO_MODEL_PREFIXES:
            continue  # .model/.include lines; the nudge is a source; op-amp macro-model internals
        if kind == "R":
            r.append((idx(parts[0]), idx(parts[1]), 1.0 / float(value)))
        elif kind == "C":
            caps.append((idx(parts[0]), idx(parts[1]), float(value)))
        elif kind == "D":
            diodes.append((idx(parts[0]), idx(parts[1])))
        elif kind == "G" and len(parts) == 4 and parts[:2] == parts[2:]:  # a conductance (device)
            r.append((idx(parts[0]), idx(parts[1]), float(value)))
        elif kind == "G" and len(parts) == 4 and name[:2].lower() in ("gp", "gm"):  # device reading V0 sinh(V/V0)
            g_nl.append((idx(parts[0]), idx(parts[1]), idx(parts[2]), float(value)))
    cols = lambda rows, k, dt: tuple(np.array([row[j] for row in rows], dtype=dt) for j, dt in zip(range(k), dt))  # noqa: E731
    return PassiveElements([n for n in index if n != "0"], cols(r, 3, (int, int, float)),
                           cols(g_nl, 4, (int, int, int, float)), cols(caps, 3, (int, int, float)),
                           cols(diodes, 2, (int, int)))


def settle_time(time: np.ndarray, rho: np.ndarray, tol: float) -> float:
    """Earliest time after which every row of rho (neurons x time) stays within tol of its end value."""
    dev = np.abs(rho - rho[:, -1:]).max(axis=0)
    out = np.nonzero(dev > tol)[0]
    if out.size == 0:
        return 0.0
    k = out[-1] + 1
    return float(time[min(k, len(time) - 1)])


def energy(time: np.ndarray, volts: np.ndarray, el: PassiveElements, model: PhysicalModel | None,
           end: int | None = None) -> tuple[float, float]:
    """(energy (J) the sources deliver from the start to time point ``end`` (None: the last),
    power (W) they deliver at that point); volts: (nodes, time) in el.nodes order."""
    end = len(time) - 1 if end is None else end
    time, volts = time[:end + 1], volts[:, :end + 1]
    v = np.vstack([volts, np.zeros((1, volts.shape[1]))])  # index -1: ground
    a, b, g = el.r
    p = (g[:, None] * (v[a] - v[b]) ** 2).sum(axis=0) if len(g) else np.zeros(len(time))
    if len(el.g_nl[0]):
        a, b, f, g = el.g_nl
        p = p + (g[:, None] * v[f] * (v[a] - v[b])).sum(axis=0)
    if len(el.diodes[0]):
        vd = v[el.diodes[0]] - v[el.diodes[1]]
        p = p + (diode_current(vd, model) * vd).sum(axis=0)
    stored = 0.0
    if len(el.caps[0]):
        a, b, c = el.caps
        dv = v[a] - v[b]
        stored = float((0.5 * c * (dv[:, -1] ** 2 - dv[:, 0] ** 2)).sum())
    return float(np.trapezoid(p, time)) + stored, float(p[-1])


def measure(session, circuit, elements: PassiveElements, settle_v: float, model: PhysicalModel | None) -> dict:
    """settle_s and energy_j of the transient that is the session's current plot."""
    time = session.vector("time")
    volts = np.array(session.call([("get", elements.nodes, None)], "read waveforms")[0])
    names = {n: k for k, n in enumerate(elements.nodes)}
    rho = volts[[names[circuit.r_node[i].lower()] for i in circuit.neurons]]
    t_s = settle_time(time, rho, settle_v)
    e, _ = energy(time, volts, elements, model, int(np.searchsorted(time, t_s)))
    _, p_end = energy(time, volts, elements, model)
    return {"settle_s": t_s, "energy_j": e, "power_w": p_end}
