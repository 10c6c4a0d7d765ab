"""The `eqprop` console script: one sub-command module each, registered here.

This package imports eqprop, netlist_gen, circuits and experiments; nothing imports it,
so the one-way dependency rule of DESIGN.md section 2 holds.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

# name of the module in this package that defines register(subparsers)
COMMAND_MODULES = [
    "train", "data", "reproduce", "netlist", "read-netlist", "spice", "spice-compare", "variability", "device",
    "physical-study",
]


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


def os_error(e: OSError) -> str:
    """'PATH: what went wrong' for an OS error, with the usual causes said plainly."""
    where = e.filename if e.filename is not None else ""
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "exists and is not a folder"}.get(e.errno, (e.strerror or str(e)).lower())
    return f"{where}: {what}" if where else what


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OSError as e:
        if e.errno is None:  # ours (a missing config, a dataset not fetched): the message says it all
            print(f"eqprop {args.command}: error: {e}", file=sys.stderr)
        else:  # an unwritable folder, a full disk: which file, in the system's words
            print(f"eqprop {args.command}: error: {os_error(e)}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as e:
        # user-facing errors (bad config, diverged run, ngspice failure, ...) get one clear line, no traceback
        print(f"eqprop {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"eqprop {args.command}: error: out of memory{': ' + str(e) if str(e) else ''} (a smaller network, "
              f"batch or --train-limit needs less)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
