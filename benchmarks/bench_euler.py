"""Euler steps per second of the reference solver vs a straightforward dense masked step.

The baseline is what one writes first: the whole (B, N) state, s <- clip(s + eps((W*mask) rho(s) + b - s))
with one N x N matmul per step and the inputs re-clamped after each step. The reference solver
folds the clamped inputs into a per-batch constant and multiplies per block (plus a sparse product
for layer-skipping connections). Both run in the same process, same threads, same data; the ratio
is printed. Usage: python benchmarks/bench_euler.py [--steps 200] [--batch 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from eqprop.config import EulerConfig
from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world


def dense_masked_relax(net: Network, x: torch.Tensor, steps: int, eps: float = 0.5) -> torch.Tensor:
    n_in = net.topology.n_in
    Wm = net.W * net.mask_tensor()
    s = torch.zeros(x.shape[0], net.topology.n, dtype=net.dtype)
    s[:, :n_in] = x
    for _ in range(steps):
        s = (s + eps * (s.clamp(0, 1) @ Wm + net.b - s)).clamp(0, 1)
        s[:, :n_in] = x
    return s


def timed(fn, repeats=3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, batch {args.batch}, {args.steps} steps, fp32")
    print(f"{'network':<28}{'reference steps/s':>18}{'dense masked steps/s':>22}{'ratio':>8}  max|diff|")
    for name, topo in [("784-100x5-10 MLFF", mlff((784,) + (100,) * 5 + (10,))),
                       ("784-100x5-10 SW p=0.1", small_world((784,) + (100,) * 5 + (10,), 0.1, seed=0)),
                       ("784-500x3-10 MLFF", mlff((784, 500, 500, 500, 10))),
                       ("784-500x3-10 SW p=0.1", small_world((784, 500, 500, 500, 10), 0.1, seed=0))]:
        net = Network.init(topo, seed=0)
        x = torch.rand(args.batch, 784, generator=torch.Generator().manual_seed(0))
        solver = EulerSolver(EulerConfig(free_steps=args.steps))
        t_ref = timed(lambda: solver.relax(net, x))
        t_dense = timed(lambda: dense_masked_relax(net, x, args.steps))
        diff = float((solver.relax(net, x) - dense_masked_relax(net, x, args.steps)).abs().max())
        print(f"{name:<28}{args.steps / t_ref:>18.0f}{args.steps / t_dense:>22.0f}{t_dense / t_ref:>8.2f}  {diff:.1e}")


if __name__ == "__main__":
    main()
