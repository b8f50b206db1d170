"""Reading values out of untrusted JSON (Kubernetes objects from a stranger's bundle) without tripping on types."""

from __future__ import annotations

from typing import Any

__all__ = ["dig", "dig_dict", "dig_list"]


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...`` when every step is an object holding the key, else None: a ``spec`` that is a list,
    a ``status`` that is a string or a missing ``metadata`` all give None instead of an exception."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def dig_dict(value: Any, *keys: str) -> dict[str, Any]:
    """:func:`dig`, or {} when that is not an object."""
    found = dig(value, *keys)
    return found if isinstance(found, dict) else {}


def dig_list(value: Any, *keys: str) -> list[Any]:
    """:func:`dig`, or [] when that is not a list."""
    found = dig(value, *keys)
    return found if isinstance(found, list) else []
