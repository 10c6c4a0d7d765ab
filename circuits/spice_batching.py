"""SpiceSolver's examples as whole-equilibrium requests to the ngspice worker.

Each example's alters (folded inputs or input sources, the nudge pair, the capacitors'
initial conditions), its transient, settle check and extensions, and the ``.op`` polish
run inside the worker (``ngspice_worker._Engine.equilibrium``): a worker's share of a
batch is one pipe round trip instead of ~8 per example, and the ``.nodeset`` reload of
the polish replays the alters there. The recipe and its numbers are the same as the
per-example path of ``SpiceSolver._solve`` (which subclasses and ``measure`` still use,
since they read each example's first transient in between), so the equilibria are too.
"""
from __future__ import annotations

import numpy as np

from netlist_gen import cap_ic_key

from .spice_config import TRAN_OPTIONS, SpiceConfig

SETTLE_WINDOW = 5.0  # tau over which the end-of-transient rate |du/dt| is measured


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


def example_spec(cfg: SpiceConfig, circ, cur, u0: np.ndarray, beta: float, y, warm: bool, label: str) -> dict:
    """One ``equilibrium`` request (ngspice_worker._Engine.equilibrium) for an example."""
    neurons = circ.neurons
    nodes = [circ.u_node[i] for i in neurons]
    values = example_values(cfg, circ, cur, beta, y)
    ic_keys = [cap_ic_key(i) for i in neurons]
    if cfg.method != "op":
        values.update(zip(ic_keys, np.asarray(u0, dtype=float).tolist()))
    tau = cfg.c / cfg.g0
    return {"alters": list(values.items()), "nodes": nodes, "method": cfg.method, "warm": bool(warm),
            "u0": np.asarray(u0, dtype=float).tolist(), "label": label,
            "tran_opts": options_text(cfg.tran_options or TRAN_OPTIONS.get(cfg.method, {})),
            "op_opts": options_text(cfg.options or {}), "tstep": cfg.tstep * tau,
            "tstop": (cfg.t_free if beta == 0 else cfg.t_nudged) * tau, "tau": tau,
            "settle_tol": cfg.settle_tol, "settle_window": SETTLE_WINDOW, "max_extend": cfg.max_extend,
            "raise_unsettled": cfg.on_unsettled == "raise", "ic_keys": ic_keys}
