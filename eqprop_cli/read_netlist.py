"""`eqprop read-netlist`: a (generated or hand-edited) netlist back into a network."""
from __future__ import annotations

import json
import os
from pathlib import Path


def _sizes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--sizes {text!r}: expected layer sizes as integers, e.g. 4,5,3") from None


def _check_out(out: str | None) -> None:
    """Refuse an --out that cannot be written before reading (a large netlist takes seconds)."""
    if not out:
        return
    folder = Path(out).parent
    if not folder.is_dir():
        raise ValueError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {out}: folder {folder} is not writable")


def cmd_read(args) -> int:
    from netlist_gen import read_netlist
    sizes = _sizes(args.sizes)
    _check_out(args.out)
    res = read_netlist(Path(args.netlist), sizes=sizes)  # every problem: a NetlistError (ValueError), file:line:col
    net = res.network
    info = {"file": args.netlist, "sizes": list(net.topology.sizes), "level": res.level, "inputs": res.inputs,
            "connections": net.topology.n_connections, "directed": net.topology.directed, "g0": res.g0,
            "beta": res.beta, "notes": res.notes}
    if getattr(res, "physical", None):  # the physical level's non-idealities as read (inf: absent/ideal)
        info["physical"] = {k: ("inf" if isinstance(v, float) and v == float("inf") else v)
                            for k, v in res.physical.items()} if isinstance(res.physical, dict) else res.physical
    if args.out:
        net.save(args.out)
        info["saved"] = args.out
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(sub) -> None:
    p = sub.add_parser("read-netlist", help="read a netlist back into a network (lark grammar)",
                       description="Parse a SPICE netlist in the project's format (docs/netlist-format.md, "
                                   "docs/netlist-reader.md); errors name file:line:column.")
    p.add_argument("netlist")
    p.add_argument("--sizes", help="layer sizes if the netlist has no eqprop-spice header, e.g. 4,5,3")
    p.add_argument("--out", help="save the network (Network.save format, .npz)")
    p.set_defaults(func=cmd_read)
