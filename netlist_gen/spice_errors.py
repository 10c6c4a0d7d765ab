"""Errors of the netlist reader, and lark's parse errors turned into them.

Every error names file, line and column and shows the line with a caret under the
column, so a hand-edited netlist can be fixed without reading a traceback:

    net.cir:12:8: bad number '1.2.3k' (expected a value: a number such as 1.5k, ...)
        R1 a b 1.2.3k
               ^
"""
from __future__ import annotations

import re

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken


class NetlistError(ValueError):
    """Any problem with a netlist's text; ``file``, ``line``, ``column`` locate it (1-based)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: int | None = None, source_line: str | None = None):
        self.message, self.file, self.line, self.column = message, file, line, column
        self.source_line = source_line
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file or "<netlist>"
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        text = f"{where}: {self.message}"
        if self.source_line is not None and self.column is not None:
            # keep the line's own tabs before the caret so it stays under the column
            pad = "".join(ch if ch == "\t" else " " for ch in self.source_line[: self.column - 1])
            text += f"\n    {self.source_line}\n    {pad}^"
        return text


class NetlistSyntaxError(NetlistError):
    """Malformed SPICE: a line the grammar rejects, a bad number or expression,
    an unterminated block, an unknown dot-command, a duplicate name, a missing include."""


class UnsupportedNetlistError(NetlistError):
    """Well-formed SPICE outside the subset (an M element, .lib, a nested .subckt...)."""


class NetworkReadError(NetlistError):
    """Valid SPICE that is not a network in the eqprop-spice format (docs/netlist-format.md):
    a G element that is no synapse, a weight on an unknown neuron, a missing neuron block..."""


# -- lark errors -> messages ------------------------------------------------------------
_EXPECTED = {
    "VALUE": "a number (such as 1.5k or 2e-3), {expression} or 'expression'",
    "WORD": "a node or name", "PARAM_EXPR": "a parameter value", "EQUAL": "'='", "RPAR": "')'",
    "LPAR": "'('", "_NL": "end of line", "B_KIND": "v= or i=", "B_EXPR": "an expression",
    "PATH": "a file name", "DQUOTED": "a file name", "V_KW": "v(node)=value", "EXPR_KW": "value=",
}
# what each element line looks like, appended when its line fails to parse
_USAGE = {
    "R": "R<name> n1 n2 value [key=value ...]", "C": "C<name> n1 n2 value [key=value ...]",
    "G": "G<name> n+ n- nc+ nc- gain | G<name> n+ n- value={expr}",
    "E": "E<name> n+ n- nc+ nc- gain | E<name> n+ n- value={expr}",
    "F": "F<name> n+ n- vsource gain", "B": "B<name> n+ n- v=expr | i=expr",
    "V": "V<name> n+ n- [dc] value [ac mag [phase]] [pulse(...)|sin(...)|pwl(...)...]",
    "I": "I<name> n+ n- [dc] value [ac mag [phase]] [pulse(...)|sin(...)|pwl(...)...]",
    "D": "D<name> n+ n- model [area] [key=value ...]", "X": "X<name> node ... subckt [params:] [key=value ...]",
    ".nodeset": ".nodeset v(node)=value ...", ".ic": ".ic v(node)=value ...",
    ".tran": ".tran tstep tstop [tstart [tmax]] [uic]", ".dc": ".dc source start stop step",
    ".param": ".param name=value ...", ".subckt": ".subckt name node ... [params:] [key=value ...]",
    ".model": ".model name type [(key=value ...)]", ".include": ".include file",
}


def _found(e: UnexpectedInput, line: str) -> str:
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type in ("_NL", "$END")):
        return "end of line"
    field = re.match(r"[^\s=(){},;'\"]+|\S", line[e.column - 1:])
    return f"'{field.group(0)}'" if field else "end of line"


def _usage(line: str) -> str:
    first = line.split()[0].lower() if line.split() else ""
    key = first if first.startswith(".") else first[:1].upper()
    key = ".include" if key == ".inc" else key
    return f"; the form is: {_USAGE[key]}" if key in _USAGE else ""


def raise_syntax_error(e: UnexpectedInput, file: str, lines: list[str], column_offset: int = 0):
    """Re-raise a lark parse error as NetlistSyntaxError with a message for people."""
    line_no, col = e.line, e.column
    if line_no is None or line_no < 1 or line_no > len(lines):  # end of input
        line_no, col = len(lines), len(lines[-1]) + 1 if lines else 1
    line = lines[line_no - 1] if lines else ""
    expected = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
    if "VALUE" in expected and "PARAM_EXPR" in expected:
        expected.remove("PARAM_EXPR")
    found = _found(e, line)
    want = " or ".join(dict.fromkeys(_EXPECTED.get(t, t.lower()) for t in expected if not t.startswith("__")))
    fields = list(re.finditer(r"[^\s=(){},;'\"]+", line[: col - 1]))
    if "VALUE" in expected and re.match(r"'[+-]?[\d.]", found):
        msg = f"bad number {found}, expected {want}"
    elif expected == ["EQUAL"] and found == "end of line" and fields:
        # a stray field after the values: point at it, not at the end of the line
        col = fields[-1].start() + 1
        msg = f"'{fields[-1].group(0)}' is neither a node nor key=value here"
    elif found.startswith("'{") or found == "'''":
        msg = f"unclosed {found[1]} (an expression must close on its line)"
    elif isinstance(e, UnexpectedCharacters) and not isinstance(e, UnexpectedToken):
        msg = f"unexpected character {found}" + (f", expected {want}" if want else "")
    else:
        msg = f"unexpected {found}" + (f", expected {want}" if want else "")
    raise NetlistSyntaxError(msg + _usage(line), file, line_no, col + column_offset, line) from None
