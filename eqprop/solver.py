"""The one solver interface and its reference backend, the clipped Euler relaxation.

Every backend (``EulerSolver`` here, ``circuits.SpiceSolver`` for ngspice) answers
``relax(network, x, state0, beta, target, steps) -> state``: states are (B, N) over all
neurons with inputs set to x; beta = 0 is the free phase, beta != 0 the nudged phase.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import torch

from .couplings import Couplings, input_constant
from .network import Network

NUDGE_FORMS = ("sequential", "gradient")
COUPLINGS = ("auto", "dense", "blocks")


class Solver(Protocol):
    def relax(self, network: Network, x: torch.Tensor, state0: torch.Tensor | None = None,
              beta: float = 0.0, target: torch.Tensor | None = None,
              steps: int | None = None) -> torch.Tensor: ...


@dataclasses.dataclass
class EulerSolver:
    """Forward Euler on s <- clip(s + eps (W rho(s) + b - s), 0, 1), inputs clamped.

    nudge_form: "sequential" (Gammell et al.'s code: the free-style update, then
    y <- clip(y + 2 eps beta (y_d - y)); the paper's reproductions) or "gradient"
    (Scellier: the force 2 beta (y_d - y) inside the same step; its fixed point is the
    circuit's). tol: if set, a phase stops once max |ds| < tol (never the default: the
    paper's runs use fixed step counts). ``last_steps`` tells how many steps ran.
    """

    eps: float = 0.5
    free_steps: int = 500
    nudged_steps: int = 8
    nudge_form: str = "sequential"
    tol: float | None = None
    coupling: str = "auto"
    check_every: int = 10
    last_steps: int = dataclasses.field(default=0, init=False)

    def __post_init__(self):
        if self.nudge_form not in NUDGE_FORMS:
            raise ValueError(f"nudge_form must be one of {NUDGE_FORMS}, got {self.nudge_form!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must lie in (0, 1], got {self.eps}")
        if self.free_steps < 0 or self.nudged_steps < 0:
            raise ValueError("step counts must be >= 0")
        if self.check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {self.check_every}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {self.coupling!r}")

    def relax(self, network, x, state0=None, beta=0.0, target=None, steps=None):
        topo = network.topology
        x = check_inputs(network, x, state0, beta, target)
        B = x.shape[0]
        if steps is None:
            steps = self.free_steps if beta == 0 else self.nudged_steps
        with torch.set_grad_enabled(torch.is_grad_enabled() and network.W.requires_grad):
            cpl = Couplings.build(network, self.coupling)
            const = input_constant(network, x)
            if state0 is None:
                s = torch.zeros(B, topo.n - topo.n_in, dtype=network.dtype, device=network.device)
            else:
                s = state0[:, topo.n_in:].to(network.dtype).clamp(0, 1)
            y_d = None if beta == 0 else target.to(network.dtype)
            eps, out = self.eps, slice(s.shape[1] - topo.n_out, s.shape[1])
            self.last_steps = steps
            for t in range(steps):
                new = torch.lerp(s, cpl.drive(const, s), eps)  # s + eps (W rho(s) + b - s)
                if y_d is not None:
                    new = self._nudge(new, s[:, out], y_d, beta, out)
                new = new.clamp_(0, 1)
                if self.tol is not None and (t + 1) % self.check_every == 0:
                    if float((new - s).abs().max()) < self.tol:
                        s = new
                        self.last_steps = t + 1
                        break
                s = new
            return torch.cat([x.to(network.dtype), s], dim=1)

    def _nudge(self, new, y, y_d, beta, out):
        """Output nudging: the force 2 beta (y_d - y) on the free-style update `new`."""
        new = new.clone() if new.requires_grad else new
        if self.nudge_form == "gradient":
            new[:, out] = new[:, out] + 2 * self.eps * beta * (y_d - y)
        else:
            yc = new[:, out].clamp(0, 1)
            new[:, out] = yc + 2 * self.eps * beta * (y_d - yc)
        return new


def check_inputs(network: Network, x, state0, beta, target) -> torch.Tensor:
    """Validate a relax call before any work; returns x as a tensor on the network's device."""
    topo = network.topology
    x = torch.as_tensor(x, device=network.device)
    if x.ndim != 2 or x.shape[1] != topo.n_in:
        raise ValueError(f"x must have shape (batch, {topo.n_in}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x has non-finite entries")
    if state0 is not None and tuple(state0.shape) != (x.shape[0], topo.n):
        raise ValueError(f"state0 must have shape ({x.shape[0]}, {topo.n}), got {tuple(state0.shape)}")
    if beta != 0:
        if target is None:
            raise ValueError("a nudged relaxation (beta != 0) needs a target")
        if tuple(target.shape) != (x.shape[0], topo.n_out):
            raise ValueError(f"target must have shape ({x.shape[0]}, {topo.n_out}), got {tuple(target.shape)}")
    return x
