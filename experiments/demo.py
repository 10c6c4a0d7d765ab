"""The quick-start job (``make demo``): the three things the toolkit does, on bundled data, in
about a minute: EqProp with the Euler reference on scikit-learn's digits (a small-world
net), ngspice's equilibria checked against the Euler reference, and EqProp with ngspice in
the loop on iris at `eqprop spice-train --dataset iris`'s defaults, run and solver settings
(docs/training.md: 4-16-3, soft targets, 80 epochs: 96.7 % test accuracy on each of seeds 0-39).
The ngspice training, the longest step, runs in a process of its own started first, alongside the
other two (a second core then takes them: 61 s in all on the project's 2-core machine, 85 s one after
the other; README).
Returns a short readable summary."""
from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from eqprop.config import EulerConfig, RunConfig, dataset_defaults, dataset_solver_defaults
from eqprop.datasets import load_dataset
from eqprop.run_files import write_json
from eqprop.trainer import Trainer

# 5 epochs (~3 s each on an idle 2-core machine): the whole demo stays near 45 s with the ngspice step
EULER_RUN = RunConfig(dataset="digits", hidden=(32, 32), topology="sw", p=0.1, lr=0.05, batch_size=20, epochs=5,
                      seed=0)
EULER_SOLVER = EulerConfig(free_steps=100, nudged_steps=12)


SPICE_DATASET = "iris"  # 80 epochs of 150 examples (120 with a free and a nudged ngspice solve, 30 free only)


def spice_run(dataset: str = SPICE_DATASET) -> RunConfig:
    """The dataset through ngspice exactly as `eqprop spice-train --dataset D` runs it (seed 0)."""
    from .spice_train import SPICE_TRAIN_DEFAULTS
    return RunConfig.from_dict({**SPICE_TRAIN_DEFAULTS, **dataset_defaults("spice-train", dataset),
                                "dataset": dataset})


def spice_solver(dataset: str = SPICE_DATASET):
    """The SpiceConfig `eqprop spice-train --dataset D` runs with (its dataset's solver defaults)."""
    from circuits.spice_config import SpiceConfig
    return SpiceConfig(**dataset_solver_defaults("spice-train", dataset).get("spice", {}))


def _net_name(run: RunConfig, data) -> str:
    return "-".join(map(str, (data.n_in, *run.hidden, data.n_out)))


def spice_step(out: str) -> str:
    """Step 3 (in its own process): EqProp through ngspice at spice-train's defaults; its summary line."""
    import dataclasses

    from .spice_train import spice_train
    run = dataclasses.replace(spice_run(), out=str(Path(out) / f"spice-{SPICE_DATASET}"))
    data = load_dataset(run.dataset)
    net = _net_name(run, data)
    # no per-epoch lines: 80 epochs would bury the summary (the metrics are in the run folder)
    sm = spice_train(run, spice_solver(), data, progress=False)[0]
    e0, e1 = sm["epochs"][0], sm["epochs"][-1]
    return (f"3. EqProp with ngspice in the loop, {run.dataset} {net}: test accuracy "
            f"{1 - e0['test_error']:.0%} after epoch 1 -> {1 - e1['test_error']:.0%} after epoch {e1['epoch']} "
            f"(every equilibrium an ngspice solve; {sum(e['seconds'] for e in sm['epochs']):.0f} s)  [{run.out}]")


def demo(out: str | Path = "results/demo", progress: bool = True, log=print) -> list[str]:
    import dataclasses

    out = Path(out)
    lines = []
    spice = shutil.which("ngspice") is not None
    pool = None
    if spice:
        run3 = spice_run()
        log(f"[demo 3/3, started first, in its own process] EqProp with ngspice in the loop: {run3.dataset} "
            f"{_net_name(run3, load_dataset(SPICE_DATASET))} at "
            f"the spice-train defaults ({run3.epochs} epochs, lr {run3.lr}, {run3.schedule})")
        # spawn: a fresh interpreter (no fork of this one's torch threads)
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        step3 = pool.submit(spice_step, str(out))
    try:
        run = dataclasses.replace(EULER_RUN, out=str(out / "euler-digits"))
        log(f"[demo 1/3] Euler reference: digits 64-{'-'.join(map(str, run.hidden))}-10 small-world p={run.p}, "
            f"{run.epochs} epochs")
        m = Trainer(run, load_dataset(run.dataset), euler=EULER_SOLVER).run(progress=progress)[0]
        first, last = m["epochs"][0], m["epochs"][-1]
        lines.append(f"1. Euler reference, digits (small-world, {m['n_connections']} connections): test error "
                     f"{first['test_error']:.3f} after epoch 1 -> {last['test_error']:.3f} after epoch "
                     f"{last['epoch']}; log-spread {m['log_spread']:.2f}  [{run.out}]")
        if not spice:
            lines.append("ngspice not installed: the circuit steps were skipped (apt-get install ngspice libngspice0)")
            return lines
        from circuits.spice_config import SpiceConfig
        from circuits.spice_solver import SpiceSolver

        from .spice_check import random_networks, spice_check

        log("[demo 2/3] ngspice vs Euler equilibria on 6 random layered and small-world nets")
        with SpiceSolver(SpiceConfig()) as solver:
            report = spice_check(random_networks([(6, 12, 12, 4), (8, 16, 16, 16, 4)], "both", 0.2, 6), solver,
                                 total=6, progress=progress)
        write_json(out / "spice-check.json", report)
        lines.append(f"2. ngspice vs Euler equilibria, 6 nets: worst max |rho_spice - s_euler| "
                     f"{report['worst']['overall']:.1e} ({'passed' if report['passed'] else 'FAILED'}, tol 1e-6)  "
                     f"[{out / 'spice-check.json'}]")
        log("[demo 3/3] waiting for the ngspice training")
        lines.append(step3.result())  # its error, if any, is raised here
        return lines
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
