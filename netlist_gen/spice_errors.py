"""Errors of the netlist reader, and lark's parse errors turned into them.

Every error names file, line and column and shows the line with a caret under the
column, so a hand-edited netlist can be fixed without reading a traceback:

    net.cir:12:8: bad number '1.2.3k' (expected a value: a number such as 1.5k, ...)
        R1 a b 1.2.3k
               ^
Messages say what SPICE text was expected there ("a node or name", "end of line"), never
the grammar's own names for it; characters that do not print are shown escaped.
"""
from __future__ import annotations

import re

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken


def printable(text: str) -> str:
    """``text`` with characters that do not print (controls, lone surrogates) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


_EXCERPT = 160  # longest line excerpt under a message
_QUOTE = 80  # longest netlist text quoted inside a message


def quoted(text: str) -> str:
    """``text`` for a message, shortened in the middle when longer than _QUOTE."""
    return text if len(text) <= _QUOTE else f"{text[:_QUOTE // 2 - 2]}...{text[-(_QUOTE // 2 - 2):]}"


class NetlistError(ValueError):
    """Any problem with a netlist's text; ``file``, ``line``, ``column`` locate it (1-based)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: int | None = None, source_line: str | None = None):
        self.message, self.file, self.line, self.column = printable(message), file, line, column
        self.source_line = source_line
        super().__init__(self._format())

    def _format(self) -> str:
        where = printable(self.file or "<netlist>")
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        text = f"{where}: {self.message}"
        if self.source_line is not None and self.column is not None:
            line, column = self.source_line, self.column
            if len(line) > _EXCERPT:  # a window around the column of a very long line
                start = max(0, min(column - 1 - _EXCERPT // 2, len(line) - _EXCERPT))
                line, column = line[start:start + _EXCERPT], column - start
                if start > 0:
                    line, column = "..." + line[3:], column
            # one character per character (the caret stays under the column): keep tabs,
            # show what does not print as U+FFFD
            shown = "".join(ch if ch.isprintable() or ch == "\t" else "\ufffd" for ch in line)
            pad = "".join(ch if ch == "\t" else " " for ch in shown[: column - 1])
            text += f"\n    {shown}\n    {pad}^"
        return text


class NetlistSyntaxError(NetlistError):
    """Malformed SPICE: a line the grammar rejects, a bad number or expression,
    an unterminated block, an unknown dot-command, a duplicate name, a missing include,
    bytes that are not UTF-8 text outside comments."""


class UnsupportedNetlistError(NetlistError):
    """Well-formed SPICE outside the subset (an M element, .lib, a nested .subckt, a POLY
    source, an RKM value such as 4k7...)."""


class NetworkReadError(NetlistError):
    """Valid SPICE that is not a network in the eqprop-spice format (docs/netlist-format.md):
    a G element that is no synapse, a weight on an unknown neuron, a missing neuron block..."""


# -- lark errors -> messages ------------------------------------------------------------
_VALUE = "a number (such as 1.5k or 2e-3), {expression} or 'expression'"
_ELEMENT, _DOT = "an element (R1 a b 1k, ...)", "a dot-command"
# what each terminal of spice_subset.lark stands for in an "expected ..." list; None:
# never worth naming (comments, blanks, keywords of refused forms). A test checks that
# every terminal of the grammar is here, so no grammar-internal name reaches a message.
TERMINAL_DESCRIPTIONS = {
    "VALUE": _VALUE, "NAME_VALUE": "a parameter name", "EXPRESSION": "{expression}", "WORD": "a node or name",
    "EQUAL": "'='", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "_POW": "'^'", "_NL": "end of line",
    "$END": "end of line", "B_KIND": "v= or i=", "TEXT": "an expression", "PATH": "a file name",
    "DQUOTED": "a file name", "SQUOTED": "a file name", "V_KW": "v(node)=value", "EXPR_KW": "value=",
    "PARAMS_KW": "params:", "DC_KW": "dc", "AC_KW": "ac", "OFF_KW": "off", "UIC_KW": "uic",
    "WAVEFORM": "a waveform (pulse, sin, exp, pwl, sffm, am)", "EXPR_NUMBER": "a number",
    "EXPR_NAME": "a parameter or function name", "REST": None, "SOURCE_FUNC": None,
    "COMMENT_LINE": None, "INLINE_COMMENT": None, "WS": None, "_CONT": None,
    **{f"{k}_NAME": _ELEMENT for k in "RCGEFBVIDX"}, "OTHER_NAME": _ELEMENT,
    **{t: _DOT for t in ("DOT_SUBCKT", "DOT_ENDS", "DOT_MODEL", "DOT_PARAM", "DOT_INCLUDE", "DOT_NODESET",
                         "DOT_IC", "DOT_OPTIONS", "DOT_OP", "DOT_TRAN", "DOT_DC", "CONTROL_BLOCK", "CONTROL_OPEN",
                         "IGNORED_DOT", "UNSUPPORTED_DOT", "UNKNOWN_DOT", "END")},
}
# what each element line looks like, appended when its line fails to parse
_USAGE = {
    "R": "R<name> n1 n2 value [model] [key=value ...]", "C": "C<name> n1 n2 value [model] [key=value ...]",
    "G": "G<name> n+ n- nc+ nc- gain | G<name> n+ n- value={expr}",
    "E": "E<name> n+ n- nc+ nc- gain | E<name> n+ n- value={expr}",
    "F": "F<name> n+ n- vsource gain", "B": "B<name> n+ n- v=expr | i=expr",
    "V": "V<name> n+ n- [[dc] value] [ac [mag [phase]]] [pulse(...)|sin(...)|pwl(...)...]",
    "I": "I<name> n+ n- [[dc] value] [ac [mag [phase]]] [pulse(...)|sin(...)|pwl(...)...]",
    "D": "D<name> n+ n- model [area] [off] [key=value ...]", "X": "X<name> node ... subckt [params:] [key=value ...]",
    ".nodeset": ".nodeset v(node)=value ...", ".ic": ".ic v(node)=value ...",
    ".tran": ".tran tstep tstop [tstart [tmax]] [uic]", ".dc": ".dc source start stop step",
    ".param": ".param name=value ...", ".subckt": ".subckt name node ... [params:] [key=value ...]",
    ".model": ".model name type [(key[=value] ...)]", ".include": ".include file",
}
_FIELD = re.compile(r"[^\s=(){},;'\"]+")


def describe_expected(terminals) -> str:
    """'a node or name or end of line' for a set of terminal names (unknown names dropped)."""
    names = sorted(terminals)
    if "VALUE" in names:
        names = [n for n in names if n not in ("EXPR_NUMBER", "NAME_VALUE")]
    return " or ".join(dict.fromkeys(d for d in (TERMINAL_DESCRIPTIONS.get(t) for t in names) if d))


def usage(line: str) -> str:
    """'; the form is: ...' for the element or dot-command the line starts with."""
    first = line.split()[0].lower() if line.split() else ""
    key = first if first.startswith(".") else first[:1].upper()
    key = ".include" if key == ".inc" else key
    return f"; the form is: {_USAGE[key]}" if key in _USAGE else ""


def _found(e: UnexpectedInput, line: str) -> str:
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type in ("_NL", "$END")):
        return "end of line"
    field = _FIELD.match(line, e.column - 1) or re.compile(r"\S").match(line, e.column - 1)
    return f"'{quoted(field.group(0))}'" if field else "end of line"


def raise_syntax_error(e: UnexpectedInput, file: str, lines: list[str], column_offset: int = 0):
    """Re-raise a lark parse error as NetlistSyntaxError with a message for people."""
    line_no, col = e.line, e.column
    if line_no is None or line_no < 1 or line_no > len(lines):  # end of input
        line_no, col = len(lines), len(lines[-1]) + 1 if lines else 1
    line = lines[line_no - 1] if lines else ""
    expected = set(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
    found = _found(e, line)
    want = describe_expected(expected)
    fields = list(_FIELD.finditer(line[: col - 1]))
    if "VALUE" in expected and re.match(r"'[+-]?([\d.]|(inf|infinity|nan)')", found, re.I):
        msg = f"bad number {found}, expected {want}"
    elif expected == {"EQUAL"} and found == "end of line" and fields and line[fields[-1].end():col - 1].strip() == "":
        # a stray field after the values: point at it, not at the end of the line
        col = fields[-1].start() + 1
        msg = f"'{fields[-1].group(0)}' is neither a node nor key=value here"
    elif found.startswith("'{") or found == "'''":
        msg = f"unclosed {found[1]} (an expression must close on its line)"
    elif isinstance(e, UnexpectedCharacters) and not isinstance(e, UnexpectedToken):
        msg = f"unexpected character {found}" + (f", expected {want}" if want else "")
    else:
        msg = f"unexpected {found}" + (f", expected {want}" if want else "")
    raise NetlistSyntaxError(msg + usage(line), file, line_no, col + column_offset, line) from None
