"""The lark grammar (spice_subset.lark) and what its parse tree turns into.

``statements(text, file, report)`` parses one file's text into raw statements whose
values are still text with a position (``Val``): they can only be evaluated once every
``.param`` is known, which spice_parse does. ``spice_number`` and ``evaluate`` give
values their meaning: SPICE engineering suffixes and ``{expression}`` arithmetic.
"""
from __future__ import annotations

import dataclasses
import functools
import math
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


# -- numbers ----------------------------------------------------------------------------
_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))(?:e([+-]?\d+))?([a-z]*)", re.I)
_SCALE = {"t": 12, "g": 9, "k": 3, "m": -3, "u": -6, "n": -9, "p": -12, "f": -15}


def spice_number(text: str) -> float:
    """'10kOhm' -> 10000.0: mantissa, exponent, scale factor, then letters SPICE ignores.

    The scale goes into the decimal exponent and the string through float() once, so the
    result is correctly rounded and a repr()-written number reads back bit for bit.
    """
    m = _NUMBER.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad number '{text}'")
    mantissa, exp, letters = m.group(1), int(m.group(2) or 0), m.group(3).lower()
    if letters.startswith("meg"):
        exp += 6
    elif letters.startswith("mil"):
        return float(f"{mantissa}e{exp}") * 25.4e-6
    elif letters[:1] in _SCALE:
        exp += _SCALE[letters[0]]
    return float(f"{mantissa}e{exp}")


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


def _split(c):
    """(positional items, key=value pairs) of a rule's children."""
    return [i for i in c if not isinstance(i, tuple)], [i for i in c if isinstance(i, tuple)]


class _ToRaw(lark.Transformer):
    """One handler per grammar rule; unsupported and unknown lines raise right here."""

    file: str = "<netlist>"  # set by statements() for each parse
    report = None  # report(cls, message, pos) raises cls with the line's excerpt

    def _pos(self, tok) -> Pos:
        return Pos(self.file, tok.line, tok.column)

    def VALUE(self, tok):
        return Val(str(tok), self._pos(tok))

    PARAM_EXPR = VALUE

    def _element(self, kind, c, nodes, value=None, params=(), **fields) -> Raw:
        fields.update(name=str(c[0]), kind=kind, nodes=tuple(map(str, nodes)), value=value, params=list(params))
        return Raw("element", self._pos(c[0]), fields)

    def netlist(self, items):
        return [i for i in items if isinstance(i, Raw)]  # the .end token is dropped

    def assignment(self, c):
        return (str(c[0]), c[1])

    def resistor(self, c):
        t, kv = _split(c)
        return self._element("R", c, t[1:3], t[3], kv)

    def capacitor(self, c):
        t, kv = _split(c)
        return self._element("C", c, t[1:3], t[3], kv)

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

    def bsource(self, c):
        text = " ".join(str(p).strip() for p in c[4:])  # pieces of + continuation lines
        text = re.split(r"\s\$\s", " " + text, maxsplit=1)[0].strip()  # a "$ " comment
        return self._element("B", c, c[1:3], expr=text, expr_kind=str(c[3]).lower())

    def vsource(self, c):
        return self._element(str(c[0])[0].upper(), c, c[1:3], **c[3])

    isource = vsource

    def source_spec(self, c):
        spec = dict(value=None, ac=None, waveform=None)
        for i in c:
            if isinstance(i, Val):
                spec["value"] = i
            elif isinstance(i, lark.Tree):
                spec[i.data] = i.children
        return spec

    def ac_spec(self, c):
        return lark.Tree("ac", [i for i in c if isinstance(i, Val)])

    def waveform(self, c):
        return lark.Tree("waveform", [str(c[0]).lower()] + [i for i in c if isinstance(i, Val)])

    def diode(self, c):
        t, kv = _split(c)
        return self._element("D", c, t[1:3], t[4] if len(t) > 4 else None, kv, ref=str(t[3]))

    def subckt_call(self, c):
        t, kv = _split(c)
        words = [str(w) for w in t[1:] if w.type == "WORD"]
        return self._element("X", c, words[:-1], None, kv, ref=words[-1])

    def unsupported_element(self, c):
        letter = str(c[0])[0].upper()
        what = _KIND_NAMES.get(letter, "element")
        self.report(UnsupportedNetlistError, f"'{c[0]}': {letter} elements ({what}) are outside the supported "
                    f"subset (R, C, G, E, F, B, V, I, D, X)", self._pos(c[0]))

    def subckt(self, c):
        t, kv = _split(c)
        words = [str(w) for w in t[1:] if w.type == "WORD"]
        return Raw("subckt", self._pos(c[0]), dict(name=words[0], ports=tuple(words[1:]), params=kv))

    def ends(self, c):
        return Raw("ends", self._pos(c[0]), dict(name=str(c[1]) if len(c) > 1 else None))

    def model(self, c):
        t, kv = _split(c)
        return Raw("model", self._pos(c[0]), dict(name=str(t[1]), type=str(t[2]), params=kv))

    def param(self, c):
        return Raw("param", self._pos(c[0]), dict(params=[(str(k), v) for k, v in zip(c[1::2], c[2::2])]))

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


def statements(text: str, file: str, report) -> list[Raw]:
    """One file's text (title line already blanked) -> raw statements.

    ``report(cls, message, pos)`` raises: it knows the source lines for the excerpt.
    """
    lark_parser, to_raw = _compiled()
    with _LOCK:
        to_raw.file, to_raw.report = file, report
        try:
            return lark_parser.parse(text, start="netlist")
        except UnexpectedInput as e:
            raise_syntax_error(e, file, text.split("\n"))


# -- expressions ({...}, '...', .param values) -----------------------------------------
_FUNCS = {"min": min, "max": max, "abs": abs, "sqrt": math.sqrt, "exp": math.exp, "ln": math.log,
          "log": math.log, "log10": math.log10, "pow": math.pow, "sin": math.sin, "cos": math.cos,
          "tan": math.tan, "atan": math.atan, "tanh": math.tanh, "floor": math.floor, "ceil": math.ceil}
_BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b, "pow": lambda a, b: a ** b}


class _ExprError(Exception):
    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.column = column  # within the expression text


def _column(tree) -> int:
    return tree.column if isinstance(tree, lark.Token) else tree.meta.column


def _evaluate(tree, scope: dict[str, float]) -> float:
    kind, c = tree.data, tree.children
    if kind == "number":
        return spice_number(str(c[0]))
    if kind == "name":
        if str(c[0]).lower() not in scope:
            raise _ExprError(f"unknown parameter '{c[0]}'", c[0].column)
        return scope[str(c[0]).lower()]
    if kind == "call" and str(c[0]).lower() not in _FUNCS:
        raise _ExprError(f"unknown function '{c[0]}' (known: {', '.join(sorted(_FUNCS))})", c[0].column)
    args = [_evaluate(a, scope) for a in (c[1:] if kind == "call" else c)]
    try:
        if kind == "neg":
            return -args[0]
        if kind == "call":
            return float(_FUNCS[str(c[0]).lower()](*args))
        return float(_BINARY[kind](*args))
    except (ArithmeticError, ValueError, TypeError) as e:
        raise _ExprError(f"cannot evaluate ({e})", _column(tree)) from None


def evaluate(val: Val, scope: dict[str, float], what: str, report) -> float:
    """The float a value stands for: a number, or an expression over ``scope`` (lower-case
    names). Errors point at the offending character inside the expression."""
    text = val.text
    braced = text[0] in "{'"
    inner = text[1:-1] if braced else text
    at = functools.partial(dataclasses.replace, val.pos)
    v = math.nan  # report() raises; this only keeps v defined for readers of the code
    try:
        if not braced and _NUMBER.fullmatch(text):
            v = spice_number(text)
        else:  # {expr}, 'expr', or an unbraced .param expression
            v = _evaluate(parser().parse(inner, start="expression"), scope)
    except UnexpectedInput as e:
        # lark puts the end of input at the last token; the caret belongs after it
        col = len(inner) + 1 if getattr(getattr(e, "token", None), "type", "$END") == "$END" else e.column
        report(NetlistSyntaxError, f"bad expression {text} in {what}", at(column=val.pos.column + braced + col - 1))
    except _ExprError as e:
        report(NetlistSyntaxError, f"{e} in {what}: {text}", at(column=val.pos.column + braced + e.column - 1))
    if not math.isfinite(v):
        report(NetlistSyntaxError, f"{what} is not a finite number: {text}", val.pos)
    return v
