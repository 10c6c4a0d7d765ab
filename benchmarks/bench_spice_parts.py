"""What one tran+op equilibrium costs inside the ngspice worker, part by part, and what tstep changes.

    .venv/bin/python benchmarks/bench_spice_parts.py                 # iris-size 4-10-3
    .venv/bin/python benchmarks/bench_spice_parts.py --sizes 20,50,50,10 --n 5

Worker CPU seconds (``NgspiceSession.cpu_seconds``) per operation, each repeated --n times in
one request: the 300 tau transient at tstep 1 and 10 (with its time points), the same stored at
tstep only (``option interp``: ngspice 46 reads /proc/meminfo at every stored point otherwise), the
``.nodeset`` reload + op of the polish "op", a plain load (the parse), a cold op (the polish
"cold": no reload). Then SpiceSolver's tran+op equilibria (free from u = 0 and nudged, beta 0.5)
at tstep 10 against tstep 1, and with the cold polish against the .nodeset polish: max |u diff|.
Not a test: prints, asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.ngspice_runner import NgspiceSession  # noqa: E402
from circuits.spice_batching import options_text  # noqa: E402
from circuits.spice_config import TRAN_OPTIONS, SpiceConfig  # noqa: E402
from circuits.spice_solver import SpiceSolver  # noqa: E402
from eqprop.network import Network  # noqa: E402
from eqprop.topology import mlff  # noqa: E402
from netlist_gen import build_circuit, cap_ic_key  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,10,3")
    ap.add_argument("--n", type=int, default=40, help="repeats per operation (default 40)")
    ap.add_argument("--examples", type=int, default=20, help="examples of the tstep comparison (default 20)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = tuple(int(v) for v in args.sizes.split(","))
    net = Network.init(mlff(sizes), seed=1, dtype=torch.float64)
    cfg = SpiceConfig()
    circ = build_circuit(net, None, clamp=cfg.clamp, options=cfg.options)
    nodes = [circ.u_node[i] for i in circ.neurons]
    n = args.n
    print(f"{'-'.join(map(str, sizes))}: worker CPU ms per operation ({n} repeats in one request)")
    with NgspiceSession() as s:
        s.load(circ.to_spice())
        s.command("option " + options_text(TRAN_OPTIONS["tran+op"]))

        def ms(ops) -> float:
            c = s.cpu_seconds
            s.call(ops * n)
            return (s.cpu_seconds - c) / n * 1e3

        ics = [(cap_ic_key(i), 0.3) for i in circ.neurons]
        for tstep in (1.0, 10.0):
            t = ms([("alter", ics), ("cmd", "destroy all"), ("analysis", f"tran {tstep} 300 uic")])
            print(f"  tran 300 tau, tstep {tstep:>4g}: {t:7.2f} ms ({len(s.vector('time'))} time points)")
        ns = dict(zip(nodes, s.voltages(nodes).tolist()))
        with NgspiceSession() as s2:  # interp stays on in a worker once set: its own worker
            s2.load(circ.to_spice())
            s2.command("option interp " + options_text(TRAN_OPTIONS["tran+op"]))
            c = s2.cpu_seconds
            s2.call([("alter", ics), ("cmd", "destroy all"), ("analysis", "tran 10 300 uic")] * n)
            print(f"  tran 300 tau, tstep   10, interp: {(s2.cpu_seconds - c) / n * 1e3:7.2f} ms "
                  f"({len(s2.vector('time'))} stored points)")
        s.command("option " + options_text(cfg.options))
        print(f"  .nodeset reload + op (polish): {ms([('op', ns, nodes)]):7.2f} ms")
        print(f"  plain load (parse):            {ms([('circ', circ.to_spice())]):7.2f} ms")
        print(f"  cold op:                       {ms([('op', None, nodes)]):7.2f} ms")
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((args.examples, sizes[0])))
    y = torch.eye(sizes[-1], dtype=torch.float64)[torch.arange(args.examples) % sizes[-1]]
    out = {}
    for key in ((1.0, "op"), (10.0, "op"), (10.0, "cold")):
        with SpiceSolver(tstep=key[0], polish=key[1], matrix_solver="sparse") as sol:
            free = sol.relax(net, x)
            out[key] = (free, sol.relax(net, x, free, 0.5, y), sol.last_stats["cold"])

    def diff(a, b, i):
        return float((out[a][i] - out[b][i]).abs().max())
    print(f"tran+op, {args.examples} examples: tstep 10 vs 1 (.nodeset polish), max |u diff| free "
          f"{diff((10.0, 'op'), (1.0, 'op'), 0):.1e}, nudged {diff((10.0, 'op'), (1.0, 'op'), 1):.1e}; cold vs "
          f".nodeset polish (tstep 10) free {diff((10.0, 'cold'), (10.0, 'op'), 0):.1e}, nudged "
          f"{diff((10.0, 'cold'), (10.0, 'op'), 1):.1e} ({out[(10.0, 'cold')][2]} of {args.examples} nudged "
          f"examples kept the cold .op)")


if __name__ == "__main__":
    main()
