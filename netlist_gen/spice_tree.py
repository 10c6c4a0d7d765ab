"""The lark grammar (spice_subset.lark) and what its parse tree turns into.

``statements(text, file, report)`` parses one file's text into raw statements whose
values are still text with a position (``Val``): they can only be evaluated once every
``.param`` is known, which spice_parse does (with spice_expr's ``evaluate``).
Forms of real SPICE the subset does not hold (POLY sources, a resistor whose value comes
from its model, RKM values...) are refused here by name, with their position.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import re
import threading
from pathlib import Path

import lark
from lark.exceptions import UnexpectedInput

from .spice_errors import NetlistSyntaxError, UnsupportedNetlistError, raise_syntax_error

_GRAMMAR = Path(__file__).with_name("spice_subset.lark")


@functools.lru_cache(maxsize=1)
def _compiled() -> tuple[lark.Lark, "_ToRaw"]:
    # Built once per process (~0.2 s). LALR keeps parsing linear in the netlist size; the
    # transformer runs inside the parser (no tree, no second pass: ~1.7x faster).
    to_raw = _ToRaw()
    return lark.Lark(_GRAMMAR.read_text(), parser="lalr", lexer="contextual", start=["netlist", "expression"],
                     propagate_positions=True, maybe_placeholders=False, transformer=to_raw), to_raw


def parser() -> lark.Lark:
    """The lark parser; ``start="expression"`` gives the tree of an expression's text."""
    return _compiled()[0]


_LOCK = threading.Lock()  # the transformer inside the parser holds the file being parsed


@dataclasses.dataclass(frozen=True)
class Pos:
    """Where a record was written: file label, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


# -- parse tree -> raw statements ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Val:
    """A value as written (number, {expr}, 'expr' or .param expression): it needs the scope."""

    text: str
    pos: Pos


@dataclasses.dataclass(eq=False)
class Raw:
    kind: str  # element | subckt | ends | model | param | include | nodeset | ic | options | analysis | skipped
    pos: Pos
    fields: dict


_KIND_NAMES = {"M": "MOSFET", "Q": "BJT", "J": "JFET", "Z": "MESFET", "L": "inductor", "K": "coupled inductor",
               "T": "transmission line", "O": "lossy line", "U": "RC line", "S": "switch", "W": "switch",
               "H": "CCVS", "A": "XSPICE code model", "P": "coupled line", "N": "OSDI device", "Y": "line"}
_KEPT_IN_SUBCKT = "MQJ"  # MOSFET, BJT, JFET: inside a .subckt only, as text (Element.expr, expr_kind "text")
_VALUE_KEYS = {"R": ("r", "resistance"), "C": ("c", "capacitance")}  # r=/c= give the value instead
_VALUE_WANTED = "a number (such as 1.5k or 2e-3), {expression} or 'expression'"
_NUMBER_LIKE = re.compile(r"[+\-.0-9]|(inf|infinity|nan)$", re.I)  # never a model name: a bad number
# end-of-line comments inside a TEXT field ("$ " and " //"; ";" already ends the field)
_TEXT_COMMENT = re.compile(r"(?:^|(?<=\s))(?:\$(?=\s|$)|//)")


def _split(c):
    """(positional items, key=value pairs) of a rule's children."""
    return [i for i in c if not isinstance(i, tuple)], [i for i in c if isinstance(i, tuple)]


def _strip_comment(text: str) -> str:
    m = _TEXT_COMMENT.search(text)
    return (text[:m.start()] if m else text).rstrip()


class _Model(str):
    """A model name field of an R or C element (str, with the token's position)."""

    def __new__(cls, tok, pos):
        self = super().__new__(cls, str(tok))
        self.pos = pos
        return self


class _ToRaw(lark.Transformer):
    """One handler per grammar rule; unsupported and unknown lines raise right here."""

    file: str = "<netlist>"  # set by statements() for each parse
    # between .subckt and .ends of this file (the parser calls back in text order): semiconductor
    # devices are kept there, as text, for a user's neuron (docs/netlist-reader.md); refused elsewhere
    in_subckt: bool = False
    report = None  # report(cls, message, pos) raises cls with the line's excerpt

    def _pos(self, tok) -> Pos:
        return Pos(self.file, tok.line, tok.column)

    def VALUE(self, tok):
        return Val(str(tok), self._pos(tok))

    NAME_VALUE = VALUE  # a bare .param name: an expression of one name

    def _element(self, kind, c, nodes, value=None, params=(), **fields) -> Raw:
        fields.update(name=str(c[0]), kind=kind, nodes=tuple(map(str, nodes)), value=value, params=list(params))
        return Raw("element", self._pos(c[0]), fields)

    def netlist(self, items):
        return [i for i in items if isinstance(i, Raw)]  # the .end token is dropped

    def assignment(self, c):
        return (str(c[0]), c[1])

    def _end(self, item) -> Pos:
        """Just after the last field of a statement (item: its last child)."""
        if isinstance(item, tuple):
            item = item[1]
        if isinstance(item, lark.Token):
            return Pos(self.file, item.end_line, item.end_column)
        text = item.text if isinstance(item, Val) else item
        return dataclasses.replace(item.pos, column=item.pos.column + len(text))

    def rc_model(self, c):
        return _Model(c[0], self._pos(c[0]))

    def _two_terminal(self, kind, c):
        """R/C: value, model, both, or r=/c=; a missing value is refused here, a model name alone is
        resolved by spice_parse (a model gives the value: refused; a .param name: its value)."""
        t, kv = _split(c)
        value = next((i for i in t[3:] if isinstance(i, Val)), None)
        model = next((i for i in t[3:] if isinstance(i, _Model)), None)
        usage = f"; the form is: {kind}<name> n1 n2 value [model] [key=value ...]"
        if model is not None and _NUMBER_LIKE.match(model):
            if value is None:
                self.report(NetlistSyntaxError, f"bad number '{model}', expected {_VALUE_WANTED}{usage}", model.pos)
            self.report(NetlistSyntaxError, f"unexpected '{model}' after the value, expected a model name, "
                        f"key=value or end of line{usage}", model.pos)
        given = [v for k, v in kv if k.lower() in _VALUE_KEYS[kind]]
        if len(given) + (value is not None) > 1:
            later = max(given + [value] * (value is not None), key=lambda v: (v.pos.line, v.pos.column))
            self.report(UnsupportedNetlistError, f"'{c[0]}' gives its value twice (a value and "
                        f"{'/'.join(_VALUE_KEYS[kind])}=); ngspice then takes the later one: give one", later.pos)
        if value is None and not given and model is None:
            self.report(NetlistSyntaxError, f"unexpected end of line, expected {_VALUE_WANTED}{usage}",
                        self._end(c[-1]))
        if value is None and given:
            value = given[0]
            kv = [(k, v) for k, v in kv if k.lower() not in _VALUE_KEYS[kind]]
        # a model name without a value may be a bare .param name (ngspice substitutes it): spice_parse decides
        return self._element(kind, c, t[1:3], value, kv, ref=None if model is None else str(model),
                             ref_pos=None if model is None else model.pos)

    def resistor(self, c):
        return self._two_terminal("R", c)

    def capacitor(self, c):
        return self._two_terminal("C", c)

    def vccs(self, c):
        t, kv = _split(c)
        return self._element("G", c, t[1:5], t[5], kv)

    def vcvs(self, c):
        t, kv = _split(c)
        return self._element("E", c, t[1:5], t[5], kv)

    def vccs_expr(self, c):
        return self._element(str(c[0])[0].upper(), c, c[1:3], expr=str(c[4])[1:-1].strip(),
                             expr_kind=str(c[3]).lower())

    vcvs_expr = vccs_expr

    def cccs(self, c):
        t, kv = _split(c)
        return self._element("F", c, t[1:3], t[4], kv, ref=str(t[3]))

    def unsupported_source(self, c):
        self.report(UnsupportedNetlistError, f"'{c[0]}': {str(c[3]).upper()} controlled sources are outside the "
                    "supported subset (E/G: nc+ nc- gain or value={expr}, F: vsource gain)", self._pos(c[3]))

    def bsource(self, c):
        text = " ".join(str(p).strip() for p in c[4:])  # pieces of + continuation lines
        return self._element("B", c, c[1:3], expr=_strip_comment(text), expr_kind=str(c[3]).lower())

    def vsource(self, c):
        return self._element(str(c[0])[0].upper(), c, c[1:3], **c[3])

    isource = vsource

    def source_spec(self, c):
        spec = dict(value=None, ac=None, waveform=None)
        for i in c:
            kind, got = ("value", i) if isinstance(i, Val) else (i.data, i.children)
            got = got[0] if kind == "value" and isinstance(got, list) else got
            if spec[kind] is not None:
                where = got if isinstance(got, Val) else got[0]
                self.report(UnsupportedNetlistError, f"a second {'DC value' if kind == 'value' else kind} in one "
                            "source (ngspice keeps one of them): give one", where.pos)
            spec[kind] = got
        return spec

    def dc_spec(self, c):
        return lark.Tree("value", [i for i in c if isinstance(i, Val)])

    def ac_spec(self, c):
        return lark.Tree("ac", [_Keyword(c[0], self._pos(c[0]))] + [i for i in c if isinstance(i, Val)])

    def waveform(self, c):
        return lark.Tree("waveform", [_Keyword(c[0], self._pos(c[0]))] + [i for i in c if isinstance(i, Val)])

    def diode(self, c):
        t, kv = _split(c)
        flags = tuple(str(w).lower() for w in t[4:] if isinstance(w, lark.Token))
        value = next((i for i in t[4:] if isinstance(i, Val)), None)
        return self._element("D", c, t[1:3], value, kv, ref=str(t[3]), flags=flags)

    def subckt_call(self, c):
        t, kv = _split(c)
        words = [str(w) for w in t[1:] if w.type == "WORD"]
        return self._element("X", c, words[:-1], None, kv, ref=words[-1])

    def unsupported_element(self, c):
        letter = str(c[0])[0].upper()
        if self.in_subckt and letter in _KEPT_IN_SUBCKT:  # a user's transistor-level neuron: kept, not read
            text = " ".join(str(p).split(";")[0].strip() for p in c[1:])  # REST holds a ";" comment too
            return self._element(letter, c, (), expr=_strip_comment(text), expr_kind="text")
        what = _KIND_NAMES.get(letter, "element")
        self.report(UnsupportedNetlistError, f"'{c[0]}': {letter} elements ({what}) are outside the supported "
                    f"subset (R, C, G, E, F, B, V, I, D, X)", self._pos(c[0]))

    def subckt(self, c):
        t, kv = _split(c)
        words = [str(w) for w in t[1:] if w.type == "WORD"]
        self.in_subckt = True
        return Raw("subckt", self._pos(c[0]), dict(name=words[0], ports=tuple(words[1:]), params=kv))

    def ends(self, c):
        self.in_subckt = False
        return Raw("ends", self._pos(c[0]), dict(name=str(c[1]) if len(c) > 1 else None))

    def model_param(self, c):
        return (str(c[0]), None if len(c) == 1 else c[1] if isinstance(c[1], Val) else str(c[1]))

    def model(self, c):
        t, kv = _split(c)
        return Raw("model", self._pos(c[0]), dict(name=str(t[1]), type=str(t[2]), params=kv))

    def param(self, c):
        pieces = [(_strip_comment(str(t)), self._pos(t)) for t in c[1:]]
        try:
            pairs = split_assignments(pieces)
        except _AssignmentError as e:
            self.report(NetlistSyntaxError, f"{e}; the form is: .param name=value ...",
                        e.pos or Pos(self.file, c[0].line, c[0].column + len(c[0])))
        return Raw("param", self._pos(c[0]), dict(params=pairs))

    def include(self, c):
        path = str(c[1])
        return Raw("include", self._pos(c[0]), dict(path=path[1:-1] if path[0] in "'\"" else path))

    def node_voltage(self, c):
        return (c[1], c[2])

    def nodeset(self, c):
        return Raw(str(c[0])[1:].lower(), self._pos(c[0]), dict(values=c[1:]))

    ic = nodeset

    def option(self, c):
        return (str(c[0]), (str(c[1]) if c[1].__class__ is lark.Token else c[1]) if len(c) > 1 else None)

    def options(self, c):
        return Raw("options", self._pos(c[0]), dict(options=c[1:]))

    def _analysis(self, c):
        args = [str(a).lower() if isinstance(a, lark.Token) else a for a in c[1:]]  # a source name, uic
        return Raw("analysis", self._pos(c[0]), dict(name=str(c[0])[1:].lower(), args=args))

    op = tran = dc = _analysis

    def control(self, c):
        return Raw("skipped", self._pos(c[0]), dict(name="control", text=str(c[0])))

    def unterminated_control(self, c):
        self.report(NetlistSyntaxError, ".control block without .endc", self._pos(c[0]))

    def ignored_dot(self, c):
        return Raw("skipped", self._pos(c[0]), dict(name=str(c[0])[1:].lower(), text=" ".join(map(str, c[1:]))))

    def unsupported_dot(self, c):
        self.report(UnsupportedNetlistError, f"'{c[0]}' is outside the supported subset", self._pos(c[0]))

    def unknown_dot(self, c):
        self.report(NetlistSyntaxError, f"unknown dot-command '{c[0]}'", self._pos(c[0]))


class _Keyword(str):
    """A keyword (ac, pulse, ...) with its position, lower case."""

    def __new__(cls, tok, pos):
        self = super().__new__(cls, str(tok).lower())
        self.pos = pos
        return self


# -- .param name = value pairs (values may hold blanks) ---------------------------------
class _AssignmentError(ValueError):
    def __init__(self, message: str, pos: Pos | None):
        super().__init__(message)
        self.pos = pos


def split_assignments(pieces: list[tuple[str, Pos]]) -> list[tuple[str, Val]]:
    """``[("a = 2 * b c=3", pos)]`` -> ``[("a", Val("2 * b")), ("c", Val("3"))]``.

    A name is the field before an ``=`` that is outside parentheses, braces and quotes and
    not part of ``==``, ``<=``, ``>=`` or ``!=``; a value runs to the next name. One pass.
    """
    text, starts, positions = "", [], []
    for piece, pos in pieces:  # + continuation lines join with a blank
        starts.append(len(text))
        positions.append(pos)
        text += piece + " "

    def at(offset: int) -> Pos:
        k = bisect.bisect_right(starts, offset) - 1
        return dataclasses.replace(positions[k], column=positions[k].column + offset - starts[k])

    names, depth, quote = [], 0, False  # names: (start, end, offset of "=")
    for i, ch in enumerate(text):
        if quote:
            quote = ch != "'"
        elif ch == "'":
            quote = True
        elif ch in "({":
            depth += 1
        elif ch in ")}":
            depth = max(0, depth - 1)
        elif ch == "=" and depth == 0 and text[i + 1:i + 2] != "=" and text[i - 1:i] not in ("=", "<", ">", "!"):
            end = i  # back over blanks, then over the name: each character is passed at most twice
            while end > 0 and text[end - 1] in " \t\f":
                end -= 1
            start = end
            while start > 0 and text[start - 1] not in " \t\f=(){},;'\"":
                start -= 1
            if start == end:
                raise _AssignmentError("'=' without a parameter name before it", at(i))
            names.append((start, end, i))
    if not names:
        stray = len(text) - len(text.lstrip())
        raise _AssignmentError("expected name=value" if text.strip() else "missing name=value",
                               at(stray) if text.strip() else None)
    if text[:names[0][0]].strip():
        raise _AssignmentError(f"'{text[:names[0][0]].split()[0]}' is not name=value",
                               at(len(text) - len(text.lstrip())))
    pairs = []
    for k, (start, end, eq) in enumerate(names):
        stop = names[k + 1][0] if k + 1 < len(names) else len(text)
        value = text[eq + 1:stop]
        lead = len(value) - len(value.lstrip())
        if not value.strip():
            raise _AssignmentError(f"missing value for parameter '{text[start:end]}'", at(eq + 1))
        pairs.append((text[start:end], Val(value.strip(), at(eq + 1 + lead))))
    return pairs


def statements(text: str, file: str, report) -> list[Raw]:
    """One file's text (title line already blanked) -> raw statements.

    ``report(cls, message, pos)`` raises: it knows the source lines for the excerpt.
    """
    lark_parser, to_raw = _compiled()
    with _LOCK:
        to_raw.file, to_raw.report, to_raw.in_subckt = file, report, False
        try:
            return lark_parser.parse(text, start="netlist")
        except UnexpectedInput as e:
            raise_syntax_error(e, file, text.split("\n"))
