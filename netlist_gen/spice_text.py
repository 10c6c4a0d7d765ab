"""A netlist's bytes -> the text the grammar reads (UTF-8, byte-order mark, line ends).

Netlists are read as UTF-8. Real decks often carry a Latin-1 or CP1252 byte in a comment
(a "µ" in "* 10 µF"); ngspice never looks at comments, so neither does this reader:
bytes that are not UTF-8 are accepted where they are harmless (the title line, comment
lines, after an end-of-line comment marker, inside ``.control`` ... ``.endc``, after
``.end``) and shown there as U+FFFD. Anywhere else they would become part of a name or
a value, and the reader refuses them with the byte, file, line and column. The same
holds for lone surrogate code points in ``str`` input, for control characters (NUL...)
and for Unicode blanks that are no SPICE blank (a no-break space pasted from a web page):
SPICE separates fields with spaces and tabs only.
"""
from __future__ import annotations

import re
import unicodedata

from .spice_errors import NetlistSyntaxError

_SURROGATE = re.compile("[\ud800-\udfff]")
# what may stand only in comments: lone surrogates, control characters, and the characters
# str.isspace() calls blanks other than space, tab, form feed and line end
_BAD = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\xa0\u1680\u2000-\u200a\u2028\u2029\u202f"
                  "\u205f\u3000]")
# where an end-of-line comment starts (";", "$ " or " //", as the grammar's INLINE_COMMENT)
_INLINE = re.compile(r";|\$(?=[ \t\f]|$)|(?<![^ \t\f])//")
_CONTROL, _ENDC = re.compile(r"[ \t]*\.control\b", re.I), re.compile(r"[ \t]*\.endc\b", re.I)
_END = re.compile(r"[ \t]*\.end\b", re.I)


def decode(data: bytes | str, file: str, *, title_line: bool) -> str:
    """``data`` as text with ``\\n`` line ends and no byte-order mark.

    Raises NetlistSyntaxError at the first byte that is not UTF-8 (lone surrogate, control
    character, Unicode blank) outside the harmless places listed in the module docstring.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", "surrogateescape")  # bad bytes -> U+DC80..U+DCFF, one per byte
    else:
        text = data
    text = text.removeprefix("\ufeff")  # a byte-order mark would otherwise hide the header
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _BAD.search(text):
        _check_bad_characters(text, file, title_line)
        text = _SURROGATE.sub("\ufffd", text)
    return text


_CONTROL_BLANKS = {"\x0b": "vertical tab", "\x1c": "file separator", "\x1d": "group separator",
                   "\x1e": "record separator", "\x1f": "unit separator", "\x85": "next line"}


def _what(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return (f"byte 0x{code - 0xDC00:02X} is not UTF-8 text: netlists are read as UTF-8 (other bytes are "
                "accepted only in comments, the title line and .control blocks); re-save the file as UTF-8")
    if 0xD800 <= code <= 0xDFFF:
        return f"character U+{code:04X} (a lone surrogate) is not text"
    if ch.isspace():
        name = _CONTROL_BLANKS.get(ch) or unicodedata.name(ch, "a blank").lower()
        return f"character U+{code:04X} ({name}) is no SPICE blank: separate fields with spaces or tabs"
    return f"control character U+{code:04X} is not SPICE text (allowed only in comments)"


def _check_bad_characters(text: str, file: str, title_line: bool) -> None:
    in_control = False
    for number, line in enumerate(text.split("\n"), 1):
        if _END.match(line) and not in_control:
            return  # ngspice ignores whatever follows .end
        if _CONTROL.match(line):
            in_control = True
        harmless_from = 0 if in_control or (title_line and number == 1) or line.lstrip().startswith("*") else None
        if in_control and _ENDC.match(line):
            in_control = False
        bad = _BAD.search(line)
        if bad is None:
            continue
        if harmless_from is None:
            comment = _INLINE.search(line)
            harmless_from = comment.start() if comment else len(line) + 1
        if bad.start() < harmless_from:
            raise NetlistSyntaxError(_what(bad.group()), file, number, bad.start() + 1, _SURROGATE.sub("\ufffd", line))
