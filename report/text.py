"""Label values as text a reader can see: control characters written as escapes."""

from __future__ import annotations

import re

__all__ = ["visible"]

# C0 and C1 controls and the line and paragraph separators: invisible, or (in SVG, which is XML)
# not allowed at all.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def visible(text: str) -> str:
    """'1.5.0\\n' -> '1.5.0\\\\x0a': one line, nothing hidden, valid in HTML and XML."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
