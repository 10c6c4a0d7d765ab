"""The digital surrogate of the physical level, where one is cheap.

The step equation of eqprop.dynamics (``leaky_step``, ``nudge_force``) with the circuit's
non-idealities put into its parts instead of a second solver:

* the activation becomes the neuron's static transfer: the rho node voltage at which node
  u balances its input current (diode clamp: Shockley diodes behind ``diode_rs``, the
  leak, the stiff clamp and, for the conductance nudge, that conductance), tabulated once
  on a fine grid and interpolated;
* the device read nonlinearity acts on the presynaptic voltage: p(r) = V0 sinh(r/V0);
* a finite-gain TIA is a scale per column: its input sits at I R_f/(1 + A), so a column
  of conductances G_k delivers A/(1+A) * sum G_k (r_k - A/(1+A) V_os) / (1 + R_f/(1+A) sum G_k);
  the output swing clips each TIA's output; gain-bandwidth and parasitic capacitance only
  change the dynamics, not the equilibrium.
Wire resistance (IR drop along rows and columns) has no cheap surrogate: SPICE is the
reference there (``NO_SURROGATE``). The read nonlinearity together with a finite TIA gain
is approximated (the device voltage is taken as r - A/(1+A) V_os, not r - V_column).
State s = the rho node voltages; the fixed point iteration is s <- leaky_step(s, T(h(s)), eps),
whose fixed points are the circuit's equilibria.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from eqprop.dynamics import NUDGE_GAIN, leaky_step, nudge_force
from eqprop.network import Network

from .physical import PhysicalModel

NO_SURROGATE = ("r_row", "r_col")  # wire resistance: SPICE is the reference
# kT/q at ngspice's default 27 C, with ngspice's constants (CONSTboltz, CHARGE in const.h), V
THERMAL_VOLTAGE = 1.38064852e-23 * 300.15 / 1.6021766208e-19
GRID_POINTS = 100_001
DIODE_GMIN = 1e-12  # S, ngspice's default gmin, which its diode adds across each junction


def no_surrogate(model: PhysicalModel) -> tuple[str, ...]:
    """The non-idealities in effect that the surrogate leaves out."""
    return tuple(k for k in NO_SURROGATE if getattr(model, k) != 0)


def diode_current(vd: np.ndarray, m: PhysicalModel) -> np.ndarray:
    """ngspice's diode current at junction voltage vd (A): Shockley forward and to -3 n Vt,
    beyond that its reverse form -Is (1 + (3 n Vt / (e vd))^3) (no breakdown given), plus gmin vd.

    The reverse form matters: the stiff clamp multiplies the leakage through diode_rs by
    its gain (1e3), so plain Shockley there was off by 4e-5 V at 1 nA saturation current.
    """
    vte = m.diode_n * THERMAL_VOLTAGE
    fwd = vd >= -3.0 * vte
    safe = np.where(fwd, -1.0, vd)
    rev = -m.diode_is * (1.0 + (3.0 * vte / (math.e * safe)) ** 3)
    return np.where(fwd, m.diode_is * np.expm1(np.minimum(vd / vte, 700.0)), rev) + DIODE_GMIN * vd


def diode_node(u: np.ndarray, m: PhysicalModel) -> np.ndarray:
    """Voltage a of the clamp node for node voltage u: (u - a)/Rs = diode currents out of a (bisection)."""

    def excess(a):  # current into a through Rs minus the diodes' current out of a; decreasing in a
        return (u - a) / m.diode_rs - diode_current(a - m.v_high, m) + diode_current(m.v_low - a, m)

    lo, hi = np.minimum(u, m.v_low) - 1.0, np.maximum(u, m.v_high) + 1.0
    for _ in range(64):  # the bracket (< 2^10 V wide) halves each time: 64 halvings reach float64 resolution
        mid = 0.5 * (lo + hi)
        pos = excess(mid) > 0
        lo, hi = np.where(pos, mid, lo), np.where(pos, hi, mid)
    return 0.5 * (lo + hi)


def physical_activation(u: torch.Tensor, model: PhysicalModel) -> torch.Tensor:
    """The voltage the circuit's rho node holds at node voltage u (the diode clamp is static: no charge).

    A user neuron (activation "subckt") has no model here: rho(u) = clip(u), as the protocol defines it.
    """
    if model.activation != "diode":
        return u.clamp(0.0, 1.0)
    return torch.as_tensor(diode_node(u.detach().cpu().double().numpy(), model), dtype=u.dtype, device=u.device)


class NeuronTransfer:
    """rho as a function of the total input current h (in units of g0 V) of a neuron.

    Node u: g0 u + (u - a)/Rs + k g0 (u - rho) + gn (u - y) = g0 h (gn: the conductance
    nudge, whose y-part is in h). Ideal activation: rho = clip(u) = clip(h / (1 + gn/g0)).
    """

    def __init__(self, m: PhysicalModel, g0: float, clamp: float, g_nudge: float = 0.0):
        self.ideal = m.activation == "ideal"
        self.scale = 1.0 + g_nudge / g0
        if self.ideal:
            return
        u = np.linspace(m.v_low - 5.0, m.v_high + 5.0, GRID_POINTS)
        a = diode_node(u, m)
        h = u * self.scale + (u - a) * (1.0 / (g0 * m.diode_rs) + clamp)
        if not np.all(np.diff(h) > 0):
            raise ValueError("the diode neuron's transfer is not monotone on the grid; check diode_rs and g0")
        self.h, self.a = h, a

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.ideal:
            return (h / self.scale).clamp(0.0, 1.0)
        out = np.interp(h.detach().cpu().numpy(), self.h, self.a)
        return torch.as_tensor(out, dtype=h.dtype, device=h.device)


@functools.lru_cache(maxsize=16)
def transfer(model: PhysicalModel, g0: float, clamp: float, g_nudge: float = 0.0) -> NeuronTransfer:
    """A cached ``NeuronTransfer`` (its table takes ~1 s to build)."""
    return NeuronTransfer(model, float(g0), float(clamp), float(g_nudge))


def _columns(m: PhysicalModel, Gp: np.ndarray, Gm: np.ndarray, g_unit: float, first_src: int, n_in: int):
    """Per TIA column: (conductances (srcs, free dst) scaled by the finite-gain factor, gain k)."""
    A = m.tia_gain
    k = 1.0 if math.isinf(A) else A / (1.0 + A)
    r_in = 0.0 if math.isinf(A) else 1.0 / (g_unit * (1.0 + A))  # the TIA's input resistance R_f/(1+A)
    out = []
    for G in (Gp, Gm):
        Gc = G[first_src:, n_in:]
        out.append(Gc / (1.0 + r_in * Gc.sum(axis=0, keepdims=True)))
    return out[0], out[1], k


def surrogate_relax(network: Network, x, model: PhysicalModel, arrays, g0: float = 1.0, clamp: float = 0.0,
                    beta: float = 0.0, target=None, fold_inputs: bool = True, eps: float = 0.5, tol: float = 1e-12,
                    max_steps: int = 200_000, s0=None) -> torch.Tensor:
    """The surrogate's equilibrium rho (B, N) (inputs: rho(x)) of one network (not a stack).

    arrays: the device pairs (Gp, Gm, g_unit) the circuit holds (``circuits.devices``). Raises
    if the iteration does not settle to ``tol`` within ``max_steps``.
    """
    topo = network.topology
    n_in, n, n_out = topo.n_in, topo.n, topo.n_out
    Gp, Gm, g_unit = (np.asarray(arrays[0], float), np.asarray(arrays[1], float), float(arrays[2]))
    mask = topo.mask
    Gp, Gm = np.where(mask, Gp, 0.0), np.where(mask, Gm, 0.0)
    first_src = n_in if fold_inputs else 0
    x = torch.as_tensor(x, dtype=torch.float64).clamp(0.0, 1.0)
    x = x[None] if x.ndim == 1 else x
    b = network.b.detach().double()[n_in:]
    const = b.expand(x.shape[0], -1).clone()
    if fold_inputs:  # ideal current sources Ix carry the inputs' drive with the devices' effective weights
        const += x @ torch.as_tensor((Gp - Gm)[:n_in, n_in:] / g_unit)
    cp, cm, k = (torch.as_tensor(a) if isinstance(a, np.ndarray) else a
                 for a in _columns(model, Gp, Gm, g_unit, first_src, n_in))
    vos, v0, sw = model.tia_offset, model.read_v0, model.tia_swing
    shift = k * vos

    def presyn(r):
        v = r - shift
        return v if math.isinf(v0) else v0 * torch.sinh(v / v0)

    def drive(s):
        r = s if fold_inputs else torch.cat([x, s], dim=1)
        p = presyn(r)
        vp, vm = k * (vos - (p @ cp) / g_unit), k * (vos - (p @ cm) / g_unit)  # TIA outputs, V
        if math.isfinite(sw):
            vp, vm = vp.clamp(-sw, sw), vm.clamp(-sw, sw)
        return const + (vm - vp)

    nudged = beta != 0
    y = None if not nudged else torch.as_tensor(target, dtype=torch.float64).reshape(x.shape[0], n_out)
    conductance = nudged and model.nudge == "conductance"
    hidden = transfer(model, g0, clamp)
    outputs = transfer(model, g0, clamp, NUDGE_GAIN * beta * g0) if conductance else hidden
    s = torch.zeros(x.shape[0], n - n_in, dtype=torch.float64) if s0 is None else \
        torch.as_tensor(s0, dtype=torch.float64)[..., n_in:].reshape(x.shape[0], n - n_in).clone()
    for step in range(max_steps):
        h = drive(s)
        if nudged:  # current form: the force at the present rho; conductance form: its Norton current
            h[:, -n_out:] += NUDGE_GAIN * beta * y if conductance else nudge_force(s[:, -n_out:], y, beta)
        target_s = torch.cat([hidden(h[:, :-n_out]), outputs(h[:, -n_out:])], dim=1)
        new = leaky_step(s, target_s, eps)
        if float((new - s).abs().max()) < tol:
            surrogate_relax.last_steps = step + 1
            return torch.cat([x, new], dim=1)
        s = new
    raise RuntimeError(f"the physical surrogate did not settle to {tol:g} in {max_steps} steps (eps {eps}); "
                       f"a smaller eps may help")
