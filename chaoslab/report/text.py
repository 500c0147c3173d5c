"""Text that goes into XML, HTML or Markdown, made valid for that format.

Names, errors and outputs in a journal are user- or system-controlled: a control
character makes XML unparseable (XML 1.0 forbids most of them even escaped), a lone
surrogate (JSON allows ``\\ud800``) cannot be encoded as UTF-8 at all, and HTML and
Markdown readers treat C0/C1 controls as errors. Each is shown instead as a visible
escape (``\\x07``, ``\\ud800``), so nothing is lost and every report stays valid.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

# XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# HTML and Markdown: C0 controls but tab/newline/CR, DEL and C1, surrogates, U+FFFE/U+FFFF
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def xml_text(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold shown as an escape."""
    return _NOT_XML.sub(_visible, text)


def safe_text(text: str) -> str:
    """``text`` without control characters or lone surrogates (HTML, Markdown)."""
    return _NOT_TEXT.sub(_visible, text)


def safe_output[**P](render: Callable[P, str]) -> Callable[P, str]:
    """Decorate a renderer of HTML or Markdown: what it returns is made valid text."""

    @functools.wraps(render)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        return safe_text(render(*args, **kwargs))

    return wrapper


def xml_tree(root: ET.Element) -> None:
    """Make every text, tail, attribute name and value of ``root``'s tree valid XML."""
    for el in root.iter():
        if el.text:
            el.text = xml_text(el.text)
        if el.tail:
            el.tail = xml_text(el.tail)
        if el.attrib:
            el.attrib = {xml_text(k): xml_text(v) for k, v in el.attrib.items()}
