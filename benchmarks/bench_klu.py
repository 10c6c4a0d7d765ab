"""KLU against Sparse: CPU time per equilibrium on the same circuits, in one run.

    .venv/bin/python benchmarks/bench_klu.py                       # 20-50-50-10, 64-100-100-100-10, 784-100-10
    .venv/bin/python benchmarks/bench_klu.py --nets 20,50,50,10 --examples 3

For each net (inputs folded, SpiceSolver's default method tran+op from u = 0, the free
phase) the same examples are solved with ``matrix_solver="klu"`` and ``"sparse"``; per
equilibrium it reports the CPU seconds of the main process plus the ngspice worker
(``NgspiceSession.cpu_seconds``; ngspice's own rusage figures are wall clock in Debian's
builds), min and median over the examples, the ratio, and max |rho_klu - rho_sparse|
(the same equilibria). The circuit is loaded and its matrix set up by one solve before
timing. Needs an ngspice that honours ``.options klu`` (ngspice_info says; Debian 12:
`make install` takes 46 from bookworm-backports). Not a test: prints, asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.ngspice_runner import ngspice_info  # noqa: E402
from circuits.spice_solver import SpiceSolver  # noqa: E402
from eqprop.network import Network  # noqa: E402
from eqprop.topology import mlff  # noqa: E402

NETS = ["20,50,50,10", "64,100,100,100,10", "784,100,10"]


def cpu(solver) -> float:
    """CPU seconds so far: this process plus every ngspice worker of the solver."""
    return time.process_time() + sum(sl.session.cpu_seconds for slots in solver._slots.values() for sl in slots)


def per_equilibrium(sizes, matrix_solver: str, x: torch.Tensor, net: Network, timeout: float):
    times, rhos = [], []
    with SpiceSolver(matrix_solver=matrix_solver, timeout=timeout, on_unsettled="warn") as s:
        s.relax(net, x[:1])  # worker start, load, matrix set-up: not timed
        for b in range(x.shape[0]):
            c0 = cpu(s)
            u = s.relax(net, x[b:b + 1])
            times.append(cpu(s) - c0)
            rhos.append(u.clamp(0, 1))
        used = s.last_stats.get("matrix_solver")
    return times, torch.cat(rhos), used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=NETS, help="layer sizes, comma-separated, input first")
    ap.add_argument("--examples", type=int, default=3, help="timed equilibria per net and solver (default 3)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per ngspice call")
    ap.add_argument("--out", type=Path, default=Path("results/bench_klu.json"))
    args = ap.parse_args()
    info = ngspice_info()
    if not info["klu"]:
        sys.exit(f"bench_klu: this ngspice ({info}) does not use KLU; nothing to compare (make install on Debian 12)")
    print(f"ngspice-{info['version']} ({info['library']}), KLU build: {info['klu_build']}; {platform.node()}, "
          f"{platform.processor() or platform.machine()}; CPU s per equilibrium incl. the ngspice worker")
    print(f"{'net':>22} {'neurons':>8} {'sparse min/med':>16} {'klu min/med':>16} {'sparse/klu':>10} "
          f"{'max|rho diff|':>13}")
    rows = []
    for text in args.nets:
        sizes = tuple(int(v) for v in text.split(","))
        torch.manual_seed(0)
        net = Network.init(mlff(sizes), seed=0, dtype=torch.float64)
        x = torch.tensor(np.random.default_rng(0).random((args.examples, sizes[0])))
        res = {ms: per_equilibrium(sizes, ms, x, net, args.timeout) for ms in ("sparse", "klu")}
        (ts, rs, us), (tk, rk, uk) = res["sparse"], res["klu"]
        assert us == ["sparse"] and uk == ["klu"], (us, uk)  # the solver that ran is the one asked for
        diff = float((rs - rk).abs().max())
        ms, mk = statistics.median(ts), statistics.median(tk)
        row = {"net": text, "neurons": sum(sizes) - sizes[0], "sparse_s": ts, "klu_s": tk,
               "ratio_median": ms / mk, "max_rho_diff": diff}
        rows.append(row)
        print(f"{'-'.join(map(str, sizes)):>22} {row['neurons']:>8} {min(ts):>7.3f}/{ms:<8.3f} "
              f"{min(tk):>7.3f}/{mk:<8.3f} {ms / mk:>9.1f}x {diff:>13.1e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ngspice": info, "examples": args.examples, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
