"""Redaction of a Kubernetes list document one item at a time.

Decoding a whole list to redact it held all of it as Python objects: the pod list of 22,000 pods (67 MB of JSON)
took a redaction process to 450 MB, the largest process of a 1,000-node collection. Here the list's text is walked
with the standard library's raw decoder, one item decoded, redacted and dropped at a time; an item that changed is
re-encoded in place and every other byte stays the API server's. The result decodes to exactly what
:func:`bundler.redact.redact_kubernetes_list` makes of the decoded list (tests/test_redact_lists.py).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any
import orjson

from bundler.redact import redact_list_item

__all__ = ["redact_list_text"]

_SPACE = re.compile(r"[ \t\n\r]*")
# The kinds whose objects redact_kubernetes_object treats by kind; items of any other kind are redacted alike.
_KINDS_REDACTED_BY_KIND = frozenset({"ConfigMap", "Secret"})


def _not_json(constant: str) -> None:
    raise NotAList(f"{constant} is not JSON")  # the json module would take NaN and Infinity; orjson and we do not


_DECODER = json.JSONDecoder(parse_constant=_not_json)


class NotAList(ValueError):
    """Not a JSON object with an ``items`` array (or not JSON at all): the caller redacts it another way."""


class _KindAfterItems(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def redact_list_text(data: bytes) -> tuple[bytes, Counter[str]]:
    """Redact the Kubernetes list ``data`` (JSON text), item by item. Returns ``data`` itself when nothing was
    redacted. Raises :class:`NotAList` for anything that is not one JSON object holding an ``items`` array; such
    text is for the caller to redact another way."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAList("not UTF-8") from None
    walk = _Walk(text)
    try:
        try:
            walk.document()
        except _KindAfterItems as late:  # sorted keys (kubectl's output): once more, knowing the kind
            walk = _Walk(text, late.kind)
            walk.document()
    except (ValueError, RecursionError, orjson.JSONEncodeError) as exc:
        raise NotAList(str(exc)) from None
    walk.edits.append((walk.copied, len(text), None))
    if not walk.counts:
        return data, walk.counts
    if text.isascii():  # positions in the text are positions in data: the kept stretches are not copied
        view = memoryview(data)
        pieces: list[Any] = []
        for start, end, new in walk.edits:
            pieces.append(view[start:end] if new is None else new.encode())
        return b"".join(pieces), walk.counts
    return "".join(text[start:end] if new is None else new for start, end, new in walk.edits).encode(), walk.counts


class _Walk:
    """One pass over the top level of a list document; items are redacted as they are met."""

    def __init__(self, text: str, kind: str | None = None) -> None:
        self.text = text
        self.counts: Counter[str] = Counter()
        # the output as stretches of the text, (start, end, None), and re-encoded items, (start, end, json)
        self.edits: list[tuple[int, int, str | None]] = []
        self.copied = 0  # the text before this is in edits
        self.kind = kind  # of the items, from the list's kind

    def document(self) -> None:
        text = self.text
        pos = _skip(text, 0)
        if not text.startswith("{", pos):
            raise NotAList("not an object")
        pos = _skip(text, pos + 1)
        seen_items = False
        first = True
        while not text.startswith("}", pos):
            if not first:
                pos = _skip(text, _expect(text, pos, ","))
            first = False
            key, pos = _DECODER.raw_decode(text, pos)
            if not isinstance(key, str):
                raise NotAList("a key that is not a string")
            pos = _skip(text, _expect(text, _skip(text, pos), ":"))
            if key == "items":
                if seen_items or not text.startswith("[", pos):
                    raise NotAList("items is not one array")
                seen_items = True
                pos = self.items(pos)
            else:
                value, pos = _DECODER.raw_decode(text, pos)
                if key == "kind" and isinstance(value, str):
                    kind = value[: -len("List")] if value.endswith("List") and len(value) > 4 else None
                    if seen_items and kind != self.kind and kind in _KINDS_REDACTED_BY_KIND:
                        raise _KindAfterItems(kind)  # its items were redacted without knowing it
                    self.kind = kind
            pos = _skip(text, pos)
        if not seen_items:
            raise NotAList("no items array")
        if _skip(text, pos + 1) != len(text):
            raise NotAList("text after the document")

    def items(self, pos: int) -> int:
        """Redact each item of the array at ``pos``; the end of the array."""
        text = self.text
        pos = _skip(text, pos + 1)
        if text.startswith("]", pos):
            return pos + 1
        while True:
            item, end = _DECODER.raw_decode(text, pos)
            if isinstance(item, dict):
                item_counts = redact_list_item(item, self.kind)
                if item_counts:
                    self.counts.update(item_counts)
                    self.edits.append((self.copied, pos, None))
                    self.edits.append((pos, end, orjson.dumps(item).decode()))
                    self.copied = end
            pos = _skip(text, end)
            if text.startswith("]", pos):
                return pos + 1
            pos = _skip(text, _expect(text, pos, ","))


def _expect(text: str, pos: int, what: str) -> int:
    if not text.startswith(what, pos):
        raise NotAList(f"expected {what!r} at {pos}")
    return pos + 1


def _skip(text: str, pos: int) -> int:
    m = _SPACE.match(text, pos)
    return m.end() if m else pos
