"""Translation between eqprop networks and SPICE text (pure: no files, no simulation).

``build_circuit`` writes the netlist of docs/netlist-format.md; the size guard
(``estimate_size``/``check_size``/``NetlistTooLarge``) refuses circuits Debian's
ngspice cannot factorise in practice. ``read_netlist`` (lark grammar in spice_subset.lark)
reads a netlist back into a network, with file:line:column errors. ``netlist_format``
holds the names both sides and the runners use (``cap_ic_key``, ``nudge_names``...).
Never imports ``circuits`` (DESIGN.md section 2).
"""
from .blocks_ideal import Element, fmt
from .generator import (
                        DEFAULT_OPTIONS,
                        LEVELS,
                        MAX_DENSE_WIDTH,
                        MAX_ELEMENTS,
                        Circuit,
                        NetlistTooLarge,
                        SizeEstimate,
                        build_circuit,
                        check_size,
                        estimate_size,
                        folded_input_currents,
)
from .netlist_format import (
                        FORMAT_VERSION,
                        HEADER_KEYS,
                        bias_name,
                        cap_ic_key,
                        cap_name,
                        device_names,
                        folded_input_name,
                        input_source_name,
                        nudge_names,
                        r_node,
                        synapse_name,
                        u_node,
)
from .reader import ReadResult, read_netlist
from .spice_errors import NetlistError, NetlistSyntaxError, NetworkReadError, UnsupportedNetlistError

__all__ = ["Circuit", "DEFAULT_OPTIONS", "Element", "FORMAT_VERSION", "LEVELS", "MAX_DENSE_WIDTH", "MAX_ELEMENTS",
           "NetlistTooLarge", "SizeEstimate", "build_circuit", "check_size", "estimate_size", "fmt",
           "folded_input_currents", "ReadResult", "read_netlist", "NetlistError", "NetlistSyntaxError",
           "NetworkReadError", "UnsupportedNetlistError", "HEADER_KEYS", "bias_name", "cap_ic_key", "cap_name",
           "device_names", "folded_input_name", "input_source_name", "nudge_names", "r_node", "synapse_name",
           "u_node"]
