"""KLU or Sparse for a SpiceSolver circuit (SpiceConfig.matrix_solver).

ngspice >= 41 built with KLU (Debian 12's bookworm-backports 46, Debian 13's 44) uses KLU
when the netlist says ``.options klu=1``; older builds (Debian 12's own 39) ignore the
option without a word. Whether KLU is there is read from ngspice's own output
(``ngspice_runner.ngspice_info``), not from its version number. The manual keeps Sparse as
the default ("preferable for behavioural device models"; KLU "often" 2x or more), and this
project measured both ways (KLU 2x on 20-50-50-10, 9.5x on 64-100-100-100-10), so "auto"
measures: the circuit is loaded with each solver and one short example (zero inputs, from
u = 0, the configured method) is solved twice; KLU is taken when its worker CPU time is
KLU_MARGIN times less (else Sparse, ngspice's default). Circuits
beyond Sparse's size limits take KLU without measuring (Sparse would not finish), circuits of fewer
than MEASURE_FROM_NEURONS neurons Sparse (a measurement there is noise).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from netlist_gen.generator import estimate_size

from .errors import NgspiceUnavailable
from .ngspice_runner import klu_available, ngspice_info
from .spice_batching import example_spec

MEASURE_TAU = 50.0  # transient length of the measurement (tau): enough to see the factorisation cost
MEASURE_REPEATS = 2
# KLU only when clearly faster: on small circuits the two are within noise of each other, and a
# choice that flipped between runs would change equilibria in the last bits (resume is bit-identical)
KLU_MARGIN = 1.3
# below this many neurons Sparse without measuring: both solve in microseconds, so the measurement picks by the
# machine's noise (a 2-2-1 XOR net measured as KLU in one of five runs on a loaded machine, its equilibria then
# differing in the last bits from the others': two runs of one command must give the same result)
MEASURE_FROM_NEURONS = 20


def choose_matrix_solver(solver, slot, network, t: int, prog) -> str:
    """The matrix solver for trial t's circuit ("klu" or "sparse"), measured once per topology.

    Leaves the circuit unloaded when it measured (the caller loads it with the choice).
    """
    cfg = solver.config
    if cfg.matrix_solver == "sparse":
        return _record(solver, t, "sparse", None, None)
    library = slot.session.library
    if not klu_available(library):
        if cfg.matrix_solver == "klu":
            info = _info(library)
            raise NgspiceUnavailable(f"matrix_solver='klu', but this ngspice ({info}) does not use KLU (a circuit "
                                     f"with .options klu=1 did not report 'Using KLU as Direct Linear Solver'); "
                                     f"install ngspice >= 41 built with KLU (Debian 12: `make install` takes 46 from "
                                     f"bookworm-backports) or set matrix_solver to 'sparse' or 'auto'")
        return _record(solver, t, "sparse", None, None)
    if cfg.matrix_solver == "klu":
        return _record(solver, t, "klu", None, None)
    key = topology_key(network.topology)
    known = getattr(solver, "_matrix_choice", {}).get(t)
    if known is not None and known["key"] == key:
        return known["solver"]
    if network.topology.n - network.topology.n_in < MEASURE_FROM_NEURONS:
        return _record(solver, t, "sparse", None, key)
    if not estimate_size(network.topology, cfg.fold_inputs, cfg.level, cfg.clamp > 0, "sparse").ok:
        return _record(solver, t, "klu", None, key)
    short = dataclasses.replace(cfg, t_free=min(cfg.t_free, MEASURE_TAU), on_unsettled="warn", max_extend=0)
    times = {}
    for name in ("sparse", "klu"):
        circ = solver._build(network, prog, name)
        slot.session.load(circ.to_spice())
        inputs = circ.input_elements if cfg.fold_inputs else circ.input_sources
        spec = example_spec(short, circ, np.zeros(len(inputs)), np.zeros(len(circ.neurons)), 0.0, None, False,
                            f"matrix solver measurement ({name})", interp=solver._interp())
        slot.session.equilibria([spec])  # the first solve sets up the matrix: not timed
        c0 = slot.session.cpu_seconds
        slot.session.equilibria([spec] * MEASURE_REPEATS)
        times[name] = (slot.session.cpu_seconds - c0) / MEASURE_REPEATS
    slot.circuit = None
    choice = "klu" if times["klu"] * KLU_MARGIN < times["sparse"] else "sparse"
    return _record(solver, t, choice, times, key)


def topology_key(topo) -> tuple:
    """What a measured choice holds for: the circuit's connectivity (hash: within one process)."""
    return (topo.mask.shape, hash(topo.mask.tobytes()))


def saved_choices(solver) -> dict[int, str]:
    """Per trial the solver in use, for a checkpoint: a resumed run must not measure again (a
    different choice would move the equilibria in their last bits and break bit-identical resume)."""
    return {t: c["solver"] for t, c in getattr(solver, "_matrix_choice", {}).items()}


def restore_choices(solver, saved: dict, network) -> None:
    """The choices of a checkpoint for the trials of ``network`` (what saved_choices gave)."""
    for t, name in saved.items():
        if name not in ("klu", "sparse"):
            raise ValueError(f"checkpoint: matrix solver of trial {t} is {name!r}, expected 'klu' or 'sparse'")
        if name == "klu" and solver.config.matrix_solver == "sparse":
            continue  # the user asked for Sparse on resume: that wins (a setting, not a measurement)
        _record(solver, int(t), name, None, topology_key(network.topologies[int(t)]))


def _record(solver, t, name, times, key) -> str:
    if not hasattr(solver, "_matrix_choice"):
        solver._matrix_choice = {}
    solver._matrix_choice[t] = {"solver": name, "cpu_s": times, "key": key}
    return name


def matrix_solver_report(solver, times: bool = False) -> dict:
    """Per trial the matrix solver in use; with ``times`` also the measurement that chose it (CPU s
    per example). The times stay out of ``report()``: per-epoch metrics must be reproducible
    (a resumed run is compared bit for bit), timings are not."""
    choice = getattr(solver, "_matrix_choice", {})
    if not choice:
        return {}
    T = max(choice) + 1
    out = {"matrix_solver": [choice[t]["solver"] if t in choice else None for t in range(T)]}
    if times:
        out["matrix_solver_cpu_s"] = [choice[t]["cpu_s"] if t in choice else None for t in range(T)]
    return out


def _info(library) -> str:
    try:
        i = ngspice_info(library)
    except NgspiceUnavailable as e:
        return str(e)
    return f"ngspice-{i['version']}, {i['library']}"
