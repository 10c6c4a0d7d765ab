"""`eqprop physical-study`: argument parsing and printing only; the work is in experiments.physical_study."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checks import nonneg_float, nonneg_int, positive_float, positive_int


def _sweep(text: str) -> tuple[str, tuple | None]:
    """FIELD (its default values) or FIELD=V1,V2,... (numbers, or names for `preset` and `preset_nudge`)."""
    from experiments.physical_study import NAMED
    field, eq, values = text.partition("=")
    field = field.strip()
    if not field or (eq and not values.strip()):
        raise argparse.ArgumentTypeError(f"expected FIELD or FIELD=V1,V2,..., got {text!r}")
    if not eq:
        return field, None
    out = []
    for v in values.split(","):
        v = v.strip()
        try:
            out.append(float(v) if field not in NAMED else v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: expected numbers like 1,10,100, got {v!r}") from None
    return field, tuple(out)


def register(sub) -> None:
    from .train import _seeds
    p = sub.add_parser(
        "physical-study", help="physical level: train in the loop per non-ideality, accuracy vs the ideal level",
        description="Train --dataset with ngspice in the loop (spice-train's per-dataset settings) at the physical "
                    "level, one non-ideality at a time (the others off) or a whole preset, and on the ideal level "
                    "with the same seeds; report final test accuracy and the trained networks' equilibrium error "
                    "against the ideal level. One folder per point under OUT/DATASET/ (point.json, train/, "
                    "result.json); finished points are skipped on a re-run, a killed one resumes. Writes "
                    "summary.md, summary.json and accuracy.png. docs/physical.md.")
    p.add_argument("--dataset", default="xor", help="dataset (default xor; iris is ~25x the solves per epoch)")
    p.add_argument("--sweep", type=_sweep, action="append", metavar="FIELD[=V1,V2,...]",
                   help="a non-ideality and its values (repeatable): r_wire (Ohm per cell), tia_gain (V/V), "
                        "diode_is (A), diode_n, diode_rs (Ohm), read_v0 (V), preset (names), preset_nudge "
                        "(current, conductance: the realistic preset's nudge); "
                        "without values its defaults; "
                        "default: all of them with their defaults (experiments.physical_study.SWEEPS)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="seeds, lockstep trials per point (default 0,1,2)")
    p.add_argument("--epochs", type=positive_int, help="epochs per point (default: spice-train's for the dataset)")
    p.add_argument("--g0", type=positive_float, default=1e-5, help="unit conductance, S (default 1e-5)")
    p.add_argument("--c", type=positive_float, default=1e-13, help="node capacitance, F (default 1e-13)")
    p.add_argument("--clamp", type=nonneg_float, default=0.0, help="stiff behavioural clamp gain (default 0: none)")
    p.add_argument("--method", choices=["tran+op", "tran", "op"], default="tran+op", help="ngspice method")
    p.add_argument("--workers", type=nonneg_int, default=0,
                   help="points in parallel processes (default 0: one after another in this process)")
    p.add_argument("--out", "-o", type=Path, default=Path("results/physical_study"),
                   help="results root (default results/physical_study; points under OUT/DATASET/)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_physical_study)


def cmd_physical_study(args) -> int:
    from experiments.physical_study import SWEEPS, make_points, markdown, physical_study

    from .checks import results_folder
    sweeps = dict(args.sweep) if args.sweep else dict.fromkeys(SWEEPS)
    if args.sweep and len(sweeps) != len(args.sweep):
        raise ValueError("--sweep: a non-ideality given twice; give all its values in one --sweep FIELD=V1,V2")
    spice = {"g0": args.g0, "c": args.c, "clamp": args.clamp, "method": args.method}
    make_points(args.dataset, sweeps, args.seeds, args.epochs, spice)  # every input checked before any work
    results_folder(args.out)
    summary = physical_study(args.dataset, sweeps, args.seeds, args.epochs, spice, args.out, args.workers,
                             progress=not args.quiet)
    print(markdown(summary))
    print(f"{summary['cpu_s_total']} CPU s over the points; {args.out / args.dataset}/summary.md, accuracy.png",
          file=sys.stderr)
    return 0
