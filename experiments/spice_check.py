"""spice-check: ngspice's equilibria against the converged Euler reference.

Random layered / small-world networks (or given ones) are solved in the free and the
nudged phase by a ``SpiceSolver`` and by the Euler reference (gradient nudge, the
circuit's fixed point, run to convergence); the report holds max |rho(u_spice) - s_euler|
per network and phase, and the fixed-point residual of the ngspice states.
``reference="deep"``: random directed networks (``random_directed_networks``) with DEEP's
dynamics, solved by ``circuits.deep_spice.DeepSpiceSolver`` against ``eqprop.deep.DeepSolver``
run to convergence (its Euler step ``deep_dt``), the residual that of DEEP's clipped dynamics.
"""
from __future__ import annotations

import platform
import time
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from circuits.errors import SimulationError
from eqprop.config import EulerConfig
from eqprop.couplings import input_constant
from eqprop.deep import DeepConfig, DeepSolver, deep_init, deep_residual
from eqprop.dynamics import fixed_point_residual, rho
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import Topology, complete_directed, mlff, small_world


def random_networks(sizes: list[tuple[int, ...]], topology: str = "both", p: float = 0.2, count: int = 4,
                    seed: int = 0, weight_scale: float = 1.0) -> Iterator[tuple[int, Network, str]]:
    """(index, network, kind): network k has sizes[k % len(sizes)], seed seed + k, float64 weights;
    topology "mlff", "sw" or "both" (alternating)."""
    for k in range(count):
        sz = sizes[k % len(sizes)]
        kind = topology if topology != "both" else ("mlff", "sw")[k % 2]
        topo = mlff(sz) if kind == "mlff" else small_world(sz, p, seed=seed + k)
        net = Network.init(topo, seed=seed + k, dtype=torch.float64)
        if weight_scale != 1.0:
            net = Network(topo, net.W * weight_scale, net.b)
        yield k, net, kind


def random_directed_networks(sizes: list[tuple[int, ...]], count: int = 10, seed: int = 0, std: float = 0.3,
                             density: float = 0.5) -> Iterator[tuple[int, Network, str]]:
    """(index, network, kind): DEEP nets, ``complete_directed(n_in, sum(hidden), n_out, bias=True)`` of
    sizes[k % len(sizes)] (n_in without the bias neuron); odd k keep each connection with probability
    ``density`` (a random directed mask, "sparse"), even k all ("complete"). Weights N(0, std^2) per
    direction (``deep_init``), seed seed + k, float64."""
    for k in range(count):
        sz = sizes[k % len(sizes)]
        topo = complete_directed(sz[0], sum(sz[1:-1]), sz[-1], bias=True)
        kind = "complete"
        if k % 2:
            keep = np.random.default_rng([seed + k, 1]).random(topo.mask.shape) < density
            topo = Topology(topo.sizes, topo.mask & keep, directed=True, info={**topo.info, "density": density})
            kind = "sparse"
        yield k, deep_init(topo, seed=seed + k, std=std, dtype=torch.float64), kind


def residual(net: Network, u, beta: float = 0.0, target=None) -> float:
    """max |rho(u) - clip(W rho(u) + b + nudge)| over the free neurons: is u a fixed point at all?"""
    n_in = net.topology.n_in
    h = input_constant(net, u[:, :n_in]) + rho(u[:, n_in:]) @ net.W[n_in:, n_in:]
    r = fixed_point_residual(h, u[:, n_in:], beta, None if beta == 0 else target, net.topology.n_out)
    return float(r.max())


def _reference(euler: EulerSolver, net, x, target, beta):
    free = euler.relax(net, x)
    ok = euler.last_steps < euler.config.free_steps
    nudged = euler.relax(net, x, free, beta=beta, target=target)
    return free, nudged, ok and euler.last_steps < euler.config.nudged_steps


def check_network(net: Network, solver, x, target, beta: float, euler: EulerSolver,
                  fine: EulerSolver | None = None, tol: float = 1e-6, residual_fn=residual,
                  start: str = "rest") -> dict:
    """Max |rho diff| between ngspice and the converged Euler reference, free and nudged.

    The energy is non-convex: Euler at eps 0.5 can step into another basin than the
    continuous dynamics the circuit follows. When the difference exceeds ``tol`` and a
    ``fine`` (small-eps) Euler is given, the comparison is repeated against it; the row
    then says which reference matched. ``residual`` checks the ngspice states are fixed
    points of the reference equations, independently of any Euler run.

    ``start`` "euler": each phase starts from the Euler reference's own equilibrium of that
    phase, not from rest: with method op, Newton on the circuit's equations from there. It
    checks that Euler's fixed point is one of the circuit's (a circuit that differs moves
    away from it), where a transient from rest is out of reach (784-500x3-10 on a 2-core
    machine); it does not check that the circuit's dynamics reach it. (Newton from a point
    shaken by even 1e-3 V lands on other fixed points of these piecewise-linear circuits:
    measured in session 14, so there is no jitter option.)
    """
    t0 = time.perf_counter()
    ref_free, ref_nudged, conv = _reference(euler, net, x, target, beta)
    t1 = time.perf_counter()
    if start == "euler":
        free = solver.relax(net, x, ref_free)
        nudged = solver.relax(net, x, ref_nudged, beta=beta, target=target)
    else:
        free = solver.relax(net, x)
        nudged = solver.relax(net, x, free, beta=beta, target=target)
    t2 = time.perf_counter()
    diff = lambda u, s: float((rho(u) - s).abs().max())  # noqa: E731  (compare rho(V), not V)
    states = rho(torch.cat([free, nudged]))[:, net.topology.n_in:]
    row = {"free": diff(free, ref_free), "nudged": diff(nudged, ref_nudged),
           "residual": max(residual_fn(net, free), residual_fn(net, nudged, beta, target)),
           "reference": _ref_name(euler), "euler_converged": conv,
           # the fraction of states inside (0, 1): saturated ones agree trivially once in the same basin
           "interior": float(((states > 1e-9) & (states < 1 - 1e-9)).double().mean())}
    if fine is not None and max(row["free"], row["nudged"]) > tol:
        f_free, f_nudged, f_conv = _reference(fine, net, x, target, beta)
        d = {"free": diff(free, f_free), "nudged": diff(nudged, f_nudged)}
        key = f"dt{euler.config.dt}" if isinstance(euler, DeepSolver) else f"eps{euler.config.eps}"
        row[key] = {"free": row["free"], "nudged": row["nudged"]}
        if max(d.values()) < max(row["free"], row["nudged"]):
            row.update(d, reference=_ref_name(fine), coarse_euler_elsewhere=True,
                       euler_converged=f_conv)
    row.update(euler_seconds=round(t1 - t0 + time.perf_counter() - t2, 4), spice_seconds=round(t2 - t1, 4))
    if getattr(getattr(solver, "config", None), "measure", False):  # settling time (s), energy (J) per example
        row["physical"] = {k: v[0] for k, v in solver.report().items() if k.startswith(("settle_s", "energy_j",
                                                                                           "power_w"))}
    return row


def spice_check(networks: Iterable[tuple[int, Network, str]], solver, total: int | None = None, examples: int = 2,
                beta: float = 0.5, seed: int = 0, euler_eps: float = 0.5, euler_tol: float = 1e-12,
                euler_max_steps: int = 500_000, fine_eps: float = 0.05, tol: float = 1e-6,
                progress: bool = True, reference: str = "euler", deep_dt: float = 0.01,
                start: str = "rest") -> dict:
    """Check every network; the report (JSON-able) with per-network rows, the worst differences
    and ``passed`` (every network solved, worst difference and residual <= tol). reference
    "deep": DEEP's dynamics (DeepSolver at step deep_dt, then fine_eps on a mismatch). start
    "rest" (the circuit's phases from u = 0, the nudge from the free end) or "euler" (each phase
    from the reference's equilibrium: check_network)."""
    if reference not in ("euler", "deep"):
        raise ValueError(f"reference must be 'euler' or 'deep', got {reference!r}")
    if start not in ("rest", "euler"):
        raise ValueError(f"start must be 'rest' or 'euler', got {start!r}")
    if reference == "deep":
        make = lambda dt, steps: DeepSolver(DeepConfig(dt=dt, free_steps=steps, nudged_steps=steps,  # noqa: E731
                                                       init="zero", tol=euler_tol))
        euler = make(deep_dt, euler_max_steps)
        fine = None if not fine_eps or fine_eps >= deep_dt else make(fine_eps, 20 * euler_max_steps)
    else:
        euler = EulerSolver(EulerConfig(eps=euler_eps, free_steps=euler_max_steps, nudged_steps=euler_max_steps,
                                        nudge_form="gradient", tol=euler_tol))
        fine = None if not fine_eps else EulerSolver(EulerConfig(
            eps=fine_eps, free_steps=20 * euler_max_steps, nudged_steps=20 * euler_max_steps, nudge_form="gradient",
            tol=euler_tol))
    residual_fn = deep_residual if reference == "deep" else residual
    rows, t_start = [], time.perf_counter()
    bar = tqdm(networks, total=total, desc="spice-check", unit="net", disable=not progress)
    for k, net, kind in bar:
        rng = np.random.default_rng(seed + 10_000 + k)
        topo = net.topology
        x = torch.tensor(rng.random((examples, topo.n_in)))
        target = torch.tensor(rng.random((examples, topo.n_out)))
        row = {"index": k, "sizes": list(topo.sizes), "topology": kind, "seed": seed + k,
               "actual_p": topo.info.get("actual_p", 0.0), "connections": topo.n_connections}
        try:
            if reference == "deep" and topo.info.get("bias_input") is not None:
                x[:, topo.info["bias_input"]] = 1.0  # the bias neuron is clamped to 1
            row.update(check_network(net, solver, x, target, beta, euler, fine, tol, residual_fn, start))
        except SimulationError as e:
            row.update({"error": str(e).splitlines()[0], "command": e.command,
                        "log_tail": (e.log or "").splitlines()[-20:], "free": None, "nudged": None})
        rows.append(row)
        done = [r for r in rows if r["free"] is not None]
        if done:
            bar.set_postfix(worst=f"{max(max(r['free'], r['nudged']) for r in done):.1e}")
    ok = [r for r in rows if r["free"] is not None]
    worst = {ph: max((r[ph] for r in ok), default=None) for ph in ("free", "nudged")}
    overall = max([v for v in worst.values() if v is not None], default=None)
    worst_net = max(ok, key=lambda r: max(r["free"], r["nudged"]))["index"] if ok else None
    passed = bool(ok) and len(ok) == len(rows) and overall <= tol and all(r["residual"] <= tol for r in ok)
    return {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                       f"python {platform.python_version()}",
            "solver": solver.describe(), "reference": reference, "start": start, "beta": beta, "tol": tol,
            "networks": rows,
            "worst": {**worst, "overall": overall, "network": worst_net,
                      "residual": max((r["residual"] for r in ok), default=None)},
            "other_fixed_point_at_euler_eps": [r["index"] for r in ok if r.get("coarse_euler_elsewhere")],
            "failed": [r["index"] for r in rows if r["free"] is None],
            "passed": passed, "seconds": round(time.perf_counter() - t_start, 2)}


def summary_lines(report: dict) -> list[str]:
    """A short readable summary of a report."""
    w = report["worst"]
    n = len(report["networks"])
    start = "" if report.get("start", "rest") == "rest" else " (each phase started at Euler's equilibrium)"
    lines = [f"{n} network(s){start}, {len(report['failed'])} failed; worst max |rho_spice - s_euler|: "
             f"free {_fmt(w['free'])}, nudged {_fmt(w['nudged'])}; worst fixed-point residual {_fmt(w['residual'])}"]
    for r in report["networks"]:
        if r.get("physical"):  # --measure: per example, mean over the network's examples
            p = r["physical"]
            lines.append(f"network {r['index']} ({'-'.join(map(str, r['sizes']))}): settling time free "
                         f"{_fmt(p.get('settle_s_free'))} s, nudged {_fmt(p.get('settle_s_nudged'))} s; energy "
                         f"to equilibrium free {_fmt(p.get('energy_j_free'))} J, nudged "
                         f"{_fmt(p.get('energy_j_nudged'))} J; "
                         f"static power {_fmt(p.get('power_w_free'))} W")
        if r.get("error"):  # a network ngspice could not solve: say why, not only that it failed
            lines.append(f"network {r['index']} ({'-'.join(map(str, r['sizes']))} {r['topology']}): {r['error']}")
    if report["other_fixed_point_at_euler_eps"]:
        lines.append(f"networks where Euler at eps 0.5 took another basin (matched at the fine step): "
                     f"{report['other_fixed_point_at_euler_eps']}")
    lines.append(f"{'PASSED' if report['passed'] else 'FAILED'} (tol {report['tol']:g}) in {report['seconds']} s")
    return lines


def _ref_name(solver) -> str:
    if isinstance(solver, DeepSolver):
        return f"deep dt {solver.config.dt}"
    return f"euler eps {solver.config.eps}"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2e}"
