"""Values: SPICE numbers with scale factors, and ``{expression}`` arithmetic.

``spice_number`` reads one number field; ``evaluate`` gives a value as written (number,
``{expr}``, ``'expr'`` or an unbraced ``.param`` expression) its float over a scope of
parameters. Expressions are evaluated with an explicit stack, not by recursion, so a
sum of 100,000 terms or 10,000 nested parentheses evaluates like any other (ngspice
evaluates them too); an expression can only be as long as its line.
"""
from __future__ import annotations

import dataclasses
import math
import re

import lark
from lark.exceptions import UnexpectedInput

from .spice_errors import NetlistSyntaxError, UnsupportedNetlistError, quoted
from .spice_tree import Val, parser

__all__ = ["RkmNumberError", "evaluate", "spice_number"]

_NUMBER = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:[eE]([+-]?[0-9]+))?([a-zA-Z][a-zA-Z0-9]*)?")
_SCALE = {"t": 12, "g": 9, "k": 3, "m": -3, "u": -6, "n": -9, "p": -12, "f": -15}


class RkmNumberError(ValueError):
    """A number with digits after its letters ("4k7"): RKM notation, outside the subset.

    ngspice 39 reads 4k7 as 4000 (it ignores what follows the scale factor), newer
    ngspice and the RKM convention (IEC 60062) as 4700: the reader refuses to guess."""


def spice_number(text: str) -> float:
    """'10kOhm' -> 10000.0: mantissa, exponent, scale factor, then letters SPICE ignores.

    The scale goes into the decimal exponent and the string through float() once, so the
    result is correctly rounded and a repr()-written number reads back bit for bit.
    Raises ValueError for a bad number, RkmNumberError for RKM notation ("4k7").
    """
    m = _NUMBER.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad number '{quoted(text)}'")
    mantissa, exp_text, letters = m.group(1), m.group(2) or "0", (m.group(3) or "").lower()
    if any(ch.isdigit() for ch in letters):
        raise RkmNumberError(f"RKM value '{quoted(text)}' (a digit after the scale factor or unit) is outside the "
                             "supported subset: ngspice 39 reads 4k7 as 4000, newer ngspice as 4700; write 4.7k")
    # an exponent of more than 9 digits gives 0 or inf anyway (int() would refuse > 4300 digits)
    exp = int(exp_text) if len(exp_text) <= 10 else (-1 if exp_text[0] == "-" else 1) * 10**9
    if letters.startswith("meg"):
        exp += 6
    elif letters.startswith("mil"):
        return float(f"{mantissa}e{exp}") * 25.4e-6
    elif letters[:1] in _SCALE:
        exp += _SCALE[letters[0]]
    return float(f"{mantissa}e{exp}")


def _pwr(x: float, y: float) -> float:
    return math.copysign(abs(x) ** y, x)


def _sgn(x: float) -> float:
    return float((x > 0) - (x < 0))


_FUNCS = {"min": min, "max": max, "abs": abs, "sqrt": math.sqrt, "exp": math.exp, "ln": math.log,
          "log": math.log, "log10": math.log10, "pow": math.pow, "pwr": _pwr, "sgn": _sgn, "sin": math.sin,
          "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
          "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh, "asinh": math.asinh, "acosh": math.acosh,
          "atanh": math.atanh, "floor": math.floor, "ceil": math.ceil}
_OPERATORS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
              "div": lambda a, b: a / b, "pow": math.pow, "neg": lambda a: -a}


class _ExprError(Exception):
    def __init__(self, message: str, column: int, cls=NetlistSyntaxError):
        super().__init__(message)
        self.column, self.cls = column, cls  # column within the expression text


def _column(tree) -> int:
    return tree.column if isinstance(tree, lark.Token) else tree.meta.column


def _leaf(node: lark.Tree, scope: dict[str, float]) -> float:
    token = node.children[0]
    if node.data == "number":
        try:
            return spice_number(str(token))
        except RkmNumberError as e:
            raise _ExprError(str(e), token.column, UnsupportedNetlistError) from None
        except ValueError as e:
            raise _ExprError(str(e), token.column) from None
    if str(token).lower() not in scope:
        raise _ExprError(f"unknown parameter '{token}'", token.column)
    return scope[str(token).lower()]


def _apply(node: lark.Tree, args: list[float]) -> float:
    kind = node.data
    if kind == "call":
        name = str(node.children[0]).lower()
        if name not in _FUNCS:
            raise _ExprError(f"unknown function '{node.children[0]}' (known: {', '.join(sorted(_FUNCS))})",
                             node.children[0].column)
        fn = _FUNCS[name]
    else:
        fn = _OPERATORS[kind]
    try:
        v = float(fn(*args))
    except (ArithmeticError, ValueError, TypeError) as e:
        raise _ExprError(f"cannot evaluate ({e})", _column(node)) from None
    if not math.isfinite(v):
        raise _ExprError("cannot evaluate (the result overflows)", _column(node))
    return v


def _evaluate(tree: lark.Tree, scope: dict[str, float]) -> float:
    """Post-order walk with an explicit stack: any depth, no recursion."""
    values: list[float] = []
    todo: list = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, tuple):  # (tree, argument count): its arguments are on top of values
            tree_node, n = node
            args = values[len(values) - n:]
            del values[len(values) - n:]
            values.append(_apply(tree_node, args))
        elif node.data in ("number", "name"):
            values.append(_leaf(node, scope))
        else:
            args = node.children[1:] if node.data == "call" else node.children
            todo.append((node, len(args)))
            todo.extend(reversed(args))
    return values[0]


def evaluate(val: Val, scope: dict[str, float], what: str, report) -> float:
    """The float a value stands for: a number, or an expression over ``scope`` (lower-case
    names). Errors point at the offending character inside the expression;
    ``report(cls, message, pos)`` raises."""
    text, shown = val.text, quoted(val.text)
    braced = text[:1] in ("{", "'")
    at = val.pos
    v = math.nan  # report() raises; this only keeps v defined for readers of the code
    if braced and (len(text) < 2 or text[-1] != ("}" if text[0] == "{" else "'")):
        report(NetlistSyntaxError, f"unclosed {text[0]} in {what}: {shown}", at)
    inner = text[1:-1] if braced else text
    try:
        if not braced and _NUMBER.fullmatch(text):
            v = spice_number(text)
        else:  # {expr}, 'expr', or an unbraced .param expression
            v = _evaluate(parser().parse(inner, start="expression"), scope)
    except RkmNumberError as e:
        report(UnsupportedNetlistError, f"{e} (in {what})", at)
    except UnexpectedInput as e:
        # lark puts the end of input at the last token; the caret belongs after it
        col = len(inner) + 1 if getattr(getattr(e, "token", None), "type", "$END") == "$END" else e.column
        report(NetlistSyntaxError, f"bad expression {shown} in {what}",
               dataclasses.replace(at, column=at.column + braced + col - 1))
    except _ExprError as e:
        report(e.cls, f"{e} in {what}: {shown}", dataclasses.replace(at, column=at.column + braced + e.column - 1))
    if not math.isfinite(v):
        report(NetlistSyntaxError, f"{what} is not a finite number: {shown}", at)
    return v
