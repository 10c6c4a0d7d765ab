"""Fewer transient steps, the same learning rule? spice-train iris's solver settings one at a time.

    .venv/bin/python benchmarks/bench_spice_steps.py                  # hidden 10, 8 epochs of pre-training
    .venv/bin/python benchmarks/bench_spice_steps.py --hidden 8 --repeats 8

A net is first trained on iris for --pretrain epochs by the Euler reference (train's iris flags), so the
circuits are those of a net in training, not random ones; the free particles come from one pass of the
session-13 settings. Then, for every row, SpiceSolver computes every training batch's free phase (from its
particle) and nudged phase (beta 0.5, the one-hot targets) and the EqProp update dW = (rho(n)^T rho(n) -
rho(f)^T rho(f)) / beta per batch. Printed per row: the largest relative difference of dW (over the batches,
Frobenius norms) from a reference whose timed nudge takes 1000 steps, and from the session-13 row; the
largest state differences; and the ngspice worker's CPU per example (min and median over --repeats, the rows
interleaved in each repeat, so machine load hits them alike), with the ratio to the session-13 row's.
Not a test: prints, asserts nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.spice_config import SpiceConfig  # noqa: E402
from circuits.spice_solver import SpiceSolver  # noqa: E402
from eqprop.config import EulerConfig, RunConfig, dataset_defaults  # noqa: E402
from eqprop.datasets import load_dataset  # noqa: E402
from eqprop.dynamics import rho  # noqa: E402
from eqprop.trainer import Trainer  # noqa: E402

# session 13's iris solver settings; each row adds to them
SESSION13 = dict(nudged_phase="timed", t_nudged=3.0, tstep=10.0, free_integration="gear")
ROWS = {
    "reference: timed nudge in 1000 steps": dict(timed_steps=1000),
    "session 13 (ngspice's 50-step nudge)": {},
    "max_step 100": dict(max_step=100.0),
    "settle_trtol 50": dict(settle_trtol=50.0),
    "timed_steps 10": dict(timed_steps=10),
    "all three": dict(max_step=100.0, settle_trtol=50.0, timed_steps=10),
    "all three, timed_steps 5": dict(max_step=100.0, settle_trtol=50.0, timed_steps=5),
    # session 15: the timed nudge's own trtol (its steps are set by the truncation error more than by timed_steps)
    "timed_trtol 50": dict(timed_trtol=50.0),
    "all three + timed_trtol 50 (iris now)": dict(max_step=100.0, settle_trtol=50.0, timed_steps=10, timed_trtol=50.0),
}


def updates(cfg: SpiceConfig, net, batches, particles, beta: float):
    """dW per batch, the free and nudged states, and the worker CPU seconds of the solves."""
    dws, frees, nudgeds = [], [], []
    with SpiceSolver(cfg) as sp:
        sp.relax(net, batches[0][0], torch.cat([batches[0][0], particles[0]], -1))  # load: not timed
        c0 = sp.worker_cpu_seconds()
        for (x, y), p in zip(batches, particles):
            f, n = sp.relax_phases(net, x, torch.cat([x, p], -1), beta, y)
            rf, rn = rho(f), rho(n)
            dws.append((rn.T @ rn - rf.T @ rf) / beta)
            frees.append(f)
            nudgeds.append(n)
        cpu = sp.worker_cpu_seconds() - c0
    return torch.stack(dws), torch.cat(frees), torch.cat(nudgeds), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=10, help="hidden neurons (default 10: EBANA's iris net)")
    ap.add_argument("--pretrain", type=int, default=8, help="epochs of Euler training first (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per row (default 5)")
    ap.add_argument("--beta", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("iris")
    flags = {k: v for k, v in dataset_defaults("train", "iris").items() if k not in ("epochs", "warmup")}
    run = RunConfig(dataset="iris", **{**flags, "hidden": [args.hidden]}, epochs=args.pretrain, seed=args.seed,
                    out=tempfile.mkdtemp(prefix="bench_spice_steps_"))  # the pre-training's files: not kept
    tr = Trainer(run, ds, euler=EulerConfig())
    tr.run(progress=False)
    net = tr.net.trial(0, copy=True).to(dtype=torch.float64)
    shutil.rmtree(run.out, ignore_errors=True)
    bs = run.batch_size
    x_all, y_all = torch.tensor(ds.x_train, dtype=torch.float64), torch.tensor(ds.y_train, dtype=torch.float64)
    batches = [(x_all[i:i + bs], y_all[i:i + bs]) for i in range(0, len(x_all) - bs + 1, bs)]
    n_ex = len(batches) * bs
    # particles: the free states one pass of the session-13 settings leaves (as a training epoch would)
    n_in = net.topology.n_in
    zeros = [torch.zeros(bs, net.topology.n - n_in, dtype=torch.float64)] * len(batches)
    _, free0, _, _ = updates(SpiceConfig(**SESSION13), net, batches, zeros, args.beta)
    particles = list(free0[:, n_in:].split(bs))
    cfgs = {name: SpiceConfig(**{**SESSION13, **extra}) for name, extra in ROWS.items()}
    results = {name: updates(cfg, net, batches, particles, args.beta) for name, cfg in cfgs.items()}
    cpu = {name: [r[3]] for name, r in results.items()}
    for _ in range(args.repeats - 1):
        for name, cfg in cfgs.items():
            cpu[name].append(updates(cfg, net, batches, particles, args.beta)[3])
    ref, s13 = results[next(iter(ROWS))], results["session 13 (ngspice's 50-step nudge)"]

    def rel(a, b) -> float:
        return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())

    def dstate(a, b) -> float:
        return float((rho(a) - rho(b)).abs().max())
    base = min(cpu["session 13 (ngspice's 50-step nudge)"])
    print(f"iris 4-{args.hidden}-3 after {args.pretrain} Euler epochs (seed {args.seed}), {n_ex} training examples, "
          f"beta {args.beta}; ngspice worker CPU per example over {args.repeats} repeats")
    print(f"{'row':38s} {'dW vs ref':>9s} {'dW vs s13':>9s} {'free vs s13':>11s} {'nudged vs s13':>13s} "
          f"{'ms/ex min':>9s} {'median':>7s} {'x s13':>6s}")
    for name, r in results.items():
        c = cpu[name]
        print(f"{name:38s} {rel(r[0], ref[0]):9.1e} {rel(r[0], s13[0]):9.1e} {dstate(r[1], s13[1]):11.1e} "
              f"{dstate(r[2], s13[2]):13.1e} {1e3 * min(c) / n_ex:9.3f} {1e3 * float(np.median(c)) / n_ex:7.3f} "
              f"{base / min(c):6.2f}")
    print("settings: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfgs['all three']).items()
                                   if k in ("tstep", "free_integration", "nudged_phase", "t_nudged", "max_step",
                                            "settle_trtol", "timed_steps", "rest_tol", "matrix_solver")))


if __name__ == "__main__":
    main()
