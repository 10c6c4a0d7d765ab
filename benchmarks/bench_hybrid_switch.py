"""The hybrid free phase's switch from Gauss-Seidel to SOR (EulerConfig.omega_from) and omega, side by side.

Each example of the hybrid sweeps as projected Gauss-Seidel until a sweep moves it less than
omega_from, then over-relaxes with omega. A larger omega_from switches earlier (fewer sweeps)
but an example not yet in its basin can then be carried into another local minimum. For
each (omega_from, omega): SOR sweeps per example (mean / max), examples that hit max_sweeps,
the share of examples within 1e-4 of the reference trajectory's own limit s* (the reference
run up to 20,000 steps to |ds| < 1e-9) and the largest distance, and CPU ms per free phase
(one thread; the sweep counts and distances do not depend on the machine, the times do).

Weights: the net after --train-batches training batches of the hybrid at the defaults
(MNIST, batch 20, seed 0); examples: the next --batches training batches from their particles.

  python benchmarks/bench_hybrid_switch.py --nets 784-100x5-10 --topologies mlff,sw --batches 20
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_free_phase import NETS, data, euler, trainer  # noqa: E402  (the free-phase benchmark's nets and data)

from eqprop.config import EulerConfig  # noqa: E402
from eqprop.fast_relax import FastEulerSolver  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="784-100x5-10", help=f"comma list of {list(NETS)}")
    ap.add_argument("--topologies", default="mlff,sw")
    ap.add_argument("--omega-from", default="1e-3,1e-2,3e-2,0.1", help="comma list of switch thresholds")
    ap.add_argument("--omega", default="1.5", help="comma list of over-relaxation factors")
    ap.add_argument("--prefix", default="50", help="comma list of Euler steps before the sweeps")
    ap.add_argument("--train-batches", type=int, default=40)
    ap.add_argument("--batches", type=int, default=20, help="batches of 20 examples whose free phases are compared")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| net | prefix | omega_from | omega | sweeps mean / max | at max_sweeps | within 1e-4 of s* | "
          "max |s - s*| | CPU ms / free phase |")
    print("|---|---|---|---|---|---|---|---|---|")
    ds = data(False, 20 * (a.train_batches + a.batches))
    for name in a.nets.split(","):
        hidden, fs, ns = NETS[name]
        for topo in a.topologies.split(","):
            tr = trainer(ds, hidden, topo, euler("hybrid", (fs, ns), 1e-6, 50, 1.5))
            for k in range(a.train_batches):
                tr.train_batch(k)
            ks = range(a.train_batches, a.train_batches + a.batches)
            xs = [tr._t["x_train"][tr.idx[:, k]] for k in ks]  # noqa: SLF001 (the Trainer's batch tables)
            u0s = [torch.cat([x, tr.train_particles[:, k]], -1) for k, x in zip(ks, xs)]
            ref = FastEulerSolver(EulerConfig(free_steps=20000, tol=1e-9, engine="fast"), check_values=False)
            stars = [ref.relax(tr.net, x, u) for x, u in zip(xs, u0s)]
            grid = [(int(p), float(f), float(o)) for p in a.prefix.split(",") for f in a.omega_from.split(",")
                    for o in a.omega.split(",")]
            for prefix, om_from, om in grid:
                s = FastEulerSolver(EulerConfig(free_steps=fs, nudged_steps=ns, free_method="hybrid", tol=1e-6,
                                                prefix_steps=prefix, omega=om, omega_from=om_from, engine="fast"),
                                    check_values=False)
                t0, d = time.process_time(), []
                for x, u, st in zip(xs, u0s, stars):
                    d.append((s.relax(tr.net, x, u) - st).abs().amax(-1).flatten())
                ms = 1000 * (time.process_time() - t0) / len(xs)
                d, r = torch.cat(d), s.report()
                print(f"| {name} {topo} | {prefix} | {om_from:g} | {om:g} | {r['free_sweeps_mean'][0]:.0f} / "
                      f"{r['free_sweeps_max'][0]} | {r['free_unconverged'][0]} | "
                      f"{100 * float((d <= 1e-4).double().mean()):.1f} % ({int((d > 1e-4).sum())} of {d.numel()}) "
                      f"| {float(d.max()):.1e} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
