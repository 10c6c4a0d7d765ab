"""DEEP on the circuit side: ngspice (``DeepSpiceSolver``) and the device surrogate (``DeviceDeepSolver``).

``DeepSpiceSolver`` is ``SpiceSolver`` with DEEP's neuron circuit (netlist_gen.blocks_deep: no leak,
the self term g0 sum_k W_jk as a signed VCCS, the stiff clamp): the same circuits per trial, workers,
device instances at crossbar level, alters and settle checks. On top it

* alters the self terms ``Gs<j>`` of every row whose weights an update changed (the row sums of the
  weights that act: the realised device weights at crossbar level);
* records the nudged phase's trajectory for DEEP's rule (``eqprop.deep_rule.DeepRule``), as
  ``eqprop.deep.DeepSolver`` does: the first transient of every nudged example, sampled at
  t_k = k * record_dt * tau (k = 0..S, S = t_nudged / record_dt; linear interpolation between
  ngspice's time points), clipped to [0, 1], inputs included: (S + 1, T, B, N) from
  ``take_trajectory()``. With t_nudged = T2 * dt and record_dt = dt it is DeepSolver's grid.

To mirror DeepSolver's fixed step counts (T1, T2 steps of dt) use method "tran", t_free = T1 dt,
t_nudged = T2 dt, max_extend = 0 and on_unsettled = "warn": the state after that time is the
"equilibrium", settled or not. For exact equilibria (spice-check) use "tran+op" with long transients.

``DeviceDeepSolver`` is ``DeviceEulerSolver`` (the crossbar's digital surrogate: the same
``DeviceArray`` per trial, updates through the device model) with DEEP's dynamics relaxing the
realised weights instead of the leaky Euler engine.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from eqprop.deep import DeepConfig, DeepSolver
from eqprop.deep_stability import deep_jacobian, stability_summary
from eqprop.network import Network
from netlist_gen.blocks_deep import self_term_name

from .device_solver import DeviceEulerSolver
from .devices import DeviceModel
from .spice_config import SpiceConfig
from .spice_solver import SpiceSolver


class DeepSpiceSolver(SpiceSolver):
    """DEEP's circuit solved by ngspice; the solver protocol plus ``take_trajectory`` for DeepRule.

    record_dt: the nudged trajectory's sampling step in tau (t_nudged must be a whole number of
    them). eig_max_neurons: the per-epoch stability report's eigenvalue limit (DeepConfig's).
    """

    dynamics = "deep"

    def __init__(self, config: SpiceConfig | None = None, record_dt: float = 0.05, eig_max_neurons: int = 64,
                 **settings):
        super().__init__(config, **settings)
        if isinstance(record_dt, bool) or not isinstance(record_dt, (int, float)) or not (
                math.isfinite(record_dt) and record_dt > 0):
            raise ValueError(f"DeepSpiceSolver: record_dt must be a positive number, got {record_dt!r}")
        steps = self.config.t_nudged / record_dt
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) < 1:
            raise ValueError(f"DeepSpiceSolver: t_nudged ({self.config.t_nudged} tau) must be a whole number (>= 1) "
                             f"of record_dt ({record_dt} tau)")
        if self.config.clamp <= 0:
            raise ValueError("DeepSpiceSolver: DEEP's circuit needs clamp > 0 (spice config clamp)")
        if self.config.level not in ("ideal", "crossbar"):
            raise ValueError(f"DeepSpiceSolver: DEEP's neuron exists at levels ideal and crossbar, not "
                             f"{self.config.level!r}")
        self.record_dt, self.record_steps = float(record_dt), int(round(steps))
        self.eig_max_neurons = int(eig_max_neurons)
        self.trajectory: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None  # the W last relaxed (DeepRule's L1 term reads its sign)
        self.rule: dict | None = None  # the DeepRule reading this solver, recorded with our settings
        self._n_in = 0

    def describe(self) -> dict:
        d = {**super().describe(), "dynamics": self.dynamics, "record_dt": self.record_dt}
        return d if self.rule is None else {**d, "rule": dict(self.rule)}

    # -- relaxation with the recorded nudged trajectory ---------------------------------------
    def relax(self, network: Network, x, u0=None, beta=0.0, target=None) -> torch.Tensor:
        for slots in self._slots.values():
            for slot in slots:
                slot.traj = {}
        u = super().relax(network, x, u0, beta, target)
        stack = network.as_stack()
        self.weights, self._n_in = network.W, stack.topologies[0].n_in
        parts = {(t, b): a for t, slots in self._slots.items() if t < stack.T
                 for slot in slots for b, a in getattr(slot, "traj", {}).items()}
        if parts:  # a nudged phase: every example recorded its transient
            us = u if network.stacked else u.unsqueeze(0)
            T, B, N = us.shape
            n_in = self._n_in
            traj = torch.empty(self.record_steps + 1, T, B, N, dtype=u.dtype, device=u.device)
            traj[..., :n_in] = us[..., :n_in]
            for (t, b), a in parts.items():
                traj[:, t, b, n_in:] = torch.as_tensor(a, dtype=u.dtype)
            self.trajectory = traj if network.stacked else traj[:, 0]
        return u

    def _after_transient(self, slot, b: int, beta: float, nodes: list[str]) -> None:
        if beta == 0:
            return
        tau = self.config.c / self.config.g0
        vec = slot.session.call([("get", ["time", *nodes], None)], "read the nudged trajectory")[0]
        time_s, volts = vec[0], vec[1:]
        grid = np.arange(self.record_steps + 1) * (self.record_dt * tau)
        grid[-1] = min(grid[-1], time_s[-1])  # the transient ends at tstop up to rounding
        samples = np.stack([np.interp(grid, time_s, v) for v in volts], axis=1)
        slot.__dict__.setdefault("traj", {})[b] = np.clip(samples, 0.0, 1.0)  # slots are made lazily: no field

    # the last nudged phase's s(0..S), sampled on the record grid, handed over once (as DeepSolver's)
    take_trajectory = DeepSolver.take_trajectory

    # -- updates: the self terms follow their rows --------------------------------------------
    def _push(self, slot, network, t, changed: np.ndarray, b_changed: np.ndarray) -> None:
        cfg = self.config
        reload = cfg.update == "renetlist" or cfg.method != "tran"
        super()._push(slot, network, t, changed, b_changed)
        if reload or slot.circuit is None or not slot.session.alive or slot.W is None:
            return  # reloaded (or reloaded at the next relax): the self terms are written afresh
        rows = [int(j) for j in np.nonzero(np.asarray(changed).any(axis=1))[0] if j >= network.topology.n_in]
        if rows:
            R = self.acting_weights(network, t).sum(axis=1)
            self._alter_later(slot, {self_term_name(j): cfg.g0 * float(R[j]) for j in rows})

    def acting_weights(self, network: Network, t: int = 0) -> np.ndarray:
        """The (N, N) weights trial t's circuit realises (masked): W, or the devices' (G+ - G-)/g_unit."""
        mask = network.topology.mask
        if self.config.level == "crossbar":
            return np.where(mask, self._arrays[t].realised_weights(), 0.0)
        return np.where(mask, network.W.detach().cpu().double().numpy(), 0.0)

    def report(self) -> dict:
        """The device report (crossbar), the transients still moving at their end since the last report
        (``unsettled``; with on_unsettled "warn") and DEEP's stability report of the weights that act."""
        if self.weights is None:
            return super().report()
        W = self.weights if self.weights.ndim == 3 else self.weights.unsqueeze(0)
        rep = super().report()  # with the unsettled transients per trial
        if self.config.level == "crossbar":
            W = torch.as_tensor(np.stack([self._arrays[t].realised_weights() for t in range(W.shape[0])]))
        rep.update(stability_summary(deep_jacobian(W.double(), self._n_in), self.eig_max_neurons))
        return rep


class DeviceDeepSolver(DeviceEulerSolver):
    """DEEP's dynamics (``eqprop.deep.DeepSolver``) on the weights T device instances realise; every
    update through the device model. ``DeepRule(solver)`` reads the inner solver's trajectory."""

    def __init__(self, device: DeviceModel | str = "ideal", deep: DeepConfig | None = None, device_seed: int = 0,
                 clip_weights: bool = False, trial_seeds=None, device_type="cpu"):
        super().__init__(device, None, device_seed, clip_weights, device_type)
        self.inner.close()
        self.deep = deep or DeepConfig()
        if self.deep.prune:
            raise ValueError("DeviceDeepSolver: pruning through devices is not modelled (DeepConfig(prune=False))")
        self.inner = DeepSolver(self.deep, trial_seeds=trial_seeds)
        self.rule: dict | None = None

    def describe(self) -> dict:
        d = {"solver": type(self).__name__, "device": dataclasses.asdict(self.device), "device_seed": self.device_seed,
             "clip_weights": self.clip_weights, "deep": self.deep.to_dict()}
        return d if self.rule is None else {**d, "rule": dict(self.rule)}

    @property
    def weights(self):
        return self.inner.weights

    def take_trajectory(self) -> torch.Tensor:
        return self.inner.take_trajectory()

    def report(self) -> dict:
        """Device state, DEEP's stability report, and how far the realised weights are from the nominal
        ones: ||W_real - W_nom|| / ||W_nom|| (d2d gains, write noise)."""
        rep = {**self.inner.report(), **super().report()}
        rep["realised_deviation"] = [_rel(a.realised_weights() - a.nominal_weights(), a.nominal_weights())
                                     for a in self.arrays]
        return rep


def _rel(d: np.ndarray, ref: np.ndarray) -> float:
    n = float(np.linalg.norm(ref))
    return 0.0 if n == 0 else float(np.linalg.norm(d)) / n

