"""Free-phase methods of the fast engine side by side (EulerConfig.free_method; eqprop/free_phase.py).

For each net (784-100x5-10: 1000/12 steps; 784-500x3-10: 500/8 steps; MLFF and small-world
p 0.1; batch 20, eps 0.5, sequential nudge, persistent particles) it trains the first K
MNIST training batches for two passes (epoch 1 from zero particles, epoch 2 from the
particles epoch 1 left, as every later epoch of a real run starts) from the same seed
through the one Trainer with

  fixed        the reference step count (the reproductions' setting)
  per-example  each example stops at |ds| < tol (the reference steps, no more than it needs)
  hybrid       prefix_steps Euler steps, then layer-wise projected Gauss-Seidel/SOR to tol, the
               batch's last examples finished by face solves (hybrid-no-face: without them)

and prints CPU seconds per training batch of each pass (min and median of --repeats runs,
each method in turn within a repeat, one thread) and the ratio to fixed. Fidelity, on the
weights after the two passes: the free states of batch 0 from its particles, against the
reference trajectory's own limit s* (the reference run up to --limit-steps steps to
|ds| < 1e-9): the share of examples within 1e-4, and the largest max |s - s*|.

  python benchmarks/bench_free_phase.py --batches 10 --repeats 3
  python benchmarks/bench_free_phase.py --nets 784-100x5-10 --batches 5 --repeats 1   # quick

Needs MNIST (`eqprop data fetch mnist`); --synthetic uses random pixels instead (speed only:
random images settle differently from digits, so its fidelity rows mean little).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eqprop.config import EulerConfig, RunConfig
from eqprop.datasets import Dataset, load_dataset
from eqprop.fast_relax import FastEulerSolver
from eqprop.trainer import Trainer

NETS = {"784-100x5-10": ((100,) * 5, 1000, 12), "784-500x3-10": ((500,) * 3, 500, 8)}
METHODS = ("fixed", "per-example", "hybrid")
EXTRA = ("hybrid-no-face",)  # the hybrid without its face solves (EulerConfig.face_solve=False), on request
SCRATCH = Path(tempfile.gettempdir()) / "bench_free_phase"  # checkpoint path the Trainer needs; never written


def data(synthetic: bool, n: int) -> Dataset:
    if not synthetic:
        return load_dataset("mnist").head(n, 20)
    rng = np.random.default_rng(0)
    lab = rng.integers(10, size=n)
    eye = np.eye(10, dtype=np.float32)
    return Dataset("synthetic", "classification", rng.random((n, 784), dtype=np.float32), eye[lab],
                   rng.random((20, 784), dtype=np.float32), eye[lab[:20]], lab, lab[:20], batch_size=20)


def euler(method: str, steps: tuple[int, int], tol: float, prefix: int, omega: float,
          coupling: str = "auto") -> EulerConfig:
    kw = dict(free_steps=steps[0], nudged_steps=steps[1], engine="fast", coupling=coupling)
    if method == "hybrid-no-face":
        kw.update(free_method="hybrid", tol=tol, prefix_steps=prefix, omega=omega, face_solve=False)
    elif method != "fixed":
        kw.update(free_method=method, tol=tol, prefix_steps=prefix, omega=omega)
    return EulerConfig(**kw)


def trainer(ds: Dataset, hidden, topology: str, cfg: EulerConfig) -> Trainer:
    run = RunConfig(dataset=ds.name, hidden=hidden, topology=topology, p=0.1, lr=0.015, batch_size=20, epochs=1,
                    seed=0, out=str(SCRATCH / "run"))
    return Trainer(run, ds, solver=FastEulerSolver(cfg, check_values=False), checkpoint=SCRATCH / "ck.pt")


def time_passes(tr: Trainer, K: int, passes: int = 2) -> tuple[float, float]:
    """CPU s per training batch of two passes over the first K batches (epoch 1, then epoch 2; NaN if one pass)."""
    out = [float("nan")] * 2
    for i in range(passes):
        t0 = time.process_time()
        for k in range(K):
            tr.train_batch(k)
        out[i] = (time.process_time() - t0) / K
    return out[0], out[1]


def fidelity(tr: Trainer, k: int, limit_steps: int) -> dict:
    """Batch k's free states by the trainer's solver vs the reference's limit from the same particles."""
    x = tr._t["x_train"][tr.idx[:, k]]  # noqa: SLF001 (the benchmark reads the Trainer's batch tables)
    u0 = torch.cat([x, tr.train_particles[:, k]], -1)
    got = tr.solver.relax(tr.net, x, u0)
    ref = FastEulerSolver(EulerConfig(free_steps=limit_steps, tol=1e-9, engine="fast"), check_values=False)
    star = ref.relax(tr.net, x, u0)
    d = (got - star).abs().amax(-1).flatten()
    return {"within_1e-4": float((d <= 1e-4).double().mean()), "max": float(d.max()), "limit_steps": ref.last_steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help=f"comma list of {list(NETS)}")
    ap.add_argument("--topologies", default="mlff,sw")
    ap.add_argument("--batches", type=int, default=10, help="training batches timed per method (K)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--prefix", type=int, default=50, help="hybrid: Euler steps before SOR")
    ap.add_argument("--omega", type=float, default=1.5)
    ap.add_argument("--limit-steps", type=int, default=20000,
                    help="reference steps allowed to find s* (0: no fidelity)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--coupling", default="auto",
                    help="EulerConfig.coupling of every method (auto: chosen by timing at start, so two runs under "
                         "different load may run different products; the choice is printed per row)")
    ap.add_argument("--synthetic", action="store_true", help="random pixels instead of MNIST")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma list of {list(METHODS + EXTRA)} (fixed is the base)")
    ap.add_argument("--passes", type=int, default=2, choices=[1, 2], help="1: epoch 1 only (e.g. --batches 3000: a "
                                                                         "full MNIST epoch)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    nets = a.nets.split(",")
    for n in nets:
        if n not in NETS:
            raise SystemExit(f"unknown net {n!r}; known: {list(NETS)}")
    for m in a.methods.split(","):
        if m not in METHODS + EXTRA:
            raise SystemExit(f"unknown method {m!r}; known: {list(METHODS + EXTRA)}")
    ds = data(a.synthetic, a.batches * 20)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} thread(s), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, data {ds.name}, K={a.batches} batches, "
          f"{a.repeats} repeats, tol {a.tol}, hybrid prefix {a.prefix} omega {a.omega}, coupling {a.coupling}")
    print("| net | method | CPU s / batch, epoch 1 (min, median) | x fixed | epoch 2 (min, median) | x fixed | "
          "free steps mean / max | sweeps mean / max | face solves | sweep-cap fallbacks / unconverged | "
          "within 1e-4 of s* | max |s - s*| | coupling |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in nets:
        hidden, fs, ns = NETS[name]
        for topo in a.topologies.split(","):
            methods = a.methods.split(",")
            times = {m: ([], []) for m in methods}
            reps, fids, chosen = {}, {}, {}
            for rep in range(a.repeats):
                for m in methods:  # each method in turn within a repeat: the machine's load hits all alike
                    tr = trainer(ds, hidden, topo, euler(m, (fs, ns), a.tol, a.prefix, a.omega, a.coupling))
                    e1, e2 = time_passes(tr, a.batches, a.passes)
                    times[m][0].append(e1)
                    times[m][1].append(e2)
                    if rep == 0:  # the trajectories are the same in every repeat
                        reps[m] = tr.solver.report()  # what the solver reported over both passes
                        c = tr.solver.describe().get("coupling_chosen", a.coupling)
                        chosen[m] = ", ".join(f"{v} ({k})" for k, v in c.items()) if isinstance(c, dict) else c
                        fids[m] = fidelity(tr, 0, a.limit_steps) if a.limit_steps else {"within_1e-4": float("nan"),
                                                                                      "max": float("nan")}
            base = "fixed" if "fixed" in times else methods[0]
            b1, b2 = min(times[base][0]), min(times[base][1])
            for m in methods:
                r, f, (t1, t2) = reps[m], fids[m], times[m]
                steps = f"{r['free_steps_mean'][0]:.0f} / {r['free_steps_max'][0]}" if r else f"{fs} / {fs}"
                sweeps = f"{r['free_sweeps_mean'][0]:.0f} / {r['free_sweeps_max'][0]}" if r else "-"
                faces = f"{r['free_face_solves'][0]} of {r['free_examples'][0]}" if r else "-"
                # examples the hybrid's sweeps left at the cap (finished by Euler steps), and examples no method
                # brought to tol: both change what a run learns, so they belong beside its speed
                capped = f"{r['free_sweep_fallbacks'][0]} / {r['free_unconverged'][0]}" if r else "-"
                print(f"| {name} {topo} | {m} | {min(t1):.3f}, {statistics.median(t1):.3f} | {b1 / min(t1):.2f} | "
                      f"{min(t2):.3f}, {statistics.median(t2):.3f} | {b2 / min(t2):.2f} | {steps} | {sweeps} | "
                      f"{faces} | {capped} | "
                      f"{100 * f['within_1e-4']:.0f} % | {f['max']:.1e} | {chosen[m]} |", flush=True)


if __name__ == "__main__":
    main()
