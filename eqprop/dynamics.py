"""The one step equation: activation, drive, nudge force and clip, shared by every engine.

Euler engines (``EulerSolver``, the fast engine) arrange the drive W rho(u) + b for speed
(per-block products, a packed GEMM with the leak folded in), but the nudge and the clip
come from here, and the netlist generator and reader take the nudge's gain and current
from ``nudge_gain``/``nudge_current``: the circuit's nudge is the digital one.

The nudge force on the outputs is F = NUDGE_GAIN * beta * (y_d - y) (the cost has no 1/2):
* gradient form (Scellier): the force inside the step, y' = y + eps (h_y - y) + eps F(y);
  its fixed point is the circuit's, so circuit comparisons use it;
* sequential form (Gammell et al.'s code): the free-style update first, clipped, then
  pulled by the force at that clipped value: y' = c + eps F(c), c = clip(y + eps (h_y - y)).
"""
from __future__ import annotations

import torch

NUDGE_FORMS = ("sequential", "gradient")
NUDGE_GAIN = 2.0  # dC/dy of C = ||y - y_d||^2, up to sign


def rho(u: torch.Tensor) -> torch.Tensor:
    """The activation: rho(u) = clip(u, 0, 1)."""
    return u.clamp(0.0, 1.0)


def clip_(s: torch.Tensor) -> torch.Tensor:
    """The clipped dynamics keep the state in [0, 1] (in place)."""
    return s.clamp_(0.0, 1.0)


def nudge_force(y: torch.Tensor, y_d: torch.Tensor, beta) -> torch.Tensor:
    """-beta dC/dy on the outputs: NUDGE_GAIN * beta * (y_d - y)."""
    return NUDGE_GAIN * beta * (y_d - y)


def nudge_gain(beta: float, g0: float = 1.0) -> float:
    """Circuit form of the force's y-term: a VCCS gain -NUDGE_GAIN beta g0 on rho(u_out) (S)."""
    return -NUDGE_GAIN * float(beta) * float(g0)


def nudge_current(beta: float, y_d, g0: float = 1.0):
    """Circuit form of the force's target term: NUDGE_GAIN beta g0 y_d (A), per output."""
    return NUDGE_GAIN * float(beta) * float(g0) * y_d


def beta_from_gain(gain: float, g0: float = 1.0) -> float:
    """Inverse of ``nudge_gain`` (the netlist reader recovers beta from the nudge element)."""
    return -float(gain) / (NUDGE_GAIN * float(g0))


def leaky_step(s: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """The free-style update s + eps (h - s) (not clipped)."""
    return torch.lerp(s, h, eps)


def nudge_(new: torch.Tensor, y_old: torch.Tensor, y_d: torch.Tensor, coef, form: str) -> torch.Tensor:
    """Add the nudge to the outputs ``new`` (a view, changed in place) of one step.

    coef = eps * beta (a number, or a tensor broadcasting over new); y_old: the outputs
    before the step (the gradient form takes the force there).
    """
    if form == "gradient":
        new.addcmul_(NUDGE_GAIN * coef, y_d - y_old) if torch.is_tensor(coef) else new.add_(
            nudge_force(y_old, y_d, coef))
    elif form == "sequential":
        clip_(new)
        new.addcmul_(NUDGE_GAIN * coef, y_d - new) if torch.is_tensor(coef) else new.add_(nudge_force(new, y_d, coef))
    else:
        raise ValueError(f"nudge_form must be one of {NUDGE_FORMS}, got {form!r}")
    return new


def fixed_point_residual(h: torch.Tensor, u: torch.Tensor, beta=0.0, y_d=None, n_out: int = 0) -> torch.Tensor:
    """max |rho(u) - clip(h + nudge)| per example over the given (free) neurons: is u a fixed point?

    h: the drive W rho(u) + b over the same neurons (B, Nf); outputs are the last n_out.
    """
    h = h.clone()
    if y_d is not None and n_out:
        r = rho(u)
        h[..., -n_out:] += nudge_force(r[..., -n_out:], y_d, beta)
    return (rho(u) - rho(h)).abs().amax(-1)
