"""Redaction of big pretty-printed JSON documents, each distinct block of text once.

Every ztunnel holds every workload of the mesh, and ztunnels that agree write byte-identical ``workloads`` /
``services`` arrays (ztunnel pretty-prints its dump with sorted keys, formats.md 2.1). At 100 nodes collect fetched
1 GB of dumps holding a few MB of distinct text, and running the redactor's regexes over every byte was nine tenths
of collect's CPU. :class:`BlockRedactor` cuts a dump into blocks (the members of the top-level object, and the
elements of a top-level array when the array as a whole was not seen before), redacts each block it has not seen,
and remembers the outcome by digest. The result is byte for byte what :func:`bundler.redact.redact_bytes` makes of
the whole document (tests/test_redact_blocks.py checks that on the upstream dumps and on generated ones).

Why cutting is exact: every rule of :mod:`bundler.redact` looks no further than the line it matches on, except

* a base64 run, which continues on the next line when that line holds nothing but base64 (wrapped PEM bodies):
  blocks start at lines that begin with ``"`` or ``{`` after their indentation, which no base64 line does;
* the PEM rule (BEGIN and END armour lines, bodies across line breaks) and the ``private_key_id`` rule (its value may
  follow a line break). A document holding ``PRIVATE KEY`` or ``private_key_id`` anywhere is redacted whole.

Every block starts at the start of a line and ends with a line break (or the end of the document), so the look-behinds
and start-of-line checks of the rules see the same thing in a block as in the whole text.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable

from bundler.redact import redact_bytes

__all__ = ["BlockRedactor", "shared_block_redactor"]

# A member of the top-level object of a document pretty-printed with two spaces, and an element of a top-level array.
# (re finds a literal three times faster than bytes.find does here)
_MEMBER = re.compile(rb'\n  "')
_ELEMENT = re.compile(rb"\n    \{")
_PRETTY_OBJECT = b'{\n  "'
# Texts that make a rule reach across lines (see the module docstring).
_MULTILINE_RULE_WORDS = re.compile(rb"PRIVATE KEY|private_key_id")

# A member smaller than this is redacted as it is; a bigger one that was not seen whole is cut into its elements.
_CUT_MEMBERS_OVER = 64 * 1024
# Documents smaller than this gain nothing from the bookkeeping.
SMALLEST_DOCUMENT = 256 * 1024

Outcome = tuple[bytes | None, Counter[str]]  # the redacted block (None: unchanged) and the redactions per kind
_CLEAN: Outcome = (None, Counter())  # shared by every clean block (most of them): one Counter, not 100,000


class BlockRedactor:
    """Redacts documents block by block and remembers each block's outcome (by its SHA-256 digest).

    The memory is bounded: past ``max_blocks`` remembered blocks it starts afresh. Not thread-safe by contract, but
    a race only costs a block redacted twice: outcomes are pure functions of the block."""

    def __init__(self, max_blocks: int = 200_000, smallest_document: int = SMALLEST_DOCUMENT) -> None:
        self._seen: dict[bytes, Outcome] = {}
        self._max_blocks = max_blocks
        self._smallest_document = smallest_document
        self.blocks_redacted = 0  # blocks that went through the rules (the rest were remembered)

    def redact_bytes(self, data: bytes) -> tuple[bytes, Counter[str]]:
        """The same as :func:`bundler.redact.redact_bytes` (the same object back when nothing was redacted)."""
        if len(data) < self._smallest_document or not data.startswith(_PRETTY_OBJECT):
            return redact_bytes(data)
        try:
            new, counts = self._join(_cut(data, _MEMBER), self._member)
        except _RedactWhole:
            return redact_bytes(data)
        return (data if new is None else new), Counter(counts)  # a copy: remembered counts are shared

    def _member(self, member: bytes) -> Outcome:
        return self._remembered(member, lambda: self._join(_cut(member, _ELEMENT), self._element)
                                if len(member) > _CUT_MEMBERS_OVER else self._redact(member))

    def _element(self, element: bytes) -> Outcome:
        return self._remembered(element, lambda: self._redact(element))

    def _remembered(self, block: bytes, redact: Callable[[], Outcome]) -> Outcome:
        key = _digest(block)
        outcome = self._seen.get(key)
        if outcome is None:
            outcome = redact()
            if len(self._seen) >= self._max_blocks:
                self._seen.clear()
            self._seen[key] = outcome
        return outcome

    @staticmethod
    def _join(blocks: list[bytes], outcome_of: Callable[[bytes], Outcome]) -> Outcome:
        counts: Counter[str] = Counter()
        out: list[bytes] = []
        changed = False
        for block in blocks:
            new, c = outcome_of(block)
            if c:
                counts.update(c)
            if new is not None:
                changed = True
            out.append(block if new is None else new)
        if not changed and not counts:
            return _CLEAN
        return (b"".join(out) if changed else None), counts

    def _redact(self, block: bytes) -> Outcome:
        # Only blocks that meet the rules are looked at: a remembered block never held these words (a line break
        # is never inside them, so they cannot straddle two blocks).
        if _MULTILINE_RULE_WORDS.search(block):
            raise _RedactWhole
        self.blocks_redacted += 1
        new, counts = redact_bytes(block)
        if not counts:
            return _CLEAN
        return (None if new is block else new), counts


class _RedactWhole(Exception):
    """The document holds text that makes a rule reach across lines: it is redacted whole."""


def _digest(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()  # the fastest of hashlib's here (SHA extensions); collisions unheard of


def _cut(data: bytes, separator: re.Pattern[bytes]) -> list[bytes]:
    """``data`` cut before each line that starts with ``separator`` (its line break stays with the block before)."""
    blocks: list[bytes] = []
    start = 0
    for m in separator.finditer(data):
        blocks.append(data[start : m.start() + 1])
        start = m.start() + 1
    blocks.append(data[start:])
    return blocks


_shared: BlockRedactor | None = None


def shared_block_redactor() -> BlockRedactor:
    """The process's redactor: a redaction worker keeps what it learnt from one dump for the next."""
    global _shared
    if _shared is None:
        _shared = BlockRedactor()
    return _shared
