"""Cost per batch of the weight update and its statistics: dense N x N against the connected tiles.

Side by side in one run, for 784-100x5-10 and 784-500x3-10, MLFF and small-world p = 0.1,
batch 20, one thread (CPU time, time.process_time):

* dense: what the Trainer did before, kept here as the baseline: the rule over all N x N
  (``eqprop_update`` given the dense mask), BlockStats' former sums (2L slice reductions of
  |dW| and dW^2 over N x N in float64) and W += lr (.) dW over N x N;
* tiles: ``eqprop_update`` given ``ConnectionBlocks`` (skip tiles as dense sub-blocks, and as
  sparse connections), ``BlockStats.add`` and ``apply_update`` on the tiles;

min / median over the repeats and the ratio dense / tiles; the largest difference of the two dW.
Then the coupling choice ``auto`` measured on each net (both engines) beside the former width
rule, and one Trainer train batch end to end (fast engine, MNIST-shaped random data, the papers'
step counts) with the former dense update + stats against the current one.

  OMP_NUM_THREADS=1 python benchmarks/bench_update.py --repeats 15 --batches 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_engine import SCRATCH, configs, synthetic  # noqa: E402  (the engine benchmark's data and configs)

from eqprop import learning  # noqa: E402
from eqprop.couplings import MEASURE_REPEATS, coupling_mode, measure_coupling  # noqa: E402
from eqprop.fast_relax import FastEulerSolver  # noqa: E402
from eqprop.learning import ConnectionBlocks, apply_update, eqprop_update, rate_tensors  # noqa: E402
from eqprop.metrics import BlockStats  # noqa: E402
from eqprop.network import Network  # noqa: E402
from eqprop.topology import mlff, small_world  # noqa: E402
from eqprop.trainer import Trainer  # noqa: E402

BATCH = 20
CASES = [((100,) * 5, (1000, 12)), ((500,) * 3, (500, 8))]  # hidden layers, (free, nudged) steps as in the papers


class DenseStats(BlockStats):
    """BlockStats' former per-batch sums over all of N x N (the baseline)."""

    def _layer_sums(self, X):
        sl = [self.topology.layer_slice(l) for l in range(len(self.topology.sizes))]
        cols = torch.stack([X[..., :, s].sum(-1) for s in sl], -1)
        return torch.stack([cols[..., s, :].sum(-2) for s in sl], -2)

    def _fold(self, S):
        if self.directed:
            S = S + S.transpose(-1, -2)
        S = S.clone()
        S.diagonal(dim1=-2, dim2=-1).mul_(0.5)
        return torch.triu(S)

    def add(self, dW):
        d = dW if self.trials else dW.unsqueeze(0)
        dd = d.double()
        r = self._rms(self._fold(self._layer_sums(dd * dd)))
        self.rms_sum += r
        self.epoch_sum += r
        a = dd.abs()
        self.abs_sum += self._fold(self._layer_sums(a))
        if self.abs_full is not None:
            self.abs_full += a
        self.rms_n += 1
        self.epoch_n += 1
        self.abs_n += 1
        return r if self.trials else r[0]


def dense_apply(network, dW, db, lr_W, lr_b):
    network.W.add_(lr_W * dW)
    network.b.add_(lr_b * db)


def cpu_ms(fn) -> float:
    t0 = time.process_time()
    fn()
    return 1e3 * (time.process_time() - t0)


def update_case(sizes, topology, repeats):
    topo = mlff(sizes) if topology == "mlff" else small_world(sizes, 0.1, seed=1)
    net = Network.stack([Network.init(topo, seed=0)])  # as the Trainer holds it: a stack of T = 1
    topos, n_in, N = list(net.topologies), sizes[0], topo.n
    g = torch.Generator().manual_seed(0)
    free, nudged = torch.rand(1, BATCH, N, generator=g), torch.rand(1, BATCH, N, generator=g)
    beta = torch.tensor([0.5])
    lr_W, lr_b = rate_tensors(net, [0.02])
    mask = net.mask_tensor()
    variants = {"dense": (mask, DenseStats(topos), dense_apply, learning.SKIPS)}
    for skips in ("dense", "sparse"):
        learning.SKIPS = skips  # the form BlockStats and apply_update take too
        variants[f"tiles, skips {skips}"] = (ConnectionBlocks(topos, reuse_output=True), BlockStats(topos),
                                             apply_update, skips)
    dWs = {}

    def step(name):
        m, stats, apply, learning.SKIPS = variants[name]
        dW, db = eqprop_update(free, nudged, beta, m, False, n_in)
        stats.add(dW)
        apply(net, dW, db, lr_W, lr_b)
        dWs[name] = dW.clone()

    times = {name: [] for name in variants}
    for name in variants:
        step(name)  # warm-up (buffers, masks, index tensors)
    for _ in range(repeats):
        for name in variants:
            times[name].append(cpu_ms(lambda: step(name)))
    cover = [variants[f"tiles, skips {k}"][0].entries() / N**2 for k in ("dense", "sparse")]
    print(f"{topology.upper()} {'-'.join(map(str, sizes))}: N = {N}, {topo.n_connections} connections; an update "
          f"touches {cover[0]:.1%} of N x N (skips dense), {cover[1]:.1%} (skips sparse)")
    base = statistics.median(times["dense"])
    for name, ts in times.items():
        diff = float((dWs[name] - dWs["dense"]).abs().max())
        print(f"  {name:19s} min {min(ts):7.2f} ms  median {statistics.median(ts):7.2f} ms  "
              f"x{base / statistics.median(ts):5.1f} (dense/this, medians)  max |dW - dense dW| {diff:.1e}")


def train_batch_case(hidden, steps, K):
    """CPU ms per Trainer train batch (fast engine, SW p 0.1): former dense update + stats, and now."""
    out = {}
    for which in ("dense", "tiles"):
        data = synthetic(784, 10, (K + 1) * BATCH, BATCH)
        runs, euler = configs(hidden, steps, 1, torch.device("cpu"))
        solver = FastEulerSolver(euler, check_values=False)
        tr = Trainer(runs, data, solver=solver, checkpoint=SCRATCH / "checkpoint.pt",
                     rule=(lambda *a: eqprop_update(*a)) if which == "dense" else eqprop_update)  # no takes_blocks
        if which == "dense":
            tr.stats = DenseStats(list(tr.net.topologies))
            solver.apply_update = lambda network, dW, db, lr_W, lr_b: dense_apply(network, dW, db, lr_W, lr_b)
        tr.train_batch(K)  # warm-up
        out[which] = [cpu_ms(lambda: tr.train_batch(k)) for k in range(K)]
    d, t = statistics.median(out["dense"]), statistics.median(out["tiles"])
    print(f"  {'-'.join(map(str, (784, *hidden, 10)))} SW p=0.1, {steps[0]}/{steps[1]} steps: dense update "
          f"{d:.0f} ms/batch (min {min(out['dense']):.0f}), tiles {t:.0f} ms/batch (min {min(out['tiles']):.0f}): "
          f"x{d / t:.2f}")


def coupling_case(sizes, topology):
    """The measured coupling choice (both engines) beside the former width rule."""
    topo = mlff(sizes) if topology == "mlff" else small_world(sizes, 0.1, seed=1)
    net = Network.stack([Network.init(topo, seed=0)])
    rule = coupling_mode("auto", [topo], "cpu")
    for engine in ("fast", "reference"):
        r = measure_coupling(net, BATCH, engine)
        print(f"  {topology.upper():4s} {'-'.join(map(str, sizes)):26s} {engine:9s}: dense {r['dense_ms']:7.1f} ms, "
              f"blocks {r['blocks_ms']:7.1f} ms per {r['steps']} steps -> {r['choice']:6s} (dense/blocks "
              f"x{r['dense_ms'] / r['blocks_ms']:.2f}; the width rule: {rule})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batches", type=int, default=3, help="train batches per end-to-end case")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), batch {BATCH}, CPU time "
          f"(process_time), {args.repeats} repeats; load average {os.getloadavg()[0]:.1f}")
    print("\nupdate + statistics + W += lr dW, per batch")
    for hidden, _ in CASES:
        for topology in ("mlff", "sw"):
            update_case((784, *hidden, 10), topology, args.repeats)
    print(f"\ncoupling 'auto' measured (eqprop.couplings.measure_coupling, batch {BATCH}, fastest of "
          f"{MEASURE_REPEATS} calls per mode)")
    for hidden, _ in CASES:
        for topology in ("mlff", "sw"):
            coupling_case((784, *hidden, 10), topology)
    print(f"\nTrainer.train_batch end to end, median of {args.batches} batches after a warm-up")
    for hidden, steps in CASES:
        train_batch_case(hidden, steps, args.batches)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
