"""`eqprop netlist`: write a network's circuit (.cir) and what it was made from (.npz).

The .npz holds W, b, mask, sizes, x (and target/beta), the neuron order and each
neuron's node names, so a reader or a runner can be checked against the netlist; at
crossbar level also the device conductances Gp, Gm and g_unit.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from circuits.devices import list_presets, load_preset, program_network
from eqprop.network import Network
from eqprop.run_files import write_atomic
from eqprop.topology import mlff, small_world
from netlist_gen import DEFAULT_OPTIONS, MAX_DENSE_WIDTH, MAX_ELEMENTS, NetlistTooLarge, build_circuit, check_size
from netlist_gen.generator import KLU_MAX_DENSE_WIDTH, KLU_MAX_ELEMENTS

from .checks import nonneg_int, nonzero_float, output_file, positive_float, probability


def _floats(text: str, what: str) -> list[float]:
    """Comma-separated values in [0, 1] (inputs and targets: the circuit holds rho(x) = clip(x, 0, 1))."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not all(0.0 <= v <= 1.0 for v in vals):  # also catches nan
        raise ValueError(f"{what}: values must lie in [0, 1], got {text!r}")
    return vals


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 4,5,3, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"need >= 2 positive layer sizes, got {text!r}")
    return sizes


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "netlist", help="write the SPICE netlist of a network (docs/netlist-format.md)",
        description="Write a network's circuit as a SPICE netlist (.cir) plus an .npz with W, b, x, the neuron "
                    f"order and node names. Refuses circuits beyond what the installed ngspice can solve in practice "
                    f"(Sparse: coupled non-input layers wider than {MAX_DENSE_WIDTH} neurons, or more than "
                    f"{MAX_ELEMENTS} elements; KLU: {KLU_MAX_DENSE_WIDTH} and {KLU_MAX_ELEMENTS}) unless --force.")
    src = p.add_argument_group("network (random unless --network)")
    src.add_argument("--network", type=Path, help="a saved network (Network.save: path.npz + path.topology.npz)")
    src.add_argument("--sizes", type=_sizes, help="layer sizes, input first (default 4,5,3)")
    src.add_argument("--topology", choices=["mlff", "sw"], help="layered or small-world (default mlff)")
    src.add_argument("--p", type=probability, default=0.1,
                     help="small-world replacement probability (default 0.1)")
    src.add_argument("--seed", type=nonneg_int, default=0,
                     help="seed of topology, weights, inputs and devices (default 0)")
    c = p.add_argument_group("circuit")
    c.add_argument("--level", choices=["ideal", "crossbar"], default="ideal", help="abstraction level (default ideal)")
    c.add_argument("--device-preset", default="ideal",
                   help=f"device preset of --level crossbar (not a torch device), one of {', '.join(list_presets())}")
    c.add_argument("--w-max", type=positive_float, default=None,
                   help="weight mapped to the full conductance range (default: max |W| of the network)")
    c.add_argument("--unfolded", action="store_true", help="inputs as voltage sources (default: folded into currents)")
    c.add_argument("--x", default=None, help="input values, comma-separated (default: seeded uniform [0, 1])")
    c.add_argument("--phase", choices=["free", "nudged"], default="free", help="free (default) or nudged phase")
    c.add_argument("--beta", type=nonzero_float, default=0.5, help="nudge strength for --phase nudged (default 0.5)")
    c.add_argument("--target", default=None, help="target outputs, comma-separated (default: one-hot class 0)")
    c.add_argument("--clamp", type=float, default=0.0, help="stiff penalty clamp gain, e.g. 1e3 (default 0: none)")
    c.add_argument("--g0", type=float, default=1.0, help="unit conductance, S (default 1.0)")
    c.add_argument("--c", type=float, default=1.0, help="neuron capacitance, F (default 1.0)")
    p.add_argument("--out", "-o", type=Path, default=Path("netlist.cir"), help="output .cir (the .npz goes beside it)")
    p.add_argument("--force", action="store_true", help="write circuits beyond the size limits anyway")
    p.add_argument("--matrix-solver", choices=["auto", "klu", "sparse"], default="auto",
                   help="ngspice's linear solver the netlist is for: klu writes .options klu=1 and takes KLU's size "
                        "limits; auto (default) takes klu when the installed ngspice honours it, else sparse")
    p.set_defaults(func=run)


def _network(args) -> Network:
    if args.network is not None:
        return Network.load(args.network).to(dtype=torch.float64)
    topo = mlff(args.sizes) if args.topology == "mlff" else small_world(args.sizes, args.p, args.seed)
    # refuse before drawing weights: a too-large net should fail fast
    check_size(topo, not args.unfolded, args.level, args.clamp > 0, args.force, _solver(args))
    return Network.init(topo, seed=args.seed, dtype=torch.float64)


def _solver(args) -> str:
    """The matrix solver the netlist is written for; auto asks the installed ngspice (its own output)."""
    if args.matrix_solver == "auto":
        from circuits.ngspice_runner import klu_available
        args.matrix_solver = "klu" if klu_available() else "sparse"
    return args.matrix_solver


def run(args) -> int:
    output_file(args.out)  # before any work
    if args.network is not None and (args.sizes is not None or args.topology is not None):
        raise ValueError("--network gives the network: leave out --sizes and --topology")
    args.sizes, args.topology = args.sizes or (4, 5, 3), args.topology or "mlff"
    try:
        net = _network(args)
    except NetlistTooLarge as e:
        print(f"eqprop netlist: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"eqprop netlist: error: cannot build the network: {e}", file=sys.stderr)
        return 2
    topo = net.topology
    rng = np.random.default_rng(args.seed)
    beta, target, arrays = 0.0, None, None
    try:
        x = rng.uniform(0.0, 1.0, topo.n_in) if args.x is None else np.array(_floats(args.x, "--x"))
        if args.phase == "nudged":
            beta = args.beta
            target = np.eye(topo.n_out)[0] if args.target is None else np.array(_floats(args.target, "--target"))
        if args.level == "crossbar":
            device = load_preset(args.device_preset)
            w_max = args.w_max or float(net.W.abs().max()) or 1.0
            device = dataclasses.replace(device, w_max=w_max)
            arrays = program_network(net, device, rng=args.seed)
        circuit = build_circuit(net, x, beta=beta, target=target, level=args.level, fold_inputs=not args.unfolded,
                                g0=args.g0, c=args.c, clamp=args.clamp, device_arrays=arrays, force=args.force,
                                options={**DEFAULT_OPTIONS, **({"klu": 1} if _solver(args) == "klu" else {})})
    except ValueError as e:  # NetlistTooLarge included: its message names the limit
        print(f"eqprop netlist: error: {e}", file=sys.stderr)
        return 2
    out = args.out
    write_atomic(out, circuit.to_spice())
    n = topo.n
    extra = {} if arrays is None else {"Gp": arrays.Gp, "Gm": arrays.Gm, "g_unit": arrays.g_unit}
    np.savez_compressed(
        out.with_suffix(".npz"), W=net.W.numpy(), b=net.b.numpy(), mask=topo.mask, sizes=np.array(topo.sizes),
        directed=topo.directed, x=x, beta=beta, target=np.zeros(0) if target is None else target,
        neurons=np.arange(n), u_nodes=np.array([circuit.u_node.get(i, "") for i in range(n)]),
        r_nodes=np.array([circuit.r_node.get(i, "") for i in range(n)]), level=args.level,
        inputs="unfolded" if args.unfolded else "folded", **extra)
    print(f"wrote {out} ({len(circuit.elements)} elements, {circuit.header['sizes']}, {args.level}, "
          f"{circuit.header['inputs']} inputs, {args.phase}) and {out.with_suffix('.npz')}")
    return 0
