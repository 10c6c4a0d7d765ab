"""`eqprop spice-check` and `eqprop spice-train`: argument parsing and printing only.

The work is in experiments.spice_check and experiments.spice_train.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from circuits.settle import ON_UNSETTLED

from .checks import (
    finite_float,
    nonneg_float,
    nonneg_int,
    nonzero_float,
    output_file,
    positive_float,
    positive_int,
    probability,
)

# flag dest -> SpiceConfig field (--device-preset: --device is the torch device everywhere)
SPICE_FLAGS = {"method": "method", "level": "level", "device_preset": "device", "device_seed": "device_seed",
               "clamp": "clamp", "t_free": "t_free", "t_nudged": "t_nudged", "nudged_phase": "nudged_phase",
               "free_integration": "free_integration", "rest_tol": "rest_tol", "tstep": "tstep",
               "max_step": "max_step", "timed_steps": "timed_steps", "settle_trtol": "settle_trtol",
               "timed_trtol": "timed_trtol",
               "on_unsettled": "on_unsettled",
               "update": "update",
               "workers": "workers", "timeout": "timeout", "force": "force", "clip_weights": "clip_weights",
               "physical": "physical", "g0": "g0", "c": "c", "measure": "measure", "settle_v": "settle_v"}


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.replace("-", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer sizes like 8,16,16,4, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"need >= 2 positive layer sizes, got {text!r}")
    return sizes


def add_solver_flags(p: argparse.ArgumentParser) -> None:
    """SpiceConfig flags; unset ones keep the TOML [spice] table's or SpiceConfig's default."""
    g = p.add_argument_group("ngspice solver (circuits.SpiceConfig; override the TOML [spice] table)")
    g.add_argument("--method", choices=["tran+op", "tran", "op"],
                   help="tran+op: transient picks the basin, warm .op polishes (default); tran: transient only; "
                        "op: .op warm-started by .nodeset from the start state (cold without one)")
    g.add_argument("--level", choices=["ideal", "crossbar", "physical"],
                   help="circuit level (default ideal; physical: docs/physical.md)")
    g.add_argument("--physical", help="physical level: a preset of non-idealities (spice_models/physical_<name>.toml; "
                                      "default off = all ideal); its g0 and c apply unless --g0/--c are given")
    g.add_argument("--physical-set", action="append", type=_setting, metavar="FIELD=VALUE",
                   help="override a non-ideality, e.g. --physical-set tia_gain=1e4 --physical-set activation=diode "
                        "(repeatable; fields and units of circuits.physical.PhysicalModel)")
    g.add_argument("--g0", type=float, help="unit conductance, S (default 1: normalised units)")
    g.add_argument("--c", type=float, help="neuron node capacitance, F (default 1: normalised units)")
    g.add_argument("--measure", action="store_true", default=None,
                   help="record settling time (s) and energy (J) per example and phase from each transient")
    g.add_argument("--settle-v", type=float, help="settling tolerance of --measure, V (default 1e-3)")
    g.add_argument("--device-preset", help="crossbar device preset (default ideal: continuous, noiseless)")
    g.add_argument("--device-set", action="append", type=_setting, metavar="FIELD=VALUE",
                   help="override a field of the device preset, e.g. --device-set bits=4 --device-set asymmetry=0.4 "
                        "(repeatable; fields of circuits.devices.DeviceModel)")
    g.add_argument("--device-seed", type=int, help="seed of the device instances (trial t: seed and t; default 0)")
    g.add_argument("--clamp", type=float, help="stiff penalty clamp gain (default 1e3; 0 = none)")
    g.add_argument("--t-free", type=float, help="free-phase transient length in tau (default 300)")
    g.add_argument("--tstep", type=float,
                   help="transient print step in tau (default 1); the maximum step is min(tstep, transient/50) "
                        "unless --max-step / --timed-steps say otherwise")
    g.add_argument("--max-step", type=float,
                   help="the settled transients' maximum step in tau (default: ngspice's min(tstep, transient/50)); "
                        "with gear, larger lets the steps grow once the state is at rest")
    g.add_argument("--settle-trtol", type=float,
                   help="ngspice's trtol for the settled transients (default 7, ngspice's; larger lets gear's steps "
                        "grow at rest; the timed nudge has --timed-trtol)")
    g.add_argument("--timed-steps", type=int,
                   help="a timed nudge's maximum step is t-nudged / this (and at most tstep; default 50, "
                        "ngspice's)")
    g.add_argument("--timed-trtol", type=float,
                   help="ngspice's trtol for the timed nudge (default 7, ngspice's; its steps are set by the "
                        "truncation error more than by --timed-steps)")
    g.add_argument("--t-nudged", type=float, help="nudged-phase transient length in tau (default: t-free)")
    g.add_argument("--nudged-phase", choices=["settled", "timed"],
                   help="settled: the nudged equilibrium (default); timed: the nudge held for --t-nudged tau from "
                        "the free state and read there (the Euler reference's nudged steps x eps)")
    g.add_argument("--free-integration", choices=["trap", "gear"],
                   help="ngspice's integration method for the settled transients (default trap; gear damps the "
                        "stiff clamp's ringing at a large print step, docs/spice.md); a timed nudge keeps trap")
    g.add_argument("--rest-tol", type=float,
                   help="tran+op: no .op polish where the settled transient's end moves slower than this, V/tau "
                        "(default 1e-10: at rest, its own Newton solved the fixed point; 0: always polish)")
    g.add_argument("--on-unsettled", choices=list(ON_UNSETTLED),
                   help="a transient still moving after its extensions: stop with an error (default raise; "
                        "spice-train's iris default polish), go on and count it (warn), or keep the .op polish's "
                        "fixed point where it is the limit the slowing transient extrapolates to (polish, "
                        "tran+op; else the error)")
    g.add_argument("--update", choices=["alter", "renetlist"], help="how weight changes reach the loaded circuit")
    g.add_argument("--workers", type=int, help="parallel ngspice worker processes (default 1)")
    g.add_argument("--timeout", type=float, help="seconds per ngspice call (default 600)")
    g.add_argument("--force", action="store_true", default=None,
                   help="simulate circuits beyond the generator's size limits")
    g.add_argument("--clip-weights", action="store_true", default=None,
                   help="crossbar: saturate weights beyond the device's w_max instead of stopping with an error")


def _setting(text: str) -> tuple[str, object]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    import tomllib
    try:  # a TOML value: 4, 0.4, true, "name"; a bare word is a string
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def spice_config(args, toml: dict | None = None):
    from circuits.devices import load_device
    from circuits.spice_config import SpiceConfig
    flags = {field: getattr(args, dest) for dest, field in SPICE_FLAGS.items() if getattr(args, dest, None) is not None}
    settings = {**(toml or {}), **flags}
    if getattr(args, "device_set", None):
        device = settings.get("device", "ideal")
        if not isinstance(device, str):
            raise ValueError("--device-set needs a preset name or a device .toml file as the device")
        settings["device"] = load_device(device, **dict(args.device_set))
    _physical_settings(args, settings)
    return SpiceConfig(**settings)


def _physical_settings(args, settings: dict) -> None:
    """--physical and --physical-set into settings; a preset's g0/c unless given explicitly."""
    from circuits.physical import load_physical, preset_units
    name = settings.get("physical", "off")
    if isinstance(name, str):
        for k, v in preset_units(name).items():
            settings.setdefault(k, v)
        if name != "off":
            settings.setdefault("level", "physical")
    if getattr(args, "physical_set", None):
        if not isinstance(name, str):
            raise ValueError("--physical-set needs a preset name as the physical model")
        settings["physical"] = load_physical(name, **dict(args.physical_set))
        settings.setdefault("level", "physical")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "spice-check", help="compare ngspice equilibria with the Euler reference",
        description="Solve the free and nudged phases of random (or saved) networks with ngspice and with the "
                    "converged Euler reference (gradient nudge, float64); report max |rho(u_spice) - s_euler| per "
                    "network and phase. Exit code 1 if the worst difference exceeds --tol.")
    n = p.add_argument_group("networks")
    n.add_argument("--network", type=Path, help="a saved network (Network.save) instead of random ones")
    n.add_argument("--sizes", type=_sizes, nargs="+",
                   help="one or more layer-size lists, cycled over the networks (default 6,12,12,4 8,16,16,16,4; "
                        "--directed: 2,5,2 4,8,3, the hidden layers summed into one, plus a bias neuron)")
    n.add_argument("--directed", action="store_true",
                   help="random directed nets with DEEP's dynamics (complete_directed with a bias neuron; every "
                        "second one with a random mask of density 0.5; weights N(0, (0.3 * weight-scale)^2)), "
                        "solved by the DEEP circuit (circuits.deep_spice) against eqprop.deep.DeepSolver run to "
                        "convergence at step --deep-dt; --network: a saved directed network, the same way")
    n.add_argument("--topology", choices=["mlff", "sw", "both"], default="both",
                   help="layered, small-world or alternating (default both)")
    n.add_argument("--p", type=probability, default=0.2, help="small-world replacement probability (default 0.2)")
    n.add_argument("--count", type=positive_int, default=4, help="number of random networks (default 4)")
    n.add_argument("--examples", type=positive_int, default=2, help="inputs per network (default 2)")
    n.add_argument("--seed", type=nonneg_int, default=0, help="seed of network k is seed+k (default 0)")
    n.add_argument("--weight-scale", type=finite_float, default=1.0, help="multiply the initial weights (default 1)")
    c = p.add_argument_group("comparison")
    c.add_argument("--beta", type=nonzero_float, default=0.5, help="nudge strength of the nudged phase (default 0.5)")
    c.add_argument("--euler-tol", type=positive_float, default=1e-12,
                   help="Euler stops once max |ds| < this (default 1e-12)")
    c.add_argument("--euler-max-steps", type=positive_int, default=500_000, help="Euler step limit (default 500000)")
    c.add_argument("--euler-eps", type=positive_float, default=0.5, help="Euler step of the reference (default 0.5)")
    c.add_argument("--fine-eps", type=nonneg_float, default=0.05,
                   help="on a mismatch, compare again with Euler at this step, closer to the continuous dynamics "
                        "the circuit follows (default 0.05; 0 = off)")
    c.add_argument("--tol", type=positive_float, default=1e-6, help="pass threshold on max |rho diff| (default 1e-6)")
    c.add_argument("--deep-dt", type=positive_float, default=0.01,
                   help="--directed: Euler step of the DeepSolver reference (default 0.01; --fine-eps below it is "
                        "the fallback on a mismatch)")
    c.add_argument("--start", choices=["rest", "euler"], default="rest",
                   help="rest: the circuit's free phase from u = 0 and its nudged phase from the free end "
                        "(default); euler: each phase from the Euler reference's equilibrium of that phase, with "
                        "--method op Newton on the circuit's equations from there: checks Euler's fixed point is "
                        "the circuit's where a transient from rest is out of reach (not that the dynamics reach "
                        "it)")
    add_solver_flags(p)
    p.add_argument("--out", "-o", type=Path, help="write the JSON report here")
    p.add_argument("--json", action="store_true", help="print the whole JSON report instead of a summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    t = subparsers.add_parser(
        "spice-train", help="train with EqProp, every equilibrium computed by ngspice",
        description="The one EqProp Trainer with circuits.SpiceSolver instead of the Euler reference: every free "
                    "and nudged equilibrium is an ngspice solve of the network's circuit; weight updates pass "
                    "through the device model (crossbar level) and are altered into the loaded circuit. "
                    "--seeds runs several trials (one circuit and device instance each). Small datasets only.")
    from .train import add_config_flags
    add_config_flags(t, euler=False)
    add_solver_flags(t)
    t.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    q = subparsers.add_parser(
        "physical-check", help="physical level: equilibrium error vs the ideal level and the surrogate",
        description="For each non-ideality of the physical level (one at a time) and growing values, solve random "
                    "networks' free and nudged equilibria with ngspice and report max |activation error| (V) against "
                    "the ideal level and the digital surrogate (circuits.physical_surrogate); writes report.json, "
                    "table.md and errors.png to --out. docs/physical.md.")
    q.add_argument("--sizes", type=_sizes, nargs="+", default=[(4, 8, 3), (6, 10, 10, 3)],
                   help="layer sizes, cycled over the networks (default 4,8,3 6,10,10,3)")
    q.add_argument("--count", type=positive_int, default=2, help="random networks (default 2)")
    q.add_argument("--examples", type=positive_int, default=2, help="inputs per network (default 2)")
    q.add_argument("--seed", type=nonneg_int, default=0, help="seed of network k is seed+k (default 0)")
    q.add_argument("--beta", type=nonzero_float, default=0.5, help="nudge strength (default 0.5)")
    q.add_argument("--fields", nargs="+", help="sweeps to run (default all: diode_is diode_n tia_gain tia_offset "
                                                "tia_swing r_wire read_v0 nudge)")
    q.add_argument("--g0", type=positive_float, default=1e-5, help="unit conductance, S (default 1e-5)")
    q.add_argument("--c", type=positive_float, default=1e-13, help="node capacitance, F (default 1e-13)")
    q.add_argument("--clamp", type=nonneg_float, default=0.0, help="stiff behavioural clamp gain (default 0: none)")
    q.add_argument("--measure", action="store_true", help="also settling time and energy per example")
    q.add_argument("--out", "-o", type=Path, default=Path("results/physical_check"),
                   help="output folder (default results/physical_check)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_physical_check)


def cmd_physical_check(args) -> int:
    from experiments.physical_check import physical_check, table, write

    from .checks import results_folder
    results_folder(args.out)  # checked before any work
    spice = {"g0": args.g0, "c": args.c, "clamp": args.clamp, "measure": args.measure}
    report = physical_check(args.sizes, args.count, args.examples, args.seed, args.beta, args.fields, spice=spice,
                            progress=not args.quiet)
    report = {"command": " ".join(["eqprop"] + sys.argv[1:]), **report}
    paths = write(report, args.out)
    print(table(report))
    print(f"{report['seconds']} s; " + ", ".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def cmd_check(args) -> int:
    import torch

    from circuits.spice_solver import SpiceSolver
    from eqprop.network import Network
    from eqprop.run_files import write_json
    from experiments.spice_check import random_directed_networks, random_networks, spice_check, summary_lines

    cfg = spice_config(args)
    if args.out is not None:
        output_file(args.out)  # checked before any work: a bad --out must not lose the report at the end
    if args.network is not None:
        nets, total = [(0, Network.load(args.network).to(dtype=torch.float64), "saved")], 1
    elif args.directed:
        nets, total = random_directed_networks(args.sizes or [(2, 5, 2), (4, 8, 3)], args.count, args.seed,
                                               0.3 * args.weight_scale), args.count
    else:
        nets, total = random_networks(args.sizes or [(6, 12, 12, 4), (8, 16, 16, 16, 4)], args.topology, args.p,
                                      args.count, args.seed, args.weight_scale), args.count
    if args.directed:
        from circuits.deep_spice import DeepSpiceSolver  # SpiceSolver with DEEP's neuron circuit
    with (DeepSpiceSolver(cfg) if args.directed else SpiceSolver(cfg)) as solver:
        report = spice_check(nets, solver, total=total, examples=args.examples, beta=args.beta, seed=args.seed,
                             euler_eps=args.euler_eps, euler_tol=args.euler_tol,
                             euler_max_steps=args.euler_max_steps, fine_eps=args.fine_eps, tol=args.tol,
                             progress=not args.quiet, reference="deep" if args.directed else "euler",
                             deep_dt=args.deep_dt, start=args.start)
    report = {"command": " ".join(["eqprop"] + sys.argv[1:]), **report}
    if args.out:
        write_json(args.out, report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(summary_lines(report)) + (f"\nreport: {args.out}" if args.out else ""))
    return 0 if report["passed"] else 1


def cmd_train(args) -> int:
    from circuits.spice_config import SpiceConfig
    from eqprop.datasets import load_dataset
    from experiments.spice_train import SPICE_TRAIN_DEFAULTS, spice_train

    from .train import check_outs, configs_from_args, print_runs
    cfgs, settings, ck = configs_from_args(args, "spice-train", SPICE_TRAIN_DEFAULTS, {"spice": SpiceConfig})
    spice = spice_config(args, settings["spice"])
    check_outs(cfgs, ck)
    c0 = cfgs[0]
    print(f"spice-train {c0.dataset} hidden={list(c0.hidden)} {c0.topology}, {len(cfgs)} trial(s), method "
          f"{spice.method}, level {spice.level} -> {ck.parent if ck else c0.out}", file=sys.stderr)
    print_runs(spice_train(cfgs, spice, load_dataset(c0.dataset), checkpoint=ck, resume=args.resume,
                           progress=not args.quiet))
    return 0
