"""A slow transient's limit, for SpiceConfig.on_unsettled = "polish".

A learned net can have a mode that decays with a time constant of thousands of tau (iris, seed 52,
epoch 7: each 300 tau window moved the state 0.897 times as far as the one before, along one fixed
direction, still 3.4e-5 V/tau after 3,300 tau). The transient then never meets settle_tol, though the
circuit has an equilibrium and is heading to it. Over windows of equal length a single decaying mode
moves the state by a geometric series of the same direction, so its limit is (Aitken's extrapolation)

    u_inf = e_M + d_M r / (1 - r),   d_k = e_k - e_{k-1},  r = |d_M| / |d_{M-1}|

from the ends e_k of the last three windows. Newton from e_M (the .op polish) solves for a fixed point
exactly; ``polish_agrees`` accepts it only where it is this limit, i.e. the fixed point the dynamics
is going to, not another one Newton happens to find (on the case above: 5e-6 apart, at 0.094 from e_M).
Plain numpy: the ngspice worker process imports it.
"""
from __future__ import annotations

import numpy as np

ON_UNSETTLED = ("raise", "warn", "polish")  # SpiceConfig.on_unsettled
MIN_COSINE = 0.99  # the last two windows' displacements point the same way (one mode)
MAX_RATIO = 0.99  # ... and shrink: nearer 1 the extrapolation divides by almost nothing
AGREE = 0.01  # Newton's fixed point within this fraction of the extrapolated distance from the limit
AGREE_FLOOR = 1e-6  # V: and never asked closer than this (the .op's own tolerances are far below it)


def geometric_limit(ends) -> tuple[np.ndarray | None, str]:
    """The limit the last three window ends (oldest first, each (n,)) extrapolate to, and a note
    for errors: (limit, "ratio r, cosine c") or (None, why there is none)."""
    if len(ends) < 3:
        return None, f"{len(ends)} window end(s), 3 needed (max_extend >= 2)"
    e0, e1, e2 = (np.asarray(e, dtype=float) for e in ends[-3:])
    d, dp = e2 - e1, e1 - e0
    nd, ndp = np.linalg.norm(d), np.linalg.norm(dp)
    if nd == 0.0 or ndp == 0.0:
        return None, "a window did not move"
    r, cos = float(np.abs(d).max() / np.abs(dp).max()), float(d @ dp / (nd * ndp))
    why = f"successive windows' moves in ratio {r:.4g}, cosine {cos:.4g}"
    if cos < MIN_COSINE or not r < MAX_RATIO:
        return None, why + f" (a single decaying mode needs a cosine >= {MIN_COSINE} and a ratio < {MAX_RATIO})"
    return e2 + d * (r / (1.0 - r)), why


def polish_agrees(u2, end, limit) -> tuple[bool, str]:
    """Whether Newton's fixed point u2 is the extrapolated limit (see the module's docstring), and a
    note saying how far apart they are."""
    u2, end, limit = (np.asarray(v, dtype=float) for v in (u2, end, limit))
    gap, reach = float(np.abs(u2 - limit).max()), float(np.abs(limit - end).max())
    ok = gap <= AGREE * reach + AGREE_FLOOR
    return ok, f"Newton's fixed point {gap:.3g} V from the extrapolated limit, which is {reach:.3g} V from the end"


def unsettled_message(max_extend: int, window_tau: float, rate: float, settle_tol: float, why: str = "") -> str:
    """The error of a transient still moving after its extensions (``why``: what on_unsettled "polish"
    found, where it ran)."""
    return (f"the transient had not settled after {max_extend + 1} x {window_tau:g} tau: max |du/dt| = {rate:.3g} "
            f"V/tau > settle_tol {settle_tol:g}" + (f"; no verified limit: {why}" if why else "")
            + "; lengthen t_free/t_nudged or max_extend, set on_unsettled='polish' (Newton's fixed point where it "
            "is the limit the slowing transient extrapolates to) or on_unsettled='warn' (go on and count it)")
