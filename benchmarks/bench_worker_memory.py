"""ngspice worker memory over many solves: with and without SpiceSolver's recycling.

libngspice keeps memory per analysis that `destroy all` does not return, so a worker that
solves forever grows forever. SpiceSolver replaces a worker after `recycle_after` solves.
This runs N solves of a small net in both modes and samples the worker's resident memory
(VmRSS from /proc/<pid>/status) every `--every` solves; prints the curves side by side and
writes them to CSV and PNG.

    python benchmarks/bench_worker_memory.py --solves 30000          # ~5-10 min on 2 cores
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from circuits.spice_solver import SpiceSolver
from eqprop.network import Network
from eqprop.topology import mlff


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def run(solves: int, every: int, recycle_after: int, batch: int) -> list[tuple[int, float]]:
    net = Network.init(mlff((4, 8, 3)), seed=0, dtype=torch.float64)
    x = torch.as_tensor(np.random.default_rng(0).random((batch, 4)))
    curve = []
    with SpiceSolver(recycle_after=recycle_after, timeout=120) as s:
        done = 0
        while done < solves:
            s.relax(net, x)
            done += batch
            if done % every < batch:
                curve.append((done, rss_mb(s._slots[0][0].session.pid)))
    return curve


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--solves", type=int, default=30000)
    p.add_argument("--every", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50, help="examples per relax call")
    p.add_argument("--recycle-after", type=int, default=5000, help="the recycling mode's setting")
    p.add_argument("--out", type=Path, default=Path("results/bench_worker_memory"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    curves = {}
    for name, rec in (("never recycled", 10**9), (f"recycled every {args.recycle_after}", args.recycle_after)):
        t0 = time.process_time()
        curves[name] = run(args.solves, args.every, rec, args.batch)
        print(f"{name}: {time.process_time() - t0:.0f} s CPU in this process", flush=True)
    names = list(curves)
    print(f"\n| solves | RSS MB, {names[0]} | RSS MB, {names[1]} |\n|---|---|---|")
    for (n, a), (_, b) in zip(*curves.values()):
        print(f"| {n} | {a:.1f} | {b:.1f} |")
    first = {k: v[0][1] for k, v in curves.items()}
    last = {k: v[-1][1] for k, v in curves.items()}
    peak = {k: max(r for _, r in v) for k, v in curves.items()}
    for k in names:
        print(f"{k}: first {first[k]:.1f} MB, last {last[k]:.1f} MB, peak {peak[k]:.1f} MB, "
              f"growth {1000 * (last[k] - first[k]) / max(curves[k][-1][0] - curves[k][0][0], 1):.2f} MB per 1,000")
    with open(args.out / "rss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["solves"] + names)
        for (n, a), (_, b) in zip(*curves.values()):
            w.writerow([n, a, b])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, v in curves.items():
        ax.plot([n for n, _ in v], [r for _, r in v], "o-", ms=3, label=k)
    ax.set_xlabel("solves")
    ax.set_ylabel("worker RSS (MB)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "rss.png", dpi=110)
    print(f"\nwrote {args.out / 'rss.csv'} and {args.out / 'rss.png'}")


if __name__ == "__main__":
    main()
