"""SpiceSolver's examples as whole-equilibrium requests to the ngspice worker.

Each example's alters (folded inputs or input sources, the nudge pair, the capacitors'
initial conditions), its transient, settle check and extensions, and the ``.op`` polish
run inside the worker (``ngspice_worker._Engine.equilibrium``): a worker's share of a
batch is one pipe round trip instead of ~8 per example, and the ``.nodeset`` reload of
the polish replays the alters there. With polish "op" the recipe and its numbers are the
same as the per-example path of ``SpiceSolver._solve`` (which subclasses and ``measure``
still use, since they read each example's first transient in between), so the equilibria
are too, bit for bit; with the cold polish (the default) this path tries a cold ``.op``
before the reload and stores the transient at its print step only, and the equilibria
agree to < 1e-10 (tests/test_spice_throughput.py).
"""
from __future__ import annotations

import math

import numpy as np

from netlist_gen import cap_ic_key

from .spice_config import DEFAULT_TRTOL, NGSPICE_STEPS, TRAN_OPTIONS, SpiceConfig

SETTLE_WINDOW = 5.0  # tau over which the end-of-transient rate |du/dt| is measured
# polish "cold": ``.op`` in the loaded circuit, Newton from ngspice's own start (no reload, no
# .nodeset), kept when its rho lies within COLD_TOL of the transient's end (fixed points of this
# piecewise-linear circuit that close would be the same one), else the .nodeset reload as for "op".
# It must fail fast where Newton from there does not converge: no gmin or source stepping (those took
# 21.6 s on 20-50-50-10), at most itl1 = 50 Newton steps; the reload then runs with ngspice's
# defaults again (cktntask.c: itl1 100, gminsteps 1, srcsteps 1).
COLD_TOL = 2e-3
COLD_OPTIONS = {"itl1": 50, "gminsteps": 0, "srcsteps": 0}
NODESET_OPTIONS = {"itl1": 100, "gminsteps": 1, "srcsteps": 1}


def options_text(options: dict) -> str:
    """The arguments of an interactive ``option`` command."""
    return " ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in options.items())


def example_values(cfg: SpiceConfig, circ, cur: np.ndarray, beta: float, y) -> dict[str, float]:
    """The alters that set one example's inputs and nudge in a loaded circuit."""
    inputs = circ.input_elements if cfg.fold_inputs else circ.input_sources
    values = dict(zip(inputs.values(), np.asarray(cur, dtype=float).tolist()))
    gains, currents = circ.nudge_values(beta, np.zeros(circ.sizes[-1]) if y is None else y)
    for k, (gn, inn) in enumerate(circ.nudge_elements.values()):
        values[gn], values[inn] = float(gains[k]), float(currents[0, k])
    return values


def timed_phase(cfg: SpiceConfig, beta: float) -> bool:
    """Whether this phase is the nudge held for t_nudged tau (SpiceConfig.nudged_phase "timed"), read as it is."""
    return beta != 0 and cfg.nudged_phase == "timed"


def tran_options(cfg: SpiceConfig, beta: float) -> dict:
    """The transient's tolerances: a timed phase is read where it ends, so it takes method "tran"'s (tight:
    its end is the result, not a start for the polish)."""
    timed = timed_phase(cfg, beta)
    opts = cfg.tran_options or TRAN_OPTIONS.get("tran" if timed else cfg.method, {})
    # free_integration and the trtols at ngspice's defaults are never set: the commands of runs recorded
    # before the fields. An interactive option outlives the transient: each transient sets its own again.
    extra = {}
    if cfg.free_integration != "trap":
        extra["method"] = "trap" if timed else cfg.free_integration
    if cfg.settle_trtol != DEFAULT_TRTOL or cfg.timed_trtol != DEFAULT_TRTOL:
        extra["trtol"] = cfg.timed_trtol if timed else cfg.settle_trtol
    return {**opts, **extra} if extra else opts


def op_options(cfg: SpiceConfig) -> dict:
    """The options of the .nodeset polish (after a cold try also ngspice's stepping defaults back)."""
    opts = dict(cfg.options or {})
    return {**NODESET_OPTIONS, **opts} if cfg.method == "tran+op" and cfg.polish == "cold" else opts


def transient_steps(cfg: SpiceConfig, beta: float, interp: bool) -> dict:
    """The transient's print step and maximum step (tau units times tau). ngspice's maximum step is
    min(tstep, tstop/50) unless given: a settled transient's is cfg.max_step where set, a timed nudge's
    min(tstep, t_nudged / cfg.timed_steps). With interp the print step is also the spacing of the stored
    points, which the settle check reads over its last SETTLE_WINDOW: so there the points are stored
    every min(tstep, SETTLE_WINDOW) and the maximum step is always given, the steps unchanged. Without
    interp it is given only where it differs from ngspice's default (the commands of earlier runs)."""
    tau = cfg.c / cfg.g0
    tstop = cfg.t_free if beta == 0 else cfg.t_nudged
    if timed_phase(cfg, beta):
        tmax = min(cfg.tstep, tstop / cfg.timed_steps)
        changed = cfg.timed_steps != NGSPICE_STEPS
    else:
        tmax = min(cfg.tstep, tstop / NGSPICE_STEPS) if cfg.max_step is None else cfg.max_step
        changed = cfg.max_step is not None
    if not interp:
        return {"tstep": cfg.tstep * tau, "tmax": tmax * tau if changed else None}
    return {"tstep": min(cfg.tstep, SETTLE_WINDOW) * tau, "tmax": tmax * tau}


def phase_spec(cfg: SpiceConfig, circ, beta: float, interp: bool = False) -> dict:
    """What every example of one phase shares in its ``equilibrium`` request (example_spec): built once per
    phase and batch, and the same objects in each spec (pickle sends them once)."""
    neurons = circ.neurons
    tau = cfg.c / cfg.g0
    timed = timed_phase(cfg, beta)
    return {"nodes": [circ.u_node[i] for i in neurons], "method": "tran" if timed else cfg.method,
            "tran_opts": options_text(tran_options(cfg, beta)),
            "interp": bool(interp), "op_opts": options_text(op_options(cfg)), **transient_steps(cfg, beta, interp),
            "polish": cfg.polish, "rest_tol": cfg.rest_below,
            "cold_opts": options_text({**(cfg.options or {}), **COLD_OPTIONS}),
            "cold_tol": COLD_TOL,
            "tstop": (cfg.t_free if beta == 0 else cfg.t_nudged) * tau, "tau": tau,
            # a timed phase is read at t_nudged whatever it is doing: no settle check, no extension
            "settle_tol": math.inf if timed else cfg.settle_tol, "settle_window": SETTLE_WINDOW,
            "max_extend": 0 if timed else cfg.max_extend,
            "on_unsettled": cfg.on_unsettled, "ic_keys": [cap_ic_key(i) for i in neurons]}


def example_spec(cfg: SpiceConfig, circ, cur, u0: np.ndarray | int, beta: float, y, warm: bool, label: str,
                 interp: bool = False, common: dict | None = None) -> dict:
    """One ``equilibrium`` request (ngspice_worker._Engine.equilibrium) for an example.

    u0: the start state, or the index of an earlier equilibrium of the same request whose end it starts from
    (``u0_from``; the worker sets the initial conditions then: the nudged phase after the free one, one round
    trip for both).
    interp: ngspice stores the transient only at multiples of its print step (``option interp``; the end
    point is the computed one; see transient_steps): without it ngspice 46 reads /proc/meminfo at every stored
    time point (~50 us each, about half the loose transient's CPU on iris). It stays on in the worker
    once set, so only solvers that never read a trajectory (the batched path) set it.
    common: phase_spec(cfg, circ, beta, interp), when the caller builds it once for many examples."""
    if common is None:
        common = phase_spec(cfg, circ, beta, interp)
    values = example_values(cfg, circ, cur, beta, y)
    chained = isinstance(u0, int)
    if cfg.method != "op" and not chained:
        values.update(zip(common["ic_keys"], np.asarray(u0, dtype=float).tolist()))
    start = {"u0_from": u0, "u0": None} if chained else {"u0": np.asarray(u0, dtype=float).tolist()}
    return {**common, "alters": list(values.items()), "warm": bool(warm), **start, "label": label}
