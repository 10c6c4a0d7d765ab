"""DeviceEulerSolver: the digital surrogate of a crossbar, the device model in the loop.

The same ``DeviceArray`` (circuits.devices) that ``SpiceSolver`` uses at crossbar level,
seeded the same way per trial, holds each trial's device pairs; an Euler engine relaxes
the weights those devices realise (with d2d mismatch a symmetric network's two
directions differ, so the relaxation runs on a directed copy). Every update goes
through the device model. On small nets one instance gives the same equilibria and the
same weights as ngspice at crossbar level (tests/test_device_loop.py, test_device_models.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from eqprop.config import EulerConfig
from eqprop.fast_relax import make_euler_solver
from eqprop.network import Network
from eqprop.topology import Topology

from .devices import (
    DeviceArray,
    DeviceModel,
    instance_seed,
    load_device,
    symmetrise,
    weight_asymmetry,
)


class DeviceEulerSolver:
    """Euler relaxation of the weights T device instances realise; updates through the devices.

    device: a DeviceModel or preset name; euler: the EulerConfig of the inner engine (the
    circuit's nudge is the gradient form: use it to compare with ngspice); device_seed:
    trial t's instance draws from ``devices.instance_seed(device_seed, t)``.
    """

    def __init__(self, device: DeviceModel | str = "ideal", euler: EulerConfig | None = None, device_seed: int = 0,
                 clip_weights: bool = False, device_type="cpu"):
        self.device = load_device(device) if isinstance(device, str) else device
        if not isinstance(self.device, DeviceModel):
            raise ValueError(f"device must be a DeviceModel, a preset name or a device TOML path, got {device!r}")
        self.euler = euler or EulerConfig(nudge_form="gradient")
        self.device_seed, self.clip_weights = int(device_seed), bool(clip_weights)
        self.inner = make_euler_solver(self.euler, device_type)
        self.arrays: list[DeviceArray] = []
        self._acting: Network | None = None  # the realised weights, as a directed stack

    def describe(self) -> dict:
        return {"solver": type(self).__name__, "device": dataclasses.asdict(self.device),
                "device_seed": self.device_seed, "clip_weights": self.clip_weights, "euler": self.euler.to_dict()}

    def close(self) -> None:
        self.inner.close()

    # -- devices -------------------------------------------------------------------------
    def prepare(self, network: Network) -> None:
        """Program every trial's instance from the network's weights; the network then holds the
        devices' symmetrised nominal weights."""
        stack = network.as_stack()
        self.arrays = [DeviceArray(self.device, t.mask, instance_seed(self.device_seed, i), clip=self.clip_weights,
                                   topology=t) for i, t in enumerate(stack.topologies)]
        for t, arr in enumerate(self.arrays):
            arr.program(stack.W[t].detach().cpu().double().numpy())
        self._refresh(stack)

    def _refresh(self, stack: Network) -> None:
        nominal = np.stack([symmetrise(a.nominal_weights(), t.directed) for a, t in zip(self.arrays, stack.topologies)])
        real = torch.as_tensor(np.stack([a.realised_weights() for a in self.arrays]), dtype=stack.dtype,
                               device=stack.device)
        with torch.no_grad():
            stack.W.copy_(torch.as_tensor(nominal))
        if self._acting is None or self._acting.W.shape != real.shape:
            topos = tuple(Topology(t.sizes, t.mask, directed=True, info=t.info) for t in stack.topologies)
            self._acting = Network(topos, real, stack.b)
        else:
            self._acting.W.copy_(real)  # in place: the fast engine's kernels keep reading it
        self._acting.b = stack.b

    def _check(self, network: Network) -> Network:
        stack = network.as_stack()
        if len(self.arrays) != stack.T:
            raise RuntimeError(f"DeviceEulerSolver holds {len(self.arrays)} device instances, the network has "
                               f"{stack.T} trials: call prepare(network) first (the Trainer does)")
        return stack

    def report(self) -> dict:
        """Per trial: saturated weights, ||W - W^T|| / ||W|| of the realised weights, and per block the
        fraction of requested weight changes since the last report that moved no device (lost)."""
        return {"clipped_weights": [a.n_clipped for a in self.arrays],
                "realised_asymmetry": [weight_asymmetry(a.realised_weights()) for a in self.arrays],
                "lost_fraction": [a.lost_fraction() for a in self.arrays]}

    def realised_weights(self, t: int = 0) -> np.ndarray:
        return self.arrays[t].realised_weights()

    def state_dict(self) -> dict:
        # the inner engine's measured coupling choice too: a resumed run relaxes with the same arithmetic
        return {"arrays": {t: a.state_dict() for t, a in enumerate(self.arrays)}, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict, network: Network) -> None:
        stack = network.as_stack()
        if len(self.arrays) != stack.T:
            self.prepare(network)
        for t, d in state["arrays"].items():
            self.arrays[int(t)].load_state_dict(d)
        if "inner" in state:  # checkpoints before the inner engine's choice was kept have none
            self.inner.load_state_dict(state["inner"], network)
        self._refresh(stack)

    # -- the solver protocol ----------------------------------------------------------------
    def relax(self, network: Network, x, u0=None, beta=0.0, target=None):
        stack = self._check(network)
        self._acting.b = stack.b
        if self.device.read_varies:  # this solve's read (drift, read noise): one draw per trial, as ngspice's
            read = np.stack([a.read().weights() for a in self.arrays])
            self._acting.W.copy_(torch.as_tensor(read, dtype=self._acting.W.dtype))
        acting = self._acting if network.stacked else self._acting.trial(0)
        return self.inner.relax(acting, x, u0, beta, target)

    def apply_update(self, network: Network, dW, db, lr_W, lr_b) -> None:
        stack = self._check(network)
        step = (lr_W * dW).detach().cpu().double().numpy().reshape(stack.W.shape)
        # one trial at a time: all trials stacked into one numpy update measured 0.5-0.7x as fast on
        # the project's CPU machine (T 32, 13-32-32-3); the relaxation dominates a batch anyway
        for t, arr in enumerate(self.arrays):
            arr.update(step[t])
        with torch.no_grad():
            stack.b.add_((lr_b * db).reshape(stack.b.shape))
        self._refresh(stack)
