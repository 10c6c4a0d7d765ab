"""Speed of the fast equilibrium engine (eqprop/fast_relax.py) under the one Trainer (eqprop/trainer.py).

Prints, in one run, seconds per epoch (extrapolated from K measured batches) of one training
run through the Trainer (T = 1), the ratio against a straightforward eager loop kept
here as the baseline, and the time of T = 1, 8, 32 independent trials relative to T = 1:

  784-500x3-10 small-world p=0.1, batch 20, 500/8 steps (Gammell Fig. 2; MNIST-sized epoch)
  784-100x5-10 small-world p=0.1, batch 20, 1000/12 steps (Fig. 4 / Table 1)
  T trials of 784-100x5-10 (different seeds, hence masks), one lockstep batch each
  T trials of 10-10x5-1 (diabetes-sized), one free phase, against T separate EulerSolver runs

An epoch = 3000 training batches + 500 test batches (60k/10k MNIST at batch 20). Data are
random (speed does not depend on pixel values). Usage:

  python benchmarks/bench_engine.py --device cpu --batches 2 --threads 1
  python benchmarks/bench_engine.py --device cuda --batches 50
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from eqprop.config import EulerConfig, RunConfig
from eqprop.couplings import coupling_mode
from eqprop.datasets import Dataset
from eqprop.fast_relax import FastEulerSolver
from eqprop.learning import apply_update, eqprop_update, rate_tensors
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import small_world
from eqprop.trainer import Trainer

N_TRAIN, N_TEST, BATCH = 60000, 10000, 20


# -- the baseline: the textbook loop, no packing, no folding, no graphs --------------------
def eager_relax(W, b, n_in, n_out, x, s0, beta, target, steps, eps=0.5, form="sequential"):
    """Every neuron in one (B, N) state; W rho(s) + b over all N each step; inputs re-clamped."""
    s = s0.clone()
    s[:, :n_in] = x
    for _ in range(steps):
        h = s.clamp(0, 1) @ W + b
        new = s + eps * (h - s)
        if beta != 0:
            if form == "gradient":
                new[:, -n_out:] += 2 * eps * beta * (target - s[:, -n_out:])
            else:
                yc = new[:, -n_out:].clamp(0, 1)
                new[:, -n_out:] = yc + 2 * eps * beta * (target - yc)
        new = new.clamp(0, 1)
        new[:, :n_in] = x
        s = new
    return s


def eager_train_batch(net, lr_W, lr_b, x, y, particle, beta, free_steps, nudged_steps):
    n_in, n_out = net.topology.n_in, net.topology.n_out
    free = eager_relax(net.W, net.b, n_in, n_out, x, particle, 0.0, None, free_steps)
    particle.copy_(free)
    nudged = eager_relax(net.W, net.b, n_in, n_out, x, free, beta, y, nudged_steps)
    dW, db = eqprop_update(free, nudged, beta, net.mask_tensor(), net.topology.directed, n_in)
    apply_update(net, dW, db, lr_W, lr_b)
    return free


# -- helpers ------------------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(n_in, n_out, n_train, n_test, seed=0):
    rng = np.random.default_rng(seed)
    lab_tr, lab_te = rng.integers(n_out, size=n_train), rng.integers(n_out, size=n_test)
    eye = np.eye(n_out, dtype=np.float32)
    return Dataset("synthetic", "classification", rng.random((n_train, n_in), dtype=np.float32), eye[lab_tr],
                   rng.random((n_test, n_in), dtype=np.float32), eye[lab_te], lab_tr, lab_te, batch_size=BATCH)


SCRATCH = Path(tempfile.gettempdir()) / "bench_engine"  # results folders and checkpoint: named, never written


def configs(hidden, steps, T, device):
    runs = [RunConfig(dataset="synthetic", hidden=tuple(hidden), topology="sw", p=0.1, lr=0.02, batch_size=BATCH,
                      epochs=1, seed=s, device=str(device), out=str(SCRATCH / f"s{s}")) for s in range(T)]
    return runs, EulerConfig(free_steps=steps[0], nudged_steps=steps[1])


def time_trials(hidden, steps, T, K, device, solver_kw, test=True):
    """(s per train batch, s per test batch or None, trainer) of T lockstep trials, after a warm-up."""
    data = synthetic(784, 10, (K + 1) * BATCH, 2 * BATCH)
    runs, euler = configs(hidden, steps, T, device)
    # the Trainer's own engine setting: data validated once, no finiteness check per relax call
    solver = FastEulerSolver(euler, check_values=False, **solver_kw)
    tr = Trainer(runs, data, solver=solver, checkpoint=SCRATCH / "checkpoint.pt")
    tr.train_batch(K)  # warm-up: CUDA graph capture, allocator, cuBLAS handles
    if test:
        tr.evaluate()
    sync(device)
    t0 = time.perf_counter()
    for k in range(K):
        tr.train_batch(k)
    sync(device)
    t_train = (time.perf_counter() - t0) / K
    if not test:
        return t_train, None, tr
    t0 = time.perf_counter()
    tr.evaluate()  # 2 test batches, free phase only
    sync(device)
    return t_train, (time.perf_counter() - t0) / 2, tr


def time_baseline(tr, K, steps, device):
    """s per train/test batch of the eager loop on trial 0 of ``tr`` (a copy of its current weights)."""
    net = tr.net.trial(0, copy=True)
    lr_W, lr_b = rate_tensors(net, 0.02, net.dtype, device)
    x = torch.rand(BATCH, 784, device=device)
    y = torch.nn.functional.one_hot(torch.randint(10, (BATCH,)), 10).to(device, net.dtype)
    particle = torch.zeros(BATCH, net.topology.n, device=device)
    eager_train_batch(net, lr_W, lr_b, x, y, particle, 1.0, 2, 2)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for k in range(K):
        eager_train_batch(net, lr_W, lr_b, x, y, particle, (-1.0) ** k, *steps)
    sync(device)
    t_train = (time.perf_counter() - t0) / K
    t0 = time.perf_counter()
    eager_relax(net.W, net.b, 784, 10, x, particle, 0.0, None, steps[0])
    sync(device)
    return t_train, time.perf_counter() - t0


def faithful_check(tr, steps, device):
    """Free phase from 0 on trial 0: max |engine - EulerSolver| and, for scale, the reference's
    own fp32 error, max |EulerSolver fp32 - EulerSolver fp64| (fp32 rounding of a long run)."""
    net = tr.net.trial(0, copy=True)
    x = torch.rand(BATCH, 784, device=device)
    cfg = EulerConfig(free_steps=steps[0])
    ref = EulerSolver(cfg).relax(net, x)
    fast = FastEulerSolver(cfg).relax(net, x)
    exact = EulerSolver(cfg).relax(net.to(dtype=torch.float64), x.double())
    return float((fast - ref).abs().max()), float((ref.double() - exact).abs().max())


def tiny_trials(counts, device, solver_kw, steps=1000, B=5):
    """Small-net Monte Carlo (diabetes-sized 10-10x5-1 SW): one lockstep free phase vs separate runs."""
    nets = [Network.init(small_world([10] + [10] * 5 + [1], 0.1, seed=s), seed=s, device=device)
            for s in range(max(counts))]
    x = torch.rand(B, 10, device=device)

    def best_of(f, n=3):
        out = []
        for _ in range(n):
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            out.append(time.perf_counter() - t0)
        return min(out)

    cfg = EulerConfig(free_steps=steps)
    ref, fast = EulerSolver(cfg), FastEulerSolver(cfg, **solver_kw)
    print(f"\nT trials of 10-10x5-1 SW p=0.1, batch {B}, one {steps}-step free phase (best of 3):")
    for T in counts:
        st = Network.stack(nets[:T])
        fast.relax(st, x)  # warm-up / capture
        t_one = best_of(lambda: fast.relax(st, x))
        t_sep = best_of(lambda: [ref.relax(n, x) for n in nets[:T]], 1)
        print(f"  T={T:3d}: {t_one * 1e3:7.1f} ms in one call; {T} separate EulerSolver runs {t_sep * 1e3:7.1f} ms "
              f"(x{t_sep / t_one:.1f})")


def epoch_seconds(t_train, t_test):
    return N_TRAIN // BATCH * t_train + N_TEST // BATCH * t_test


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=None, help="training batches measured (default 2 cpu, 50 cuda)")
    ap.add_argument("--trials", default="1,8,32", help="trial counts for the scaling case")
    ap.add_argument("--tf32", action="store_true", help="TF32 matmuls (CUDA; not the faithful setting)")
    ap.add_argument("--no-graph", action="store_true", help="CUDA without graph capture (diagnostics)")
    ap.add_argument("--skip-baseline", action="store_true", help="do not time the eager baseline")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 gives stable numbers on a shared, loaded machine)")
    ap.add_argument("--skip-check", action="store_true", help="skip the engine-vs-EulerSolver state check")
    ap.add_argument("--cases", default="big,small,trials,tiny", help="comma list of big, small, trials, tiny")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    K = a.batches or (2 if device.type == "cpu" else 50)
    solver_kw = {"tf32": a.tf32, "cuda_graph": False if a.no_graph else None}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"torch {torch.__version__}, device {device} ({name}), {torch.get_num_threads()} CPU threads, "
          f"tf32={a.tf32}, graphs={'off' if a.no_graph else 'on (cuda)'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"epoch = {N_TRAIN // BATCH} train batches + {N_TEST // BATCH} test batches; "
          f"{K} train batches and 2 test batches measured per case, after one warm-up batch\n")
    cases = a.cases.split(",")
    for key, hidden, steps in (("big", [500] * 3, (500, 8)), ("small", [100] * 5, (1000, 12))):
        if key not in cases:
            continue
        label = f"784-{hidden[0]}x{len(hidden)}-10 SW p=0.1, {steps[0]}/{steps[1]} steps"
        t_tr, t_te, tr = time_trials(hidden, steps, 1, K, device, solver_kw)
        fast = epoch_seconds(t_tr, t_te)
        print(f"{label}: engine ({coupling_mode(tr.solver.config.coupling, tr.net.topologies, device)} coupling) "
              f"{t_tr * 1e3:.1f} ms/train batch, {t_te * 1e3:.1f} ms/test batch -> {fast:.1f} s/epoch")
        if not a.skip_baseline:
            b_tr, b_te = time_baseline(tr, K, steps, device)
            base = epoch_seconds(b_tr, b_te)
            print(f"  eager baseline {b_tr * 1e3:.1f} ms/train batch, {b_te * 1e3:.1f} ms/test batch -> "
                  f"{base:.1f} s/epoch; engine speed-up x{base / fast:.2f}")
        if not a.skip_check:
            d, ref_err = faithful_check(tr, steps, device)
            print(f"  faithful check ({steps[0]} free steps): max |engine - EulerSolver| {d:.1e}; "
                  f"EulerSolver fp32 vs fp64 {ref_err:.1e}")
    if "trials" in cases:
        counts = [int(v) for v in a.trials.split(",")]
        print(f"\nT trials of 784-100x5-10 SW p=0.1, 1000/12 steps, one lockstep batch each ({K} measured):")
        t1 = None
        for T in counts:
            t_tr, _, tr = time_trials([100] * 5, (1000, 12), T, K, device, solver_kw, test=False)
            t1 = t_tr if t1 is None else t1
            print(f"  T={T:3d}: {t_tr * 1e3:8.1f} ms/batch for all trials, {t_tr / T * 1e3:7.1f} ms per trial, "
                  f"x{t_tr / t1:.2f} the time of T={counts[0]}")
            del tr
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "tiny" in cases:
        tiny_trials([int(v) for v in a.trials.split(",")], device, solver_kw)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (CPU timings are wall clock)")


if __name__ == "__main__":
    main()
