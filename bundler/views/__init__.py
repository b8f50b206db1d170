"""Pure renderers of bundle data (no I/O)."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with its control characters (line breaks, tabs, terminal escapes) shown escaped as Python writes them
    in a string (``\\n``, ``\\x1b``): what a stranger's bundle holds must not forge lines or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
