"""The digital surrogate's Monte Carlo speed-up: T device instances of a Table 1 net as lockstep
trials of one Trainer (one DeviceEulerSolver, the fast engine relaxing all T at once) vs T
separate runs, side by side in one process, the same epoch of the same data.

    .venv/bin/python benchmarks/bench_surrogate.py                 # 32 instances, wine 13-10x5-3
    .venv/bin/python benchmarks/bench_surrogate.py --instances 8 --repeats 3

Prints CPU seconds (time.process_time; one torch thread) and wall seconds of each, min and
median over repeats, and the ratio. Trial 0 of the lockstep run and separate run 0 hold the same
device instance (instance_seed(device_seed, 0)), so their weights must agree: printed as a check.
Only the training epoch is timed (run_epoch), not the results files.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.device_solver import DeviceEulerSolver  # noqa: E402
from circuits.devices import load_preset  # noqa: E402
from eqprop.config import EulerConfig, RunConfig  # noqa: E402
from eqprop.datasets import load_dataset  # noqa: E402
from eqprop.trainer import Trainer  # noqa: E402


def timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dataset", default="wine")
    ap.add_argument("--preset", default="taox_hfox_rram")
    ap.add_argument("--train-limit", type=int, default=20, help="training examples of the timed epoch")
    ap.add_argument("--test-limit", type=int, default=5)
    ap.add_argument("--free-steps", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.instances < 1 or args.repeats < 1:
        ap.error("--instances and --repeats must be >= 1")
    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    # Table 1's wine net; d2d gain spread on top of the preset's 7 bits and write noise: instances differ
    device = load_preset(args.preset, g_dtod=0.05)
    euler = EulerConfig(free_steps=args.free_steps, nudged_steps=12, engine="fast")
    tmp = Path(tempfile.mkdtemp(prefix="bench-surrogate-"))

    def cfg(t):
        return RunConfig(dataset=args.dataset, hidden=[10] * 5, lr=0.01, epochs=1, seed=0, dtype="float64",
                         train_limit=args.train_limit, test_limit=args.test_limit, out=str(tmp / f"t{t}"))

    def lockstep():
        tr = Trainer([cfg(t) for t in range(args.instances)], data, checkpoint=tmp / "ck.pt",
                     solver=DeviceEulerSolver(device, euler, device_seed=0))
        tr.run_epoch()
        return tr.net.W[0].clone()

    def separate():
        first = None
        for t in range(args.instances):  # run t holds instance instance_seed(t, 0); run 0 = lockstep trial 0
            tr = Trainer(cfg(t), data, solver=DeviceEulerSolver(device, euler, device_seed=t))
            tr.run_epoch()
            first = tr.net.W[0].clone() if first is None else first
        return first

    rows = {"lockstep": [], "separate": []}
    for _ in range(args.repeats):
        for name, fn in (("lockstep", lockstep), ("separate", separate)):
            cpu, wall, W = timed(fn)
            rows[name].append((cpu, wall, W))
    diff = float((rows["lockstep"][0][2] - rows["separate"][0][2]).abs().max())
    print(f"{args.instances} Monte Carlo instances of {args.dataset} {data.n_in}-10x5-{data.n_out}, device "
          f"{device.name} (bits {device.bits}, write noise {device.write_noise_std}, g_dtod {device.g_dtod}), one "
          f"epoch of {args.train_limit} train / {args.test_limit} test examples, {args.free_steps}/12 steps, "
          f"1 torch thread, {args.repeats} repeats")
    print("| run | CPU s min | CPU s median | wall s min | wall s median |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        cpu, wall = [x[0] for x in r], [x[1] for x in r]
        print(f"| {name} | {min(cpu):.2f} | {statistics.median(cpu):.2f} | {min(wall):.2f} | "
              f"{statistics.median(wall):.2f} |")
    ratio_cpu = min(x[0] for x in rows["separate"]) / min(x[0] for x in rows["lockstep"])
    ratio_wall = min(x[1] for x in rows["separate"]) / min(x[1] for x in rows["lockstep"])
    print(f"separate / lockstep: {ratio_cpu:.1f}x CPU time, {ratio_wall:.1f}x wall time (min over repeats)")
    print(f"trial 0 vs separate run 0 (same device instance): max |W difference| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
