"""User strings shown in the page as text, never as markup.

Label names, categories, file names, user names, review comments and error messages that echo them come from
people and imported files. The status line is Markdown (our own emphasis around them), the legend is HTML:
``md`` makes a string show literally in Markdown, ``html_text`` in HTML. Both replace characters that would
change how the text around them reads (bidirectional overrides and isolates, NUL, line breaks) by visible
stand-ins, and shorten very long strings for the screen (the store keeps them whole).
"""
from __future__ import annotations

import html
import re
from typing import Optional

SHOWN = 160  # characters of one string shown on the page
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
# what marks text up inside a line (a link, emphasis, code, a table); "_" only where it can open or close
# emphasis (snake_case names stay as they are)
_MD = re.compile(r"([\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")  # what marks a line up (a heading, quote, list)


def plain(text: object, shown: Optional[int] = SHOWN) -> str:
    """``text`` on one line, its invisible controls made visible, at most ``shown`` characters (None: all)."""
    s = str(text)
    s = _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", s)
    s = _CONTROL.sub(lambda m: f"<U+{ord(m.group()):04X}>", s.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))
    return s if shown is None or len(s) <= shown else s[:shown] + f"… ({len(s)} characters)"


def html_text(text: object) -> str:
    """``text`` for HTML, as text (quotes escaped too: safe inside an attribute)."""
    return html.escape(plain(text), quote=True)


def md(text: object, shown: Optional[int] = SHOWN) -> str:
    """``text`` for Markdown, shown literally: HTML's specials as entities, the characters that mark Markdown up
    escaped (inside a line; and at its start, where it might begin one). ``shown=None`` for a message that must
    be read whole (an error)."""
    s = _MD.sub(r"\\\1", plain(text, shown))
    s = _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2) if not m.group(2)[0].isdigit()
                        else m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], s)
    return html.escape(s, quote=False)

