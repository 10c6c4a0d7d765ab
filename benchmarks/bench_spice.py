"""Per-equilibrium time of ngspice (SpiceSolver) against the Euler reference, one run.

    .venv/bin/python benchmarks/bench_spice.py            # 20-50-50-10 and 64-100-100-100-10
    .venv/bin/python benchmarks/bench_spice.py --quick    # 20-50-50-10 only, fewer repeats
    .venv/bin/python benchmarks/bench_spice.py --pathological   # also cold .op on the deep net (~80 s+)

Rows: Euler (500 steps, float32 as in training; converged float64 as in spice-check),
ngspice .op warm (.nodeset from the equilibrium: what a persistent particle gives; the
nudged phase from the free state with a small and a large nudge),
.op cold, .tran from u = 0 (method "tran"), tran+op from u = 0 and from a warm start,
the nudged phase from the free equilibrium, and the cost of writing a weight update
into the loaded circuit (alter every weight) against re-netlisting it. Times are
medians; ratios are against Euler at 500 steps. The ngspice rows end with ngspice's own
split of the last analysis (rusage): reorder / factor / load / parse.
Not a test: prints a table, asserts nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.errors import SimulationError  # noqa: E402
from circuits.spice_solver import SpiceSolver  # noqa: E402
from eqprop.network import Network  # noqa: E402
from eqprop.solver import EulerSolver  # noqa: E402
from eqprop.topology import mlff  # noqa: E402
from netlist_gen import build_circuit  # noqa: E402

NETS = [(20, 50, 50, 10), (64, 100, 100, 100, 10)]


def timed(fn, reps):
    out, times = None, []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def warm_up(solver, net, x) -> None:
    """Start the worker and load the circuit outside the timed call (a 1 tau transient)."""
    cfg = solver.config  # frozen: a 1 tau copy for the warm-up, then the real settings back
    solver.config = dataclasses.replace(cfg, t_free=1.0, t_nudged=1.0, on_unsettled="warn", max_extend=0)
    solver.relax(net, x)
    solver.config = cfg


def split(solver) -> str:
    r = solver.rusage()
    keys = [("reorder", "Matrix reorder time"), ("factor", "Matrix factor time"), ("load", "Matrix load time"),
            ("parse", "Netlist parsing time"), ("iters", "Total iterations")]
    return " ".join(f"{k}={r[v]:g}" for k, v in keys if v in r)


def bench(sizes, reps, args):
    torch.manual_seed(0)
    net = Network.init(mlff(sizes), seed=0, dtype=torch.float64)
    x = torch.tensor(np.random.default_rng(0).random((1, sizes[0])))
    y = torch.tensor(np.random.default_rng(1).random((1, sizes[-1])))
    n_g = len(build_circuit(net, x[0]).weight_elements)
    name = "-".join(map(str, sizes))
    print(f"\n{name}: {sum(sizes) - sizes[0]} circuit neurons, {n_g} synapse G elements (inputs folded)")
    rows = []

    net32 = net.to(dtype=torch.float32)
    _, t_e = timed(lambda: EulerSolver().relax(net32, x.float()), reps)
    rows.append(("Euler 500 steps (float32, batch 1)", t_e, ""))
    conv = EulerSolver(nudge_form="gradient", free_steps=1_000_000, nudged_steps=1_000_000, tol=1e-12)
    ref, t = timed(lambda: conv.relax(net, x), max(1, reps // 2))
    rows.append((f"Euler converged (float64, {conv.last_steps} steps)", t, ""))
    ref_n = conv.relax(net, x, ref, beta=0.5, target=y)
    ref_small = conv.relax(net, x, ref, beta=0.05, target=y)

    def err(s, r=ref):
        return f"max|rho diff| {float((s - r).abs().max()):.1e}"

    with SpiceSolver(method="op", timeout=args.timeout) as op:
        op.relax(net, x, ref)  # starts the worker and loads the circuit
        s, t = timed(lambda: op.relax(net, x, ref), reps)
        rows.append((".op warm (.nodeset = equilibrium; reload)", t, f"{err(s)}; {split(op)}"))
        free = s
        s, t = timed(lambda: op.relax(net, x, free, beta=0.05, target=y), reps)
        rows.append(("  nudged .op warm from the free state, beta 0.05", t, f"{err(s, ref_small)}"))
        op.timeout = args.nudge_timeout  # Newton from the free state may cycle for a large nudge
        try:
            s, t = timed(lambda: op.relax(net, x, free, beta=0.5, target=y), 1)
            rows.append(("  nudged .op warm from the free state, beta 0.5", t, f"{err(s, ref_n)}"))
        except SimulationError as e:
            rows.append(("  nudged .op warm from the free state, beta 0.5", float("nan"),
                         f"gave up: {str(e).splitlines()[0].split('): ', 1)[-1][:70]}"))
        op.timeout = args.timeout
        op.relax(net, x, ref)  # a stopped worker took the circuit with it: load it again
        if args.pathological or sum(sizes) < 200:
            try:
                s, t = timed(lambda: op.relax(net, x), 1)
                rows.append((".op cold (Newton from 0, gmin/source stepping)", t, f"{err(s)}; {split(op)}"))
            except Exception as e:  # noqa: BLE001 (a benchmark reports, it does not stop)
                rows.append((".op cold", float("nan"), f"failed: {str(e).splitlines()[0][:80]}"))
        else:
            rows.append((".op cold", float("nan"), "skipped (82 s before the project; --pathological runs it)"))

        # weight update: alter every weight in place vs build + load a new netlist
        slot = op._slots[0]
        W2 = net.W * 1.01
        vals = {names[0]: float(W2[s_, d]) for (s_, d), names in slot.circuit.weight_elements.items()}
        _, t_alt = timed(lambda: slot.session.alter(vals), max(1, reps // 2))
        net2 = Network(net.topology, W2, net.b)
        _, t_ren = timed(lambda: slot.session.load(build_circuit(net2, None, clamp=1e3).to_spice()),
                         max(1, reps // 2))
        rows.append((f"update: alter all {len(vals)} weights", t_alt, f"re-netlist/alter = {t_ren / t_alt:.2f}"))
        rows.append(("update: re-netlist (build + load)", t_ren, ""))

    if args.pathological or sum(sizes) < 200:
        with SpiceSolver(method="tran", timeout=args.timeout) as tr:
            warm_up(tr, net, x)
            s, t = timed(lambda: tr.relax(net, x), 1)
            rows.append((f".tran {tr.config.t_free:g} tau from u=0 (tol {tr.config.tran_options or 'reltol 1e-4'})", t,
                         f"{err(s)}; {split(tr)}"))
    with SpiceSolver(method="tran+op", timeout=args.timeout) as to:
        warm_up(to, net, x)
        s, t = timed(lambda: to.relax(net, x), 1)
        rows.append(("tran+op from u=0 (300 tau reltol 1e-3, .op polish)", t,
                     f"{err(s)}; tran {to.last_stats['tran_s']:.2f} s, op {to.last_stats['op_s']:.2f} s"))
        free = s
        s, t = timed(lambda: to.relax(net, x, free, beta=0.5, target=y), 1)
        rows.append(("  nudged tran+op from the free state (100 tau)", t, f"{err(s, ref_n)}"))
        if args.warm_tau:
            to.config = dataclasses.replace(to.config, t_free=args.warm_tau)
            s, t = timed(lambda: to.relax(net, x, ref), 1)
            rows.append((f"tran+op warm ({args.warm_tau:g} tau from the equilibrium)", t, f"{err(s)}"))
    loose = {"reltol": 1e-3, "abstol": 1e-9, "vntol": 1e-6, "trtol": 50}
    with SpiceSolver(method="tran+op", tran_options=loose, tstep=10.0, timeout=args.timeout) as lo:
        warm_up(lo, net, x)
        s, t = timed(lambda: lo.relax(net, x), 1)
        rows.append(("tran+op from u=0, trtol 50 (5x fewer steps, riskier)", t,
                     f"{err(s)}; tran {lo.last_stats['tran_s']:.2f} s"))

    for label, t, note in rows:
        ratio = "" if np.isnan(t) else f"{t / t_e:9.1f}x"
        tt = "      -   " if np.isnan(t) else f"{t:9.4f} s"
        print(f"  {label:52s} {tt} {ratio:>10s}  {note}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20-50-50-10 only, 2 repeats")
    p.add_argument("--pathological", action="store_true",
                   help="also run cold .op and the 300 tau .tran on 64-100-100-100-10 (minutes)")
    p.add_argument("--sizes", help="one net instead of the default two, e.g. 64,100,100,100,10")
    p.add_argument("--warm-tau", type=float, default=30.0, help="transient length of the warm tran+op row (tau)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per ngspice call")
    p.add_argument("--nudge-timeout", type=float, default=30.0,
                   help="limit of the beta 0.5 warm .op row (Newton from the free state cycles on deep nets)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    nets = [tuple(int(v) for v in args.sizes.split(","))] if args.sizes else NETS[:1] if args.quick else NETS
    for sizes in nets:
        bench(sizes, 2 if args.quick else 5, args)


if __name__ == "__main__":
    main()
