"""Suppressions: known findings an operator has accepted, read from a YAML file (``--suppress FILE``).

::

    # suppressions.yaml: a list (or a mapping with a "suppressions" list)
    - id: "collection-gaps/ztunnel-config-dump-missing"   # glob on "<analyzer>/<code>"; "<analyzer>" alone
      resource: "Pod/istio-system/ztunnel-*"              # optional glob on "Kind/namespace/name" ("Kind/name"),
      reason: "node drained during the collection"        #   or on the resource's node or ztunnel pod
      expires: 2026-12-31                                 # optional; the last day it applies (UTC)

A finding matches when its ``<analyzer>/<code>`` matches ``id`` (an ``id`` without ``/`` names every code of
that analyzer) and, if ``resource`` is given, at least one of its resources matches it. Matched findings are
left out of the results and listed under ``suppressed`` with the reason. A suppression whose ``expires`` day
has passed suppresses nothing and is reported as a ``suppression-expired`` warning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from bundler.analysis.api import Finding, Resource
from bundler.errors import BundleError

__all__ = ["Suppression", "SuppressionError", "first_match", "load_suppressions", "parse_suppressions"]

_KEYS = {"id", "resource", "reason", "expires"}


class SuppressionError(BundleError):
    """The suppressions file cannot be read or is malformed."""


@dataclass(frozen=True)
class Suppression:
    id: str
    reason: str
    resource: str | None = None
    expires: dt.date | None = None
    where: str = ""  # "<file>: entry N", for messages

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and self.expires < today

    def matches(self, finding: Finding) -> bool:
        if not self._matches_id(finding):
            return False
        if self.resource is None:
            return True
        return any(self._matches_resource(r) for r in finding.resources)

    def _matches_id(self, finding: Finding) -> bool:
        if "/" not in self.id:
            return fnmatchcase(finding.analyzer, self.id)
        return fnmatchcase(f"{finding.analyzer}/{finding.code}", self.id)

    def _matches_resource(self, resource: Resource) -> bool:
        assert self.resource is not None
        names = [f"{resource.kind}/{resource.namespace}/{resource.name}" if resource.namespace
                 else f"{resource.kind}/{resource.name}"]
        names += [value for value in (resource.node, resource.ztunnel) if value]
        return any(fnmatchcase(name, self.resource) for name in names)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.resource is not None:
            out["resource"] = self.resource
        out["reason"] = self.reason
        if self.expires is not None:
            out["expires"] = self.expires.isoformat()
        return out


def _date(value: Any, where: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise SuppressionError(f"{where}: expires must be a date such as 2026-12-31, got {value!r}")


def parse_suppressions(data: Any, name: str = "suppressions") -> list[Suppression]:
    """Suppressions from parsed YAML; SuppressionError (one line) when an entry is malformed."""
    if data is None:
        return []
    if isinstance(data, dict) and set(data) == {"suppressions"}:
        data = data["suppressions"] or []
    if not isinstance(data, list):
        raise SuppressionError(f"{name}: expected a list of suppressions (id, reason, resource, expires)")
    out = []
    for i, entry in enumerate(data, 1):
        where = f"{name}: entry {i}"
        if not isinstance(entry, dict):
            raise SuppressionError(f"{where}: expected a mapping with id and reason")
        unknown = sorted(str(key) for key in entry if key not in _KEYS)
        if unknown:
            raise SuppressionError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: expires, id, reason, resource)")
        ident, reason, resource = entry.get("id"), entry.get("reason"), entry.get("resource")
        if not isinstance(ident, str) or not ident.strip():
            raise SuppressionError(f"{where}: id must be a glob on '<analyzer>/<code>' or '<analyzer>'")
        if not isinstance(reason, str) or not reason.strip():
            raise SuppressionError(f"{where}: reason must say why the finding is accepted")
        if resource is not None and (not isinstance(resource, str) or not resource.strip()):
            raise SuppressionError(f"{where}: resource must be a glob on 'Kind/namespace/name' or a node")
        out.append(Suppression(ident.strip(), reason.strip(), resource.strip() if resource else None,
                               _date(entry.get("expires"), where), where))
    return out


def load_suppressions(path: str | Path) -> list[Suppression]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuppressionError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuppressionError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SuppressionError(f"{path}: not valid YAML{at}") from None
    return parse_suppressions(data, path.name)


def first_match(suppressions: Iterable[Suppression], finding: Finding) -> Suppression | None:
    for suppression in suppressions:
        if suppression.matches(finding):
            return suppression
    return None
