"""The one solver protocol and its reference backend, the clipped Euler relaxation.

Every backend (``EulerSolver`` here, the fast engine in ``fast_relax``, ``circuits.SpiceSolver``
for ngspice, ``circuits.DeviceEulerSolver`` for the device surrogate) answers:

* ``relax(network, x, u0=None, beta=0.0, target=None) -> u``: the free (beta = 0) or nudged
  equilibrium's state u (pre-activation / node voltage; rho(u) is derived by the caller),
  inputs first and set to x. A plain network takes x (B, n_in), u0 (B, N), target
  (B, n_out) and returns (B, N); a stack of T trials takes x (B, n_in) shared or
  (T, B, n_in), u0 (T, B, N), beta one value or (T,), target (B, n_out) or (T, B, n_out),
  and returns (T, B, N). The nudged phase starts from the free phase's u.
* ``apply_update(network, dW, db, lr_W, lr_b)``: W += lr_W (.) dW, b += lr_b (.) db as the
  backend realises it (exactly for Euler; through the device model for devices), leaving
  ``network`` holding the weights that now act.
* ``prepare(network)``: before training, e.g. program the devices; the network then holds
  the weights that act. ``describe() -> dict``: its settings, recorded in config.json;
  ``close()``. Optional: ``report() -> dict`` (per-epoch diagnostics for metrics.json),
  ``state_dict()`` / ``load_state_dict(state, network)`` (what a checkpoint must keep),
  ``relax_phases(network, x, u0, beta, target) -> (free, nudged)``: both phases of a training
  step in one call (``circuits.SpiceSolver``: one worker round trip for both), the same numbers as
  ``relax`` twice; callers go through ``relax_phases`` below.
"""
from __future__ import annotations

from typing import Protocol

import torch

from .config import EulerConfig
from .couplings import Couplings, coupling_state, input_constant, restore_coupling_state
from .dynamics import clip_, leaky_step, nudge_
from .learning import apply_update as exact_update
from .network import Network


class Solver(Protocol):
    def prepare(self, network: Network) -> None: ...

    def relax(self, network: Network, x, u0=None, beta=0.0, target=None) -> torch.Tensor: ...

    def apply_update(self, network: Network, dW, db, lr_W, lr_b) -> None: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...


def relax_phases(solver, network: Network, x, u0, beta, target) -> tuple[torch.Tensor, torch.Tensor]:
    """A training step's free phase from u0 and its nudged phase from the free state: the solver's own
    ``relax_phases`` where it has one (fewer round trips), else ``relax`` twice."""
    if hasattr(solver, "relax_phases"):
        return solver.relax_phases(network, x, u0, beta, target)
    free = solver.relax(network, x, u0)
    return free, solver.relax(network, x, free, beta, target)


def check_update(network: Network, dW, db, lr_W, lr_b) -> None:
    """Validate one apply_update call before anything changes: dW and db shaped like the network's
    W and b (or flat per trial), everything finite, and the updated weights finite too."""
    def t(v):  # Python numbers as float64: 1e300 is finite, its float32 is not
        return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64)
    for name, d, ref in (("dW", dW, network.W), ("db", db, network.b)):
        if t(d).numel() != ref.numel():
            raise ValueError(f"{name} must have shape {tuple(ref.shape)}, got {tuple(t(d).shape)}")
    # the updated weights first: any non-finite dW, db or rate makes them non-finite too (0 * inf is NaN), so one
    # test per tensor covers every case on the common path; the messages below then say which it was
    new = [ref + (t(rate).to(ref.device) * t(d).to(ref.device)).reshape(ref.shape).to(ref.dtype)
           for ref, rate, d in ((network.W, lr_W, dW), (network.b, lr_b, db))]
    if not (bool(torch.isfinite(new[0]).all()) and bool(torch.isfinite(new[1]).all())):
        for name, v in (("dW", dW), ("db", db), ("lr_W", lr_W), ("lr_b", lr_b)):
            if not bool(torch.isfinite(t(v)).all()):
                raise ValueError(f"{name} has non-finite entries")
        name = "W" if not bool(torch.isfinite(new[0]).all()) else "b"
        raise ValueError(f"the update makes {name} non-finite (lr * d{name} overflows)")
    step = t(dW).to(network.W.device).reshape(network.W.shape)
    if bool(step.masked_fill(network.mask_tensor(), 0).any()):
        raise ValueError("dW has non-zero entries outside the topology's mask (no connection there)")
    if not network.topologies[0].directed and not torch.equal(step, step.transpose(-1, -2)):
        raise ValueError("dW of a Hopfield (undirected) network must be symmetric")


def check_weights(network: Network) -> None:
    """The weights and biases that are about to act are finite (a network may be changed in place)."""
    for name, t in (("W", network.W), ("b", network.b)):
        if not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).reshape(network.T, -1).any(1) if network.stacked else None
            which = "" if bad is None else f" (trial {int(torch.nonzero(bad)[0])})"
            raise ValueError(f"the network's {name} has non-finite entries{which}")


def check_relax(network: Network, x, u0=None, beta=0.0, target=None, check_values: bool = True):
    """Validate one relax call before any work, on the stacked view of ``network``.

    Returns (x, u0, betas, target, nudged): x (B, n_in) or (T, B, n_in), u0 (T, B, N) or
    None, betas (T,) float64 on the host, target (B, n_out) / (T, B, n_out) or None.
    check_values=False skips the finiteness tests of tensors (a host sync on CUDA), for
    callers whose data were validated once (the Trainer's Dataset).
    """
    if not isinstance(network, Network):
        raise TypeError(f"relax takes an eqprop.network.Network, got {type(network).__name__}")
    T, topo = network.T, network.topologies[0]
    N, dev, dt = topo.n, network.device, network.dtype
    plain = not network.stacked
    x = torch.as_tensor(x, device=dev).to(dt)
    if x.ndim not in (2, 3) or x.shape[-1] != topo.n_in or (x.ndim == 3 and (plain or x.shape[0] != T)):
        want = f"(batch, {topo.n_in})" + ("" if plain else f" or ({T}, batch, {topo.n_in})")
        raise ValueError(f"x must have shape {want}, got {tuple(x.shape)}")
    B = x.shape[-2]
    if u0 is not None:
        u0 = torch.as_tensor(u0, device=dev).to(dt)
        want = (B, N) if plain else (T, B, N)
        if tuple(u0.shape) != want:
            raise ValueError(f"u0 must have shape {want}, got {tuple(u0.shape)}")
        u0 = u0.unsqueeze(0) if plain else u0
    betas = torch.as_tensor(beta, dtype=torch.float64).flatten().cpu()
    if betas.numel() == 1:
        betas = betas.expand(T)
    if betas.numel() != T:
        raise ValueError(f"beta must be one value or {T} values (one per trial), got {betas.numel()}")
    if not torch.isfinite(betas).all():
        raise ValueError(f"beta must be finite, got {betas.tolist()}")
    nz = betas != 0
    if nz.any() and not nz.all():
        raise ValueError("beta must be zero for all trials (free phase) or non-zero for all (nudged phase)")
    if nz.any():
        if target is None:
            raise ValueError("a nudged relaxation (beta != 0) needs a target")
        target = torch.as_tensor(target, device=dev).to(dt)
        ok = [(B, topo.n_out)] + ([] if plain else [(T, B, topo.n_out)])
        if tuple(target.shape) not in ok:
            raise ValueError(f"target must have shape {' or '.join(map(str, ok))}, got {tuple(target.shape)}")
    if check_values:
        for name, t in (("x", x), ("u0", u0), ("target", target)):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"{name} has non-finite entries")
    return x, u0, betas, target, bool(nz.any())


class EulerSolver:
    """The reference: s <- clip(s + eps (W rho(s) + b - s) [+ nudge], 0, 1), inputs clamped.

    Autograd flows through it when W requires grad. A stack relaxes trial by trial, each
    exactly as a plain network would (per-trial ``tol`` stops). ``last_steps`` (max over
    trials) and ``last_steps_per_trial`` tell how many steps ran. The clipped state s is
    its u: rho(s) = s, and s* is rho(u*) of the leaky form's fixed point.
    """

    def __init__(self, config: EulerConfig | None = None):
        self.config = config or EulerConfig()
        if self.config.free_method != "fixed":
            raise ValueError(f"EulerSolver runs the fixed-step reference; free_method {self.config.free_method!r} "
                             f"is the fast engine's (eqprop.fast_relax.make_euler_solver picks it)")
        self.last_steps = 0
        self.last_steps_per_trial: list[int] = []
        self._chosen: dict[str, str] = {}  # coupling auto: the measured mode per batch size
        self._coupling_keys: set = set()  # the measured choices this solver relaxed with (its checkpoint)

    def describe(self) -> dict:
        d = {"solver": type(self).__name__, **self.config.to_dict()}
        return {**d, "coupling_chosen": dict(self._chosen)} if self._chosen else d

    def state_dict(self) -> dict:
        """The measured coupling choices: a resumed run relaxes with the same arithmetic (no new measurement)."""
        return coupling_state(self._coupling_keys)

    def load_state_dict(self, state: dict, network) -> None:
        restore_coupling_state(state, self._coupling_keys)

    def close(self) -> None:
        pass

    def prepare(self, network) -> None:
        pass  # weights act exactly as the network holds them

    def apply_update(self, network, dW, db, lr_W, lr_b) -> None:
        exact_update(network, dW, db, lr_W, lr_b)

    def relax(self, network, x, u0=None, beta=0.0, target=None):
        x, u0, betas, target, nudged = check_relax(network, x, u0, beta, target)
        stack = network.as_stack()
        outs, used = [], []
        for t in range(stack.T):
            xt = x[t] if x.ndim == 3 else x
            yt = None if not nudged else (target[t] if target.ndim == 3 else target)
            outs.append(self._relax_one(stack.trial(t), xt, None if u0 is None else u0[t], float(betas[t]), yt))
            used.append(self.last_steps)
        self.last_steps_per_trial, self.last_steps = used, max(used)
        return torch.stack(outs) if network.stacked else outs[0]

    def _relax_one(self, net: Network, x, u0, beta: float, y_d):
        cfg, topo = self.config, net.topology
        steps = cfg.free_steps if beta == 0 else cfg.nudged_steps
        with torch.set_grad_enabled(torch.is_grad_enabled() and net.W.requires_grad):
            cpl = Couplings.build(net, cfg.coupling, batch=x.shape[0], used=self._coupling_keys)
            if cfg.coupling == "auto":
                self._chosen[f"B{x.shape[0]}"] = "dense" if cpl.dense is not None else "blocks"
            const = input_constant(net, x)
            if u0 is None:
                s = torch.zeros(x.shape[0], topo.n - topo.n_in, dtype=net.dtype, device=net.device)
            else:
                s = u0[:, topo.n_in:].clamp(0, 1)
            out = slice(s.shape[1] - topo.n_out, s.shape[1])
            self.last_steps = steps
            for t in range(steps):
                new = leaky_step(s, cpl.drive(const, s), cfg.eps)
                if beta != 0:
                    if new.requires_grad:
                        new = new.clone()
                    nudge_(new[:, out], s[:, out], y_d, cfg.eps * beta, cfg.nudge_form)
                new = clip_(new) if not new.requires_grad else new.clamp(0, 1)
                if cfg.tol is not None and (t + 1) % cfg.check_every == 0:
                    if float((new - s).abs().max()) < cfg.tol:
                        s = new
                        self.last_steps = t + 1
                        break
                s = new
            return torch.cat([x, s], dim=1)

