"""SPICE text -> element records (grammar: spice_subset.lark, docs/netlist-reader.md).

This layer knows SPICE, not networks; reader.py maps its records to an eqprop Network.
Every record keeps file, line and column, so any later error can point at the text.
Errors are ``NetlistError`` subclasses carrying that location; lark's own exceptions
never reach a caller.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import lark
from lark.exceptions import UnexpectedInput, VisitError

from . import spice_errors
from .spice_errors import NetlistSyntaxError, UnsupportedNetlistError, spice_number

_GRAMMAR = Path(__file__).with_name("spice_subset.lark")


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    # built once per process (~0.2 s); LALR keeps parsing linear in the netlist size
    return lark.Lark(_GRAMMAR.read_text(), parser="lalr", lexer="contextual",
                     start=["netlist", "expression"], propagate_positions=True, maybe_placeholders=False)


# -- records -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pos:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclasses.dataclass(eq=False)
class Element:
    """One element line. ``value``: R ohms, C farads, G/E/F gain, V/I DC value, D area."""

    name: str
    kind: str  # its letter, upper case: R C G E F B V I D X
    nodes: tuple[str, ...]
    value: float | None
    pos: Pos
    params: dict[str, float] = dataclasses.field(default_factory=dict)  # key=value, keys lower case
    ref: str | None = None  # F: controlling V source, D: model, X: subcircuit
    expr: str | None = None  # B: the v=/i= expression, G/E: the value=/cur=/vol= expression (text)
    expr_kind: str | None = None  # "v" | "i" (B), "value" | "cur" | "vol" (G/E)
    ac: tuple[float, ...] | None = None  # V/I: (magnitude[, phase])
    waveform: tuple[str, tuple[float, ...]] | None = None  # V/I: ("pulse", args)


@dataclasses.dataclass(eq=False)
class Subckt:
    name: str
    ports: tuple[str, ...]
    params: dict[str, float]  # defaults; the body's values are evaluated with them
    elements: list[Element]
    pos: Pos


@dataclasses.dataclass(eq=False)
class Model:
    name: str
    type: str
    params: dict[str, float]
    pos: Pos


@dataclasses.dataclass(frozen=True)
class NodeVoltage:
    node: str
    value: float
    pos: Pos


@dataclasses.dataclass(eq=False)
class Directive:
    """An analysis (.op/.tran/.dc: float args, or a source name) or a skipped command."""

    name: str  # "op", "tran", "dc", "save", "control", ...
    args: tuple
    pos: Pos


@dataclasses.dataclass(eq=False)
class Netlist:
    title: str
    file: str
    elements: list[Element]  # top level, in text order (included files spliced in)
    subckts: dict[str, Subckt]  # lower-case name ->
    models: dict[str, Model]
    params: dict[str, float]  # global .param values, lower-case names
    options: dict[str, float | str | None]
    nodeset: list[NodeVoltage]
    ic: list[NodeVoltage]
    analyses: list[Directive]
    skipped: list[Directive]  # .control blocks, .save/.print/...: kept, not interpreted
    includes: list[str]  # files read through .include, in order

    def element(self, name: str) -> Element:
        """Top-level element by name (case-insensitive, as in SPICE)."""
        for e in self.elements:
            if e.name.lower() == name.lower():
                return e
        raise KeyError(name)


# -- parse tree -> raw statements ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Val:
    """A value as written (number, {expr}, 'expr' or .param expression): it needs the scope."""

    text: str
    pos: Pos


@dataclasses.dataclass(eq=False)
class _Raw:
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

    def __init__(self, file: str, report):
        super().__init__()
        self.file, self.report = file, report

    def _pos(self, tok) -> Pos:
        return Pos(self.file, tok.line, tok.column)

    def VALUE(self, tok):
        return _Val(str(tok), self._pos(tok))

    PARAM_EXPR = VALUE

    def _element(self, kind, c, nodes, value=None, params=(), **fields) -> _Raw:
        return _Raw("element", self._pos(c[0]), dict(name=str(c[0]), kind=kind, nodes=tuple(map(str, nodes)),
                                                     value=value, params=list(params), **fields))

    def netlist(self, items):
        return [i for i in items if isinstance(i, _Raw)]  # the .end token is dropped

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
            if isinstance(i, _Val):
                spec["value"] = i
            elif isinstance(i, lark.Tree):
                spec[i.data] = i.children
        return spec

    def ac_spec(self, c):
        return lark.Tree("ac", [i for i in c if isinstance(i, _Val)])

    def waveform(self, c):
        return lark.Tree("waveform", [str(c[0]).lower()] + [i for i in c if isinstance(i, _Val)])

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
        return _Raw("subckt", self._pos(c[0]), dict(name=words[0], ports=tuple(words[1:]), params=kv))

    def ends(self, c):
        return _Raw("ends", self._pos(c[0]), dict(name=str(c[1]) if len(c) > 1 else None))

    def model(self, c):
        t, kv = _split(c)
        return _Raw("model", self._pos(c[0]), dict(name=str(t[1]), type=str(t[2]), params=kv))

    def param(self, c):
        return _Raw("param", self._pos(c[0]), dict(params=[(str(k), v) for k, v in zip(c[1::2], c[2::2])]))

    def include(self, c):
        path = str(c[1])
        return _Raw("include", self._pos(c[0]), dict(path=path[1:-1] if path[0] in "'\"" else path))

    def node_voltage(self, c):
        return (c[1], c[2])

    def nodeset(self, c):
        return _Raw(str(c[0])[1:].lower(), self._pos(c[0]), dict(values=c[1:]))

    ic = nodeset

    def option(self, c):
        return (str(c[0]), (str(c[1]) if c[1].__class__ is lark.Token else c[1]) if len(c) > 1 else None)

    def options(self, c):
        return _Raw("options", self._pos(c[0]), dict(options=c[1:]))

    def _analysis(self, c):
        args = [str(a).lower() if isinstance(a, lark.Token) else a for a in c[1:]]  # a source name, uic
        return _Raw("analysis", self._pos(c[0]), dict(name=str(c[0])[1:].lower(), args=args))

    op = tran = dc = _analysis

    def control(self, c):
        return _Raw("skipped", self._pos(c[0]), dict(name="control", text=str(c[0])))

    def unterminated_control(self, c):
        self.report(NetlistSyntaxError, ".control block without .endc", self._pos(c[0]))

    def ignored_dot(self, c):
        return _Raw("skipped", self._pos(c[0]), dict(name=str(c[0])[1:].lower(), text=" ".join(map(str, c[1:]))))

    def unsupported_dot(self, c):
        self.report(UnsupportedNetlistError, f"'{c[0]}' is outside the supported subset", self._pos(c[0]))

    def unknown_dot(self, c):
        self.report(NetlistSyntaxError, f"unknown dot-command '{c[0]}'", self._pos(c[0]))


# -- expressions ({...}, '...', .param values) ---------------------------------------
_FUNCS = {"min": min, "max": max, "abs": abs, "sqrt": math.sqrt, "exp": math.exp, "ln": math.log,
          "log": math.log, "log10": math.log10, "pow": math.pow, "sin": math.sin, "cos": math.cos,
          "tan": math.tan, "atan": math.atan, "tanh": math.tanh, "floor": math.floor, "ceil": math.ceil}
_BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / b, "pow": lambda a, b: a ** b}


class _ExprError(Exception):
    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.column = column


def _first_column(tree) -> int:
    return tree.column if isinstance(tree, lark.Token) else tree.meta.column


def _evaluate(tree, scope: dict[str, float]) -> float:
    kind, c = tree.data, tree.children
    if kind == "number":
        return spice_number(str(c[0]))
    if kind == "name":
        if str(c[0]).lower() not in scope:
            raise _ExprError(f"unknown parameter '{c[0]}'", c[0].column)
        return scope[str(c[0]).lower()]
    if kind == "neg":
        return -_evaluate(c[0], scope)
    args = [_evaluate(a, scope) for a in (c[1:] if kind == "call" else c)]
    try:
        if kind == "call":
            if str(c[0]).lower() not in _FUNCS:
                raise _ExprError(f"unknown function '{c[0]}' (known: {', '.join(sorted(_FUNCS))})", c[0].column)
            return float(_FUNCS[str(c[0]).lower()](*args))
        return float(_BINARY[kind](*args))
    except (ArithmeticError, ValueError, TypeError) as e:
        raise _ExprError(f"cannot evaluate: {e}", _first_column(tree)) from None


# -- raw statements -> Netlist ---------------------------------------------------------
class _Builder:
    """Parses files, splices .include, pairs .subckt/.ends, evaluates values."""

    def __init__(self):
        self.sources: dict[str, list[str]] = {}  # file label -> its lines, for error excerpts
        self.includes: list[str] = []

    def error(self, cls, message: str, pos: Pos | None):
        line = None
        if pos is not None and pos.file in self.sources and 0 < pos.line <= len(self.sources[pos.file]):
            line = self.sources[pos.file][pos.line - 1]
        raise cls(message, pos.file if pos else None, pos.line if pos else None,
                  pos.column if pos else None, line)

    # parse one file (or text) and everything it includes
    def statements(self, text: str, label: str, base: Path, chain: tuple[Path, ...], title_line: bool):
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.sources[label] = text.split("\n")
        if title_line:  # line 1 is the title, whatever it says: blank it, keep later positions
            text = text[text.index("\n"):] if "\n" in text else ""
        try:
            tree = _parser().parse(text + "\n", start="netlist")
            raws = _ToRaw(label, self.error).transform(tree)
        except UnexpectedInput as e:
            spice_errors.raise_syntax_error(e, label, self.sources[label])
        except VisitError as e:
            raise e.orig_exc from None
        out = []
        for r in raws:
            if r.kind != "include":
                out.append(r)
                continue
            path = base / r.fields["path"]
            real = path.resolve()
            if real in chain:
                cycle = " -> ".join(p.name for p in chain[chain.index(real):] + (real,))
                self.error(NetlistSyntaxError, f".include cycle: {cycle}", r.pos)
            try:
                inc_text = path.read_text()
            except OSError as e:
                self.error(NetlistSyntaxError, f"cannot read include file '{path}': {e.strerror}", r.pos)
            self.includes.append(str(path))
            out.extend(self.statements(inc_text, str(path), path.parent, chain + (real,), title_line=False))
        return out

    def value(self, tok, scope, what="value") -> float:
        text, pos = str(tok), Pos(self._file, tok.line, tok.column)
        try:
            if text[0] in "{'" or not re.fullmatch(r"[+-]?[\d.][^=]*", text):
                inner, off = (text[1:-1], 1) if text[0] in "{'" else (text, 0)
                tree = _parser().parse(inner, start="expression")
                v = _evaluate(tree, scope)
            else:
                v = spice_number(text)
        except UnexpectedInput as e:
            self.error(NetlistSyntaxError, f"bad expression '{text}' in {what}",
                       dataclasses.replace(pos, column=pos.column + off + e.column - 1))
        except _ExprError as e:
            self.error(NetlistSyntaxError, f"{e} in {what} '{text}'",
                       dataclasses.replace(pos, column=pos.column + off + e.column - 1))
        except ValueError as e:
            self.error(NetlistSyntaxError, str(e), pos)
        if not math.isfinite(v):
            self.error(NetlistSyntaxError, f"{what} '{text}' is not a finite number", pos)
        return v

    def kv(self, pairs, scope, what):
        return {str(k).lower(): self.value(v, scope, f"{what} {k}") for k, v in pairs}

    def element(self, r: _Raw, scope) -> Element:
        f = dict(r.fields)
        self._file = r.pos.file
        name = f["name"]
        if f["value"] is not None:
            f["value"] = self.value(f["value"], scope, f"the value of {name}")
        elif f["kind"] in "VI":
            f["value"] = 0.0  # as ngspice: a source without a DC value is 0
        f["params"] = self.kv(f["params"], scope, name)
        for key in ("ac", "waveform"):
            if f.get(key) is not None:
                head = f[key][:1] if key == "waveform" else []
                vals = tuple(self.value(t, scope, f"{key} of {name}") for t in f[key][len(head):])
                f[key] = (head[0], vals) if head else vals
        return Element(pos=r.pos, **f)

    def build(self, raws: list[_Raw], title: str, label: str) -> Netlist:
        top, subckts, bodies, open_sub = [], {}, {}, None
        for r in raws:  # pair .subckt/.ends first: values inside need the subckt's scope
            if r.kind == "subckt":
                if open_sub is not None:
                    self.error(UnsupportedNetlistError, f"nested .subckt '{r.fields['name']}' inside "
                               f"'{open_sub.fields['name']}' (opened at line {open_sub.pos.line})", r.pos)
                if r.fields["name"].lower() in bodies:
                    self.error(NetlistSyntaxError, f"subcircuit '{r.fields['name']}' defined twice", r.pos)
                open_sub, bodies[r.fields["name"].lower()] = r, []
            elif r.kind == "ends":
                if open_sub is None:
                    self.error(NetlistSyntaxError, ".ends without a .subckt", r.pos)
                name = r.fields["name"]
                if name is not None and name.lower() != open_sub.fields["name"].lower():
                    self.error(NetlistSyntaxError, f".ends {name} closes .subckt '{open_sub.fields['name']}' "
                               f"(line {open_sub.pos.line})", r.pos)
                open_sub = None
            elif open_sub is not None:
                if r.kind not in ("element", "param", "model"):
                    self.error(UnsupportedNetlistError, f"'.{r.fields.get('name', r.kind)}' inside .subckt "
                               f"'{open_sub.fields['name']}': only elements, .param and .model", r.pos)
                bodies[open_sub.fields["name"].lower()].append(r)
            else:
                top.append(r)
        if open_sub is not None:
            self.error(NetlistSyntaxError, f"unterminated .subckt '{open_sub.fields['name']}' (no .ends)",
                       open_sub.pos)

        scope: dict[str, float] = {}
        for r in top:  # .param first, in order: SPICE evaluates them before element values
            if r.kind == "param":
                self._file = r.pos.file
                for k, v in r.fields["params"]:
                    scope[str(k).lower()] = self.value(v, scope, f"parameter {k}")
        net = Netlist(title, label, [], {}, {}, dict(scope), {}, [], [], [], [], self.includes)
        for r in raws:
            if r.kind == "subckt":
                self._file = r.pos.file
                sub_scope = dict(scope, **self.kv(r.fields["params"], scope, f"subckt {r.fields['name']}"))
                params = {k: sub_scope[k] for k in sub_scope if k not in scope or k in
                          {str(p).lower() for p, _ in r.fields["params"]}}
                body = bodies[r.fields["name"].lower()]
                for b in body:
                    if b.kind == "param":
                        self._file = b.pos.file
                        for k, v in b.fields["params"]:
                            sub_scope[str(k).lower()] = params[str(k).lower()] = self.value(v, sub_scope, k)
                els = self._elements([b for b in body if b.kind == "element"], sub_scope)
                self._models([b for b in body if b.kind == "model"], sub_scope, net.models)
                subckts[r.fields["name"].lower()] = Subckt(r.fields["name"], r.fields["ports"], params, els, r.pos)
        net.subckts = subckts
        net.elements = self._elements([r for r in top if r.kind == "element"], scope)
        self._models([r for r in top if r.kind == "model"], scope, net.models)
        for r in top:
            self._file = r.pos.file
            if r.kind in ("nodeset", "ic"):
                getattr(net, r.kind).extend(NodeVoltage(str(n), self.value(v, scope, f"v({n})"),
                                                        Pos(r.pos.file, n.line, n.column))
                                            for n, v in r.fields["values"])
            elif r.kind == "options":
                for k, v in r.fields["options"]:
                    net.options[str(k).lower()] = (None if v is None else str(v) if v.type == "WORD"
                                                   else self.value(v, scope, f"option {k}"))
            elif r.kind == "analysis":
                args = tuple(str(a) if a.type == "WORD" else a.type == "UIC_KW" and "uic" or
                             self.value(a, scope, f".{r.fields['name']} argument") for a in r.fields["args"])
                net.analyses.append(Directive(r.fields["name"], args, r.pos))
            elif r.kind == "skipped":
                net.skipped.append(Directive(r.fields["name"], (r.fields["text"],), r.pos))
        return net

    def _elements(self, raws, scope) -> list[Element]:
        seen: dict[str, Pos] = {}
        out = []
        for r in raws:
            key = r.fields["name"].lower()
            if key in seen:
                self.error(NetlistSyntaxError, f"duplicate element name '{r.fields['name']}' (first defined at "
                           f"{seen[key]})", r.pos)
            seen[key] = r.pos
            out.append(self.element(r, scope))
        return out

    def _models(self, raws, scope, models):
        for r in raws:
            self._file = r.pos.file
            name = r.fields["name"]
            if name.lower() in models:
                self.error(NetlistSyntaxError, f"model '{name}' defined twice", r.pos)
            models[name.lower()] = Model(name, r.fields["type"], self.kv(r.fields["params"], scope, name), r.pos)


def parse_netlist(source, *, base_dir=None, name: str | None = None) -> Netlist:
    """Parse a netlist file (a path) or text (a str with a newline) into records.

    ``.include`` paths resolve against the including file's folder (text: ``base_dir``,
    default the current folder). ``name`` labels text in error messages.
    """
    builder = _Builder()
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as e:
            raise NetlistSyntaxError(f"cannot read netlist: {e.strerror}", str(path)) from None
        label, base, chain = str(path), path.parent, (path.resolve(),)
    else:
        text, label = str(source), name or "<netlist>"
        base, chain = Path(base_dir) if base_dir is not None else Path.cwd(), ()
    raws = builder.statements(text, label, base, chain, title_line=True)
    title = text.replace("\r\n", "\n").split("\n", 1)[0]
    return builder.build(raws, title, label)
