"""Line 1 of an eqprop-spice netlist, the header (docs/netlist-format.md section 3), checked.

``read_header`` gives the header's values and where each is written, and the layer sizes
and directedness, from the header or (without one) from the caller. Edited headers
(``sizes=4,5,0,3``, ``sizes=-1``, ``format=2``) raise at the header's column.
"""
from __future__ import annotations

import dataclasses
import re

from . import blocks_physical
from . import netlist_format as nf
from .netlist_format import FORMAT_VERSION
from .spice_errors import NetworkReadError, UnsupportedNetlistError, quoted
from .spice_parse import Netlist, Pos

# The reader builds dense (N, N) float64 matrices (W, W_circuit, mask, conductances): 10,000
# neurons take 0.8 GB each. Far above what ngspice can solve (docs/netlist-format.md section 9),
# and it keeps an edited header (sizes=2,2,100000000) from asking for terabytes.
MAX_NEURONS = 10_000
# the format's choices, and the physical level (docs/physical.md): its netlists share the header
HEADER_CHOICES = {**nf.HEADER_CHOICES, "level": (*nf.HEADER_CHOICES["level"], blocks_physical.LEVEL)}


@dataclasses.dataclass
class Header:
    values: dict[str, str]  # key -> value as written ({} when line 1 is no header)
    pos: dict[str, Pos]  # key -> where its value starts
    sizes: tuple[int, ...]
    directed: bool


def _fail(net: Netlist, message: str, pos: Pos | None = None, cls=NetworkReadError):
    net.error(cls, message, pos or Pos(net.file, 1, 1))


def layer_sizes(net: Netlist, values, what: str, pos: Pos | None = None) -> tuple[int, ...]:
    """Layer sizes: at least an input and an output layer, each >= 1, at most MAX_NEURONS in all."""
    shown = quoted(",".join(map(str, values)))
    try:
        sizes = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1:
        _fail(net, f"{what}{shown}: expected layer sizes a,b,... (input layer first, at least an input and an "
                   f"output layer, each of >= 1 neuron)", pos)
    if sum(sizes) > MAX_NEURONS:
        _fail(net, f"{what}{shown}: {sum(sizes)} neurons, more than this reader's {MAX_NEURONS:,} (it builds "
                   f"dense N x N weight matrices)", pos)
    return sizes


def read_header(net: Netlist, sizes=None, directed: bool | None = None) -> Header:
    """The header of ``net`` checked against the format and against ``sizes``/``directed`` if given."""
    title = net.title
    words = title.lstrip("* \t").split()
    if not words or words[0] != nf.HEADER_TAG:
        if sizes is None:
            _fail(net, f"line 1 is no {nf.HEADER_TAG} header ('* {nf.HEADER_TAG} format={FORMAT_VERSION} "
                       "sizes=...'): pass sizes= (and directed= if it is a directed net) to read it anyway")
        return Header({}, {}, layer_sizes(net, sizes, "sizes="), bool(directed))
    header, where = {}, {}
    for m in re.finditer(r"([^\s=]+)=(\S*)", title):
        header[m.group(1)] = m.group(2)
        where[m.group(1)] = Pos(net.file, 1, m.start(2) + 1)
    if header.get("format") != str(FORMAT_VERSION):
        _fail(net, f"header format={quoted(str(header.get('format')))}; this reader knows format={FORMAT_VERSION}",
              where.get("format"), UnsupportedNetlistError)
    if "sizes" not in header:
        _fail(net, "header needs sizes=a,b,... (layer sizes, input first)")
    written = layer_sizes(net, header["sizes"].split(","), "header sizes=", where["sizes"])
    if sizes is not None and tuple(sizes) != written:
        _fail(net, f"sizes={tuple(sizes)} given, but the header says {written}", where["sizes"])
    if header.get("directed", "0") not in ("0", "1"):
        _fail(net, f"header directed={quoted(header['directed'])!r}, expected 0 or 1", where["directed"])
    is_directed = header.get("directed", "0") == "1"
    if directed is not None and bool(directed) != is_directed:
        _fail(net, f"directed={directed} given, but the header says directed={int(is_directed)}", where.get("directed"))
    if "dynamics" in header:  # blocks_deep's neuron (no leak, a self term): not a network this reader maps
        _fail(net, f"header dynamics={quoted(header['dynamics'])}: this reader reads the leaky neuron of "
                   "docs/netlist-format.md only", where["dynamics"], UnsupportedNetlistError)
    for key, allowed in HEADER_CHOICES.items():
        if header.get(key) not in allowed:
            _fail(net, f"header {key}={header.get(key)!r}, expected one of {allowed}", where.get(key))
    return Header(header, where, written, is_directed)
