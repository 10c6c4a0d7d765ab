"""SPICE text -> element records (grammar: spice_subset.lark, docs/netlist-reader.md).

This layer knows SPICE, not networks: reader.py maps its records to an eqprop Network.
It splices ``.include`` files, pairs ``.subckt``/``.ends``, evaluates ``.param`` and
``{expression}`` values, and refuses duplicates. Every record keeps file, line and
column so that any later error can point at the text; errors are ``NetlistError``
subclasses, lark's own exceptions never reach a caller.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .spice_errors import NetlistSyntaxError, UnsupportedNetlistError
from .spice_expr import evaluate
from .spice_text import decode
from .spice_tree import Pos, Raw, Val, statements

__all__ = ["Directive", "Element", "Model", "Netlist", "NodeVoltage", "Pos", "Subckt", "parse_netlist"]


@dataclasses.dataclass(eq=False)
class Element:
    """One element line. ``value``: R ohms, C farads, G/E/F gain, V/I DC value, D area."""

    name: str  # as written; SPICE compares names case-insensitively
    kind: str  # its letter, upper case: R C G E F B V I D X (and M Q J inside a .subckt: kept as text, no nodes)
    nodes: tuple[str, ...]
    value: float | None
    pos: Pos
    params: dict[str, float] = dataclasses.field(default_factory=dict)  # key=value, keys lower case
    ref: str | None = None  # F: controlling V source, D (and R, C if given): model, X: subcircuit
    expr: str | None = None  # B: the v=/i= expression, G/E: the value=/cur=/vol= expression (text)
    expr_kind: str | None = None  # "v" | "i" (B), "value" | "cur" | "vol" (G/E), "text" (M Q J: all after the name)
    ac: tuple[float, ...] | None = None  # V/I: (magnitude[, phase]); a bare "ac" is (1.0,), as in ngspice
    waveform: tuple[str, tuple[float, ...]] | None = None  # V/I: e.g. ("pulse", args)
    flags: tuple[str, ...] = ()  # D: "off"


@dataclasses.dataclass(eq=False)
class Subckt:
    name: str
    ports: tuple[str, ...]
    params: dict[str, float]  # defaults (and local .param); the body was evaluated with them
    elements: list[Element]
    pos: Pos


@dataclasses.dataclass(eq=False)
class Model:
    name: str
    type: str
    params: dict[str, float | str | None]  # lower-case keys; flags (nchan) map to None, words (mfg=IR) to str
    pos: Pos


@dataclasses.dataclass(frozen=True)
class NodeVoltage:
    """One ``v(node)=value`` of a ``.nodeset`` or ``.ic`` line."""

    node: str
    value: float
    pos: Pos


@dataclasses.dataclass(eq=False)
class Directive:
    """An analysis (op, tran, dc) or a skipped command (control, save, print, ...)."""

    name: str
    args: tuple  # floats; source names and "uic" as lower-case str; skipped: (text,)
    pos: Pos


@dataclasses.dataclass(eq=False)
class Netlist:
    title: str  # line 1, verbatim
    file: str
    elements: list[Element]  # top level, in text order (included files spliced in)
    subckts: dict[str, Subckt]  # lower-case name ->
    models: dict[str, Model]  # lower-case name ->
    params: dict[str, float]  # global .param values, lower-case names
    options: dict[str, float | str | None]  # .options; flags map to None
    nodeset: list[NodeVoltage]
    ic: list[NodeVoltage]
    analyses: list[Directive]
    skipped: list[Directive]  # .control blocks, .save/.print/...: kept, not interpreted
    includes: list[str]  # files read through .include, in order
    lines: dict[str, list[str]] = dataclasses.field(default_factory=dict, repr=False)  # file -> its lines

    def error(self, cls, message: str, pos: Pos | None):
        """Raise ``cls`` (a NetlistError) at ``pos``, showing that line with a caret."""
        lines = self.lines.get(pos.file, []) if pos else []
        line = lines[pos.line - 1] if pos and 0 < pos.line <= len(lines) else None
        raise cls(message, pos.file if pos else None, pos.line if pos else None, pos.column if pos else None, line)

    def element(self, name: str) -> Element:
        """Top-level element by name (case-insensitive, as in SPICE)."""
        for e in self.elements:
            if e.name.lower() == name.lower():
                return e
        raise KeyError(name)


_MAX_INCLUDE_DEPTH = 64  # .include files within .include files (cycles are refused anyway)


def _read_file(path: Path) -> bytes:
    """A regular file's bytes (not a device or fifo: /dev/zero would never end)."""
    if path.exists() and not path.is_file():
        raise OSError(0, "not a regular file")
    return path.read_bytes()


class _Builder:
    """Reads files, splices includes, then evaluates everything in .param scope."""

    def __init__(self):
        self.lines: dict[str, list[str]] = {}  # file label -> its lines, for error excerpts
        self.includes: list[str] = []
        self.title = ""
        self.model_refs: list[tuple[Element, Pos, dict]] = []  # R/C elements naming a model: where, in what scope

    def error(self, cls, message: str, pos: Pos | None):
        Netlist.error(self, cls, message, pos)

    def read(self, data: bytes | str, label: str, base: Path, chain: tuple[Path, ...], title_line: bool) -> list[Raw]:
        """Statements of one file and, in place of each .include, those of the included file."""
        text = decode(data, label, title_line=title_line)
        self.lines[label] = text.split("\n")
        if title_line:  # line 1 is the title whatever it says: blank it, keeping later positions
            self.title = self.lines[label][0]
            text = text[len(self.title):]
        out = []
        for r in statements(text + "\n", label, self.error):
            if r.kind != "include":
                out.append(r)
                continue
            path = base / r.fields["path"]
            try:
                real = path.resolve()
            except (OSError, ValueError, RuntimeError) as e:  # a NUL in the name, a symlink loop
                self.error(NetlistSyntaxError, f"cannot read include file '{path}': {e}", r.pos)
            if real in chain:
                cycle = " -> ".join(p.name for p in chain[chain.index(real):] + (real,))
                self.error(NetlistSyntaxError, f".include cycle: {cycle}", r.pos)
            if len(chain) >= _MAX_INCLUDE_DEPTH:
                self.error(NetlistSyntaxError, f".include nested deeper than {_MAX_INCLUDE_DEPTH} files", r.pos)
            try:
                inc_data = _read_file(path)
            except OSError as e:
                self.error(NetlistSyntaxError, f"cannot read include file '{path}': {e.strerror or e}", r.pos)
            self.includes.append(str(path))
            out.extend(self.read(inc_data, str(path), path.parent, chain + (real,), title_line=False))
        return out

    def value(self, val, scope, what) -> float:
        return evaluate(val, scope, what, self.error)

    def assignments(self, pairs, scope, what) -> dict[str, float]:
        return {k.lower(): self.value(v, scope, f"{what} {k}") for k, v in pairs}

    def model_params(self, pairs, scope, what) -> dict[str, float | str | None]:
        return {k.lower(): self.value(v, scope, f"{what} {k}") if isinstance(v, Val) else v for k, v in pairs}

    def params(self, raws, scope) -> None:
        """.param lines in text order, each seeing the ones before it (as ngspice)."""
        for r in raws:
            if r.kind == "param":
                for k, v in r.fields["params"]:
                    scope[k.lower()] = self.value(v, scope, f"parameter {k}")

    def elements(self, raws, scope) -> list[Element]:
        seen: dict[str, Pos] = {}
        out = []
        for r in (r for r in raws if r.kind == "element"):
            f = dict(r.fields)
            name = f["name"]
            if name.lower() in seen:
                self.error(NetlistSyntaxError, f"duplicate element name '{name}' (first at {seen[name.lower()]})",
                           r.pos)
            seen[name.lower()] = r.pos
            if f["value"] is not None:
                f["value"] = self.value(f["value"], scope, f"the value of {name}")
            elif f["kind"] in "VI":
                f["value"] = 0.0  # as ngspice: a source without a DC value holds 0
            f["params"] = self.assignments(f["params"], scope, name)
            if f.get("ac") is not None:
                f["ac"] = tuple(self.value(v, scope, f"ac of {name}") for v in f["ac"][1:]) or (1.0,)
            if f.get("waveform") is not None:
                kind, *args = f["waveform"]
                f["waveform"] = (str(kind), tuple(self.value(v, scope, f"{kind} of {name}") for v in args))
            ref_pos = f.pop("ref_pos", None)
            out.append(Element(pos=r.pos, **f))
            if ref_pos is not None:
                self.model_refs.append((out[-1], ref_pos, scope))
        return out

    def check_models(self, models: dict) -> None:
        """R and C elements that name a model need it in the netlist (ngspice refuses them too);
        without a value, the name may instead be a .param (``R2 a b rval``: ngspice substitutes it)."""
        for e, pos, scope in self.model_refs:
            if e.ref.lower() in models:
                if e.value is None:
                    self.error(UnsupportedNetlistError, f"'{e.name}' takes its value from model '{e.ref}' (no value "
                               "given): outside the supported subset, give the value", pos)
            elif e.value is None and e.ref.lower() in scope:
                e.value, e.ref = scope[e.ref.lower()], None
            else:
                self.error(NetlistSyntaxError, f"unknown model '{e.ref}' of {e.name} (no .model {e.ref} in the "
                           f"netlist{'' if e.value is not None else ', and no .param of that name'})", pos)

    def models(self, raws, scope, models: dict) -> None:
        for r in (r for r in raws if r.kind == "model"):
            name = r.fields["name"]
            if name.lower() in models:
                self.error(NetlistSyntaxError, f"model '{name}' defined twice (first at {models[name.lower()].pos})",
                           r.pos)
            models[name.lower()] = Model(name, r.fields["type"], self.model_params(r.fields["params"], scope, name),
                                         r.pos)

    def split_subckts(self, raws) -> tuple[list[Raw], dict[str, tuple[Raw, list[Raw]]]]:
        """(top-level statements, lower-case name -> (.subckt line, body)); pairs .subckt/.ends."""
        top, subs, current = [], {}, None
        for r in raws:
            if r.kind == "subckt":
                name = r.fields["name"]
                if current is not None:
                    self.error(UnsupportedNetlistError, f"nested .subckt '{name}' inside '{current.fields['name']}' "
                               f"(opened at line {current.pos.line})", r.pos)
                if name.lower() in subs:
                    self.error(NetlistSyntaxError, f"subcircuit '{name}' defined twice "
                               f"(first at {subs[name.lower()][0].pos})", r.pos)
                current, subs[name.lower()] = r, (r, [])
            elif r.kind == "ends":
                if current is None:
                    self.error(NetlistSyntaxError, ".ends without a .subckt", r.pos)
                name = r.fields["name"]
                if name is not None and name.lower() != current.fields["name"].lower():
                    self.error(NetlistSyntaxError, f".ends {name} does not close .subckt '{current.fields['name']}' "
                               f"(opened at line {current.pos.line})", r.pos)
                current = None
            elif current is None:
                top.append(r)
            elif r.kind in ("element", "param", "model"):
                subs[current.fields["name"].lower()][1].append(r)
            else:
                self.error(UnsupportedNetlistError, f"{r.kind} line inside .subckt '{current.fields['name']}' "
                           f"(a subcircuit holds elements, .param and .model only)", r.pos)
        if current is not None:
            self.error(NetlistSyntaxError, f"unterminated .subckt '{current.fields['name']}' (no .ends)", current.pos)
        return top, subs

    def build(self, raws: list[Raw], title: str, label: str) -> Netlist:
        top, subs = self.split_subckts(raws)
        scope: dict[str, float] = {}
        self.params(top, scope)  # all .param first: SPICE evaluates them before element values
        net = Netlist(title, label, self.elements(top, scope), {}, {}, dict(scope), {}, [], [], [], [],
                      self.includes, self.lines)
        self.models(top, scope, net.models)
        for key, (head, body) in subs.items():
            defaults = self.assignments(head.fields["params"], scope, f"subckt {head.fields['name']}")
            local = dict(scope, **defaults)
            self.params(body, local)
            own = {k: v for k, v in local.items() if k in defaults or k not in scope or v != scope[k]}
            net.subckts[key] = Subckt(head.fields["name"], head.fields["ports"], own, self.elements(body, local),
                                      head.pos)
            self.models(body, local, net.models)
        self.check_models(net.models)
        for r in top:
            if r.kind in ("nodeset", "ic"):
                getattr(net, r.kind).extend(
                    NodeVoltage(str(n), self.value(v, scope, f"v({n})"), Pos(r.pos.file, n.line, n.column))
                    for n, v in r.fields["values"])
            elif r.kind == "options":
                for k, v in r.fields["options"]:
                    net.options[k.lower()] = v if v is None or isinstance(v, str) else self.value(v, scope, k)
            elif r.kind == "analysis":
                args = tuple(a if isinstance(a, str) else self.value(a, scope, f".{r.fields['name']} argument")
                             for a in r.fields["args"])
                net.analyses.append(Directive(r.fields["name"], args, r.pos))
            elif r.kind == "skipped":
                net.skipped.append(Directive(r.fields["name"], (r.fields["text"],), r.pos))
        return net


def parse_netlist(source, *, base_dir=None, name: str | None = None) -> Netlist:
    """Parse a netlist file (a ``Path``, or a str without a newline) or its text (a str with a
    newline, or ``bytes``) into records.

    ``.include`` paths resolve against the including file's folder (for text: ``base_dir``,
    default the current folder). ``name`` labels text in error messages (default
    ``<netlist>``). Raises ``NetlistSyntaxError`` / ``UnsupportedNetlistError``.
    """
    builder = _Builder()
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        try:
            data = _read_file(path)
        except (OSError, ValueError) as e:  # ValueError: a NUL in the path
            raise NetlistSyntaxError(f"cannot read netlist: {getattr(e, 'strerror', None) or e}", str(path)) from None
        label, base, chain = name or str(path), path.parent, (path.resolve(),)
    else:
        data = bytes(source) if isinstance(source, (bytes, bytearray)) else str(source)
        label = name or "<netlist>"
        base, chain = Path(base_dir) if base_dir is not None else Path.cwd(), ()
    raws = builder.read(data, label, base, chain, title_line=True)
    return builder.build(raws, builder.title, label)
