"""`eqprop spice-check` and `eqprop spice-train`: ngspice against the Euler reference.

spice-check builds random layered / small-world networks (or loads a saved one), solves
the free and the nudged phase with ngspice (SpiceSolver) and with the converged Euler
reference (gradient nudge, float64), and reports max |rho(u_spice) - s_euler| per
network and phase as JSON. spice-train runs eqprop.trainer with a SpiceSolver.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eqprop.network import Network
from eqprop.solver import EulerSolver
from eqprop.topology import mlff, small_world


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.replace("-", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer sizes like 8,16,16,4, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"need >= 2 positive layer sizes, got {text!r}")
    return sizes


def add_solver_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ngspice solver (circuits.SpiceSolver)")
    g.add_argument("--method", choices=["tran+op", "tran", "op"], default="tran+op",
                   help="tran+op: transient picks the basin, warm .op polishes (default); tran: transient only; "
                        "op: .op warm-started by .nodeset from the start state (cold without one)")
    g.add_argument("--level", choices=["ideal", "crossbar"], default="ideal", help="circuit level (default ideal)")
    g.add_argument("--device-preset", default="ideal", help="crossbar device preset (default ideal: continuous, noiseless)")
    g.add_argument("--clamp", type=float, default=1e3, help="stiff penalty clamp gain (default 1e3; 0 = none)")
    g.add_argument("--t-free", type=float, default=300.0, help="free-phase transient length in tau (default 300)")
    g.add_argument("--t-nudged", type=float, default=None,
                   help="nudged-phase transient length in tau (default: t-free)")
    g.add_argument("--update", choices=["alter", "renetlist"], default="alter",
                   help="how weight changes reach the loaded circuit (default alter)")
    g.add_argument("--workers", type=int, default=1, help="parallel ngspice worker processes (default 1)")
    g.add_argument("--timeout", type=float, default=600.0, help="seconds per ngspice call (default 600)")
    g.add_argument("--force", action="store_true", help="simulate circuits beyond the generator's size limits")
    g.add_argument("--clip-weights", action="store_true",
                   help="crossbar: saturate weights beyond the device's w_max instead of stopping with an error")


def make_solver(args):
    from circuits.spice_solver import SpiceSolver
    return SpiceSolver(method=args.method, level=args.level, device=args.device_preset if args.level == "crossbar" else None,
                       device_seed=getattr(args, "seed", 0) or 0, clamp=args.clamp, t_free=args.t_free,
                       t_nudged=args.t_nudged, update=args.update, workers=args.workers, timeout=args.timeout,
                       force=args.force, clip_weights=args.clip_weights)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "spice-check", help="compare ngspice equilibria with the Euler reference (JSON report)",
        description="Solve the free and nudged phases of random (or saved) networks with ngspice and with the "
                    "converged Euler reference (gradient nudge, float64); report max |rho(u_spice) - s_euler| per "
                    "network and phase. Exit code 1 if the worst difference exceeds --tol.")
    n = p.add_argument_group("networks")
    n.add_argument("--network", type=Path, help="a saved network (Network.save) instead of random ones")
    n.add_argument("--sizes", type=_sizes, nargs="+", default=[(6, 12, 12, 4), (8, 16, 16, 16, 4)],
                   help="one or more layer-size lists, cycled over the networks (default 6,12,12,4 8,16,16,16,4)")
    n.add_argument("--topology", choices=["mlff", "sw", "both"], default="both",
                   help="layered, small-world or alternating (default both)")
    n.add_argument("--p", type=float, default=0.2, help="small-world replacement probability (default 0.2)")
    n.add_argument("--count", type=int, default=4, help="number of random networks (default 4)")
    n.add_argument("--examples", type=int, default=2, help="inputs per network (default 2)")
    n.add_argument("--seed", type=int, default=0, help="seed of network k is seed+k (default 0)")
    n.add_argument("--weight-scale", type=float, default=1.0, help="multiply the initial weights (default 1)")
    c = p.add_argument_group("comparison")
    c.add_argument("--beta", type=float, default=0.5, help="nudge strength of the nudged phase (default 0.5)")
    c.add_argument("--euler-tol", type=float, default=1e-12, help="Euler stops once max |ds| < this (default 1e-12)")
    c.add_argument("--euler-max-steps", type=int, default=500_000, help="Euler step limit (default 500000)")
    c.add_argument("--euler-eps", type=float, default=0.5, help="Euler step of the reference (default 0.5)")
    c.add_argument("--fine-eps", type=float, default=0.05,
                   help="on a mismatch, compare again with Euler at this step, closer to the continuous dynamics "
                        "the circuit follows (default 0.05; 0 = off)")
    c.add_argument("--tol", type=float, default=1e-6, help="pass threshold on max |rho diff| (default 1e-6)")
    add_solver_flags(p)
    p.add_argument("--out", "-o", type=Path, help="write the JSON report here (it is printed too)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    t = subparsers.add_parser(
        "spice-train", help="train with EqProp, every equilibrium computed by ngspice",
        description="The EqProp trainer (eqprop.trainer) with circuits.SpiceSolver instead of the Euler reference: "
                    "every free and nudged equilibrium is an ngspice solve of the network's circuit; weight "
                    "updates are written into the loaded circuit with alter. Small datasets only (iris, xor...).")
    from .train import add_config_flags
    add_config_flags(t)
    add_solver_flags(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def _networks(args):
    if args.network is not None:
        yield 0, Network.load(args.network).to(dtype=torch.float64), "saved"
        return
    for k in range(args.count):
        sizes = args.sizes[k % len(args.sizes)]
        kind = args.topology if args.topology != "both" else ("mlff", "sw")[k % 2]
        topo = mlff(sizes) if kind == "mlff" else small_world(sizes, args.p, seed=args.seed + k)
        net = Network.init(topo, seed=args.seed + k, dtype=torch.float64)
        if args.weight_scale != 1.0:
            net = Network(topo, net.W * args.weight_scale, net.b)
        yield k, net, kind


def fixed_point_residual(net: Network, state, beta: float = 0.0, target=None) -> float:
    """max |s - clip(W s + b + nudge)| over non-input neurons: is the state a fixed point at all?"""
    from eqprop.energy import drive
    topo = net.topology
    h = drive(net, state)
    if beta != 0:
        out = topo.output_slice
        h[:, out] = h[:, out] + 2 * beta * (target - state[:, out])
    return float((state[:, topo.n_in:] - h[:, topo.n_in:].clamp(0, 1)).abs().max())


def _reference(euler: EulerSolver, net, x, target, beta):
    free = euler.relax(net, x)
    ok = euler.last_steps < euler.free_steps
    nudged = euler.relax(net, x, free, beta=beta, target=target)
    return free, nudged, ok and euler.last_steps < euler.nudged_steps


def check_network(net: Network, solver, x, target, beta: float, euler: EulerSolver,
                  fine: EulerSolver | None = None, tol: float = 1e-6) -> dict:
    """Max |rho diff| between ngspice and the converged Euler reference, free and nudged.

    The energy is non-convex: Euler at eps 0.5 can step into another basin than the
    continuous dynamics the circuit follows. When the difference exceeds ``tol`` and a
    ``fine`` (small-eps) Euler is given, the comparison is repeated against it; the row
    then says which reference matched. ``residual`` checks the ngspice states are fixed
    points of the reference equations, independently of any Euler run.
    """
    t0 = time.perf_counter()
    ref_free, ref_nudged, conv = _reference(euler, net, x, target, beta)
    t1 = time.perf_counter()
    free = solver.relax(net, x)
    nudged = solver.relax(net, x, free, beta=beta, target=target)
    t2 = time.perf_counter()
    row = {"free": float((free - ref_free).abs().max()), "nudged": float((nudged - ref_nudged).abs().max()),
           "residual": max(fixed_point_residual(net, free), fixed_point_residual(net, nudged, beta, target)),
           "reference": f"euler eps {euler.eps}", "euler_converged": conv}
    if fine is not None and max(row["free"], row["nudged"]) > tol:
        f_free, f_nudged, f_conv = _reference(fine, net, x, target, beta)
        d = {"free": float((free - f_free).abs().max()), "nudged": float((nudged - f_nudged).abs().max())}
        row[f"eps{euler.eps}"] = {"free": row["free"], "nudged": row["nudged"]}
        if max(d.values()) < max(row["free"], row["nudged"]):
            row.update(d, reference=f"euler eps {fine.eps}", coarse_euler_elsewhere=True, euler_converged=f_conv)
    row.update(euler_seconds=round(t1 - t0 + time.perf_counter() - t2, 4), spice_seconds=round(t2 - t1, 4))
    return row


def cmd_check(args) -> int:
    from circuits.errors import SimulationError
    euler = EulerSolver(eps=args.euler_eps, free_steps=args.euler_max_steps, nudged_steps=args.euler_max_steps,
                        nudge_form="gradient", tol=args.euler_tol)
    fine = None if not args.fine_eps else EulerSolver(
        eps=args.fine_eps, free_steps=20 * args.euler_max_steps, nudged_steps=20 * args.euler_max_steps,
        nudge_form="gradient", tol=args.euler_tol)
    rows, t_start = [], time.perf_counter()
    total = 1 if args.network is not None else args.count
    with make_solver(args) as solver:
        bar = tqdm(_networks(args), total=total, desc="spice-check", unit="net", disable=args.quiet)
        for k, net, kind in bar:
            rng = np.random.default_rng(args.seed + 10_000 + k)
            topo = net.topology
            x = torch.tensor(rng.random((args.examples, topo.n_in)))
            target = torch.tensor(rng.random((args.examples, topo.n_out)))
            row = {"index": k, "sizes": list(topo.sizes), "topology": kind, "seed": args.seed + k,
                   "actual_p": topo.info.get("actual_p", 0.0), "connections": topo.n_connections}
            try:
                row.update(check_network(net, solver, x, target, args.beta, euler, fine, args.tol))
            except SimulationError as e:
                row.update({"error": str(e).splitlines()[0], "command": e.command,
                            "log_tail": (e.log or "").splitlines()[-20:], "free": None, "nudged": None})
            rows.append(row)
            done = [r for r in rows if r["free"] is not None]
            if done:
                bar.set_postfix(worst=f"{max(max(r['free'], r['nudged']) for r in done):.1e}")
    ok = [r for r in rows if r["free"] is not None]
    worst = {ph: max((r[ph] for r in ok), default=None) for ph in ("free", "nudged")}
    overall = max([v for v in worst.values() if v is not None], default=None)
    worst_net = max(ok, key=lambda r: max(r["free"], r["nudged"]))["index"] if ok else None
    passed = bool(ok) and len(ok) == len(rows) and overall <= args.tol and all(r["residual"] <= args.tol for r in ok)
    report = {"command": " ".join(["eqprop"] + sys.argv[1:]),
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                         f"python {platform.python_version()}",
              "method": args.method, "level": args.level, "clamp": args.clamp, "beta": args.beta,
              "tol": args.tol, "networks": rows,
              "worst": {**worst, "overall": overall, "network": worst_net,
                        "residual": max((r["residual"] for r in ok), default=None)},
              "other_fixed_point_at_euler_eps": [r["index"] for r in ok if r.get("coarse_euler_elsewhere")],
              "failed": [r["index"] for r in rows if r["free"] is None],
              "passed": passed, "seconds": round(time.perf_counter() - t_start, 2)}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0 if passed else 1


SPICE_TRAIN_DEFAULTS = dict(dataset="iris", hidden=[8], epochs=3, lr=0.05, batch_size=10, nudge_form="gradient",
                            beta=0.5, dtype="float64")


def cmd_train(args) -> int:
    from eqprop.trainer import train
    from .train import config_from_args
    cfg = config_from_args(args, **SPICE_TRAIN_DEFAULTS)
    if args.out is None and args.config is None:
        cfg.out = f"results/spice-train/{cfg.dataset}-{cfg.topology}-s{cfg.seed}"
    if cfg.nudge_form != "gradient":
        print("note: the circuit realises the gradient nudge form; --nudge-form only affects Euler runs",
              file=sys.stderr)
    print(f"spice-train {cfg.dataset} hidden={cfg.hidden} {cfg.topology}, method {args.method}, "
          f"level {args.level} -> {cfg.out}", file=sys.stderr)
    with make_solver(args) as solver:
        m = train(cfg, solver=solver, progress=not args.quiet)
    last = m["epochs"][-1] if m["epochs"] else {}
    print(json.dumps({"out": cfg.out, "last_epoch": last, "solver": m["solver"]}, indent=2))
    return 0
