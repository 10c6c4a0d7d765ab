"""The `eqprop` console script: one sub-command module each, registered here.

This package imports eqprop, netlist_gen, circuits and experiments; nothing imports it,
so the one-way dependency rule of DESIGN.md section 2 holds.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name of the module in this package that defines register(subparsers)
COMMAND_MODULES = ["train", "data", "reproduce", "netlist", "read-netlist", "spice", "spice-compare"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqprop",
        description="Equilibrium Propagation on Hopfield networks: digital reference (PyTorch) and analog circuits "
                    "(ngspice).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"eqprop_cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # user-facing errors (bad config, missing data cache, ...) get one clear line, no traceback
        print(f"eqprop {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable --out, a full disk: say which, in the system's words
        where = f": {e.filename}" if e.filename else ""
        print(f"eqprop {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
