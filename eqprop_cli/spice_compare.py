"""`eqprop spice-compare`: argument parsing and printing for experiments.spice_compare."""
from __future__ import annotations

import sys

from .checks import positive_float, positive_int
from .spice import add_solver_flags, spice_config
from .train import add_config_flags, check_outs, configs_from_args

COMPARE_DEFAULTS = {"dataset": "wine", "hidden": [10, 10], "epochs": 3, "lr": 0.05, "batch_size": 5, "beta": 0.5,
                    "dtype": "float64"}


def cmd_compare(args) -> int:
    from circuits.spice_config import SpiceConfig
    from eqprop.datasets import load_dataset
    from experiments.spice_compare import converged_euler, spice_compare
    cfgs, settings, ck = configs_from_args(args, "spice-compare", COMPARE_DEFAULTS, {"spice": SpiceConfig})
    if ck is not None:
        raise ValueError("spice-compare compares one run: give --seed, not --seeds")
    run = cfgs[0]
    spice = spice_config(args, settings["spice"])
    check_outs(cfgs, None)
    report = spice_compare(run, spice, load_dataset(run.dataset), run.out,
                           converged_euler(args.euler_eps, args.euler_tol, args.euler_max_steps),
                           progress=not args.quiet, log=lambda s: print(s, file=sys.stderr))
    print(f"spice-compare {run.dataset}: results in {run.out} (compare.json, compare.png)")
    for r in report["epochs"]:
        print(f"  epoch {r['epoch']}: max |W_spice - W_euler| {r['max_abs_dW']:.2e}, max |b diff| "
              f"{r['max_abs_db']:.2e}; test error spice {r['spice_test_error']:.3f}, euler {r['euler_test_error']:.3f}")
    return 0 if report["epochs"] and report["epochs"][0]["max_abs_dW"] <= args.tol else 1


def register(sub) -> None:
    p = sub.add_parser("spice-compare", help="train with ngspice and with the Euler reference from one seed",
                       description="The same EqProp run with ngspice and with the converged Euler reference "
                                   "(gradient nudge) from one seed; the weights compared after every epoch.")
    add_config_flags(p, euler=False)
    add_solver_flags(p)
    p.add_argument("--euler-eps", type=positive_float, default=0.1,
                   help="Euler step of the reference (default 0.1: 0.5 can reach another fixed point than the "
                        "circuit's continuous dynamics; docs/devices.md)")
    p.add_argument("--euler-tol", type=positive_float, default=1e-12, help="Euler phases stop once max |ds| < this")
    p.add_argument("--euler-max-steps", type=positive_int, default=200000)
    p.add_argument("--tol", type=positive_float, default=1e-4, help="exit 1 if epoch 1's max |dW| exceeds this")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)
