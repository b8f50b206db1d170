"""The bundle manifest (``manifest.json``): what was collected, from where, and how it went.

The manifest is the last member of every archive. Its JSON uses camelCase keys and is written with sorted keys
and a 2-space indent, so the same manifest always gives the same bytes. ``schemas/manifest.schema.json`` is its
JSON Schema and ``docs/archive-format.md`` documents every field.

Forward compatibility: every object may carry keys this version does not know. They are kept in the ``extra``
dict of the dataclass that reads them and written back unchanged, so reading and re-writing a manifest from a
newer tool loses nothing. The known keys are typed: :meth:`Manifest.from_dict` raises
:class:`~bundler.errors.BundleFormatError` naming the offending key when one has the wrong type.

The reader is tolerant: only ``formatVersion`` and ``artifacts`` (and, per artifact, ``path`` and ``status``)
are required; other keys default when absent. The JSON Schema is stricter and requires everything the writer
always writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bundler import __version__
from bundler.errors import BundleFormatError
from bundler.layout import FORMAT_VERSION, MANIFEST

TOOL_NAME = "ztunnel-bundle"

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_SKIPPED = "skipped"
STATUS_TRUNCATED = "truncated"
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_SKIPPED, STATUS_TRUNCATED)
# statuses whose artifact has a member in the bundle (truncated: a member exists but was cut)
STATUSES_WITH_MEMBER = frozenset({STATUS_OK, STATUS_TRUNCATED})

GENERATORS = ("collect", "synth")
SCOPE_MODES = ("mesh", "namespace", "pod", "node")
SOURCE_TYPES = ("api", "portforward", "proxy", "logs", "synth")
ISTIO_COMPONENTS = ("istiod", "ztunnel", "cni")

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def rfc3339(value: datetime | float | int) -> str:
    """Format a time as an RFC 3339 UTC string with second precision: ``2026-11-25T14:05:00Z``.

    ``value`` is a POSIX timestamp or a datetime (a naive datetime is taken to be UTC).
    """
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    else:
        dt = datetime.fromtimestamp(int(value), tz=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 string (``Z`` or an offset) as an aware UTC datetime; None for anything else. Every reader of
    bundle times (manifest, Kubernetes objects, certificates, logs) uses this one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved across midnight by its offset
        return None


def timestamp(value: object) -> float | None:
    """``parse_time`` as seconds since the epoch."""
    moment = parse_time(value)
    try:
        return moment.timestamp() if moment is not None else None
    except (ValueError, OverflowError):
        return None


def is_rfc3339_utc(value: object) -> bool:
    """True when ``value`` is an RFC 3339 UTC timestamp string (``...Z``, optional fractional seconds)."""
    return isinstance(value, str) and _RFC3339.match(value) is not None


# --- typed readers that name the offending key ------------------------------------------------------------


class _Reader:
    """Reads one JSON object, checking the types of known keys and collecting unknown ones."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise _broken(where, f"expected an object, got {_type_name(obj)}")
        self.obj: dict[str, Any] = obj
        self.where = where
        self.seen: set[str] = set()

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, required: bool) -> tuple[bool, Any]:
        self.seen.add(key)
        if key not in self.obj:
            if required:
                raise _broken(self.where or "manifest", f"missing required key {key!r}")
            return False, None
        return True, self.obj[key]

    def string(self, key: str, default: str | None = None, *, required: bool = False, nullable: bool = False) -> Any:
        present, value = self._get(key, required)
        if not present:
            return default
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise _broken(self._at(key), f"expected a string{' or null' if nullable else ''}, got {_type_name(value)}")
        return value

    def integer(self, key: str, default: int | None = None, *, required: bool = False, nullable: bool = False) -> Any:
        present, value = self._get(key, required)
        if not present:
            return default
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _broken(self._at(key), f"expected an integer{' or null' if nullable else ''}, got {_type_name(value)}")
        return value

    def str_list(self, key: str, *, required: bool = False) -> list[str]:
        present, value = self._get(key, required)
        if not present:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _broken(self._at(key), "expected a list of strings")
        return list(value)

    def obj_value(self, key: str, *, required: bool = False) -> Any:
        """The raw value of ``key`` (an object is checked by the caller); None when absent."""
        _, value = self._get(key, required)
        return value

    def extra(self) -> dict[str, Any]:
        return {key: value for key, value in self.obj.items() if key not in self.seen}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


# The manifest is a few levels deep (artifacts[i].source.type); unknown keys of a newer tool may add some. A value
# nested hundreds of levels deep parses (close to the recursion limit), then breaks whatever writes it back.
MAX_DEPTH = 64


def _nested_deeper(value: object, limit: int) -> bool:
    """Whether ``value`` holds arrays or objects nested more than ``limit`` levels deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _broken(where: str, message: str) -> BundleFormatError:
    return BundleFormatError(f"{MANIFEST}: {where}: {message}")


# --- the model --------------------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str = TOOL_NAME
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, "name": self.name, "version": self.version}

    @classmethod
    def from_dict(cls, obj: object, where: str = "tool") -> Tool:
        r = _Reader(obj, where)
        return cls(name=r.string("name", "", required=True), version=r.string("version", "", required=True), extra=r.extra())


@dataclass
class Window:
    """The UTC collection window: when collection started and ended; ``logs_since`` bounds the logs."""

    start: str = ""
    end: str = ""
    logs_since: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "start": self.start, "end": self.end}
        if self.logs_since is not None:
            out["logsSince"] = self.logs_since
        return out

    @classmethod
    def from_dict(cls, obj: object, where: str = "window") -> Window:
        r = _Reader(obj, where)
        return cls(
            start=r.string("start", ""),
            end=r.string("end", ""),
            logs_since=r.string("logsSince", None, nullable=True),
            extra=r.extra(),
        )


@dataclass
class Scope:
    """What was collected: the whole mesh, or some namespaces, pods (``ns/name``) or nodes."""

    mode: str = "mesh"
    namespaces: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "mode": self.mode,
            "namespaces": list(self.namespaces),
            "pods": list(self.pods),
            "nodes": list(self.nodes),
        }

    @classmethod
    def from_dict(cls, obj: object, where: str = "scope") -> Scope:
        r = _Reader(obj, where)
        return cls(
            mode=r.string("mode", "mesh"),
            namespaces=r.str_list("namespaces"),
            pods=r.str_list("pods"),
            nodes=r.str_list("nodes"),
            extra=r.extra(),
        )


def _empty_istio_versions() -> dict[str, list[str]]:
    return {component: [] for component in ISTIO_COMPONENTS}


@dataclass
class Cluster:
    """The cluster's identity. ``istio_versions`` maps component (istiod, ztunnel, cni) to the distinct
    versions seen; ``context`` and ``node_count`` are left out of the JSON when None."""

    server_version: str | None = None
    context: str | None = None
    istio_versions: dict[str, list[str]] = field(default_factory=_empty_istio_versions)
    node_count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        versions = _empty_istio_versions()
        versions.update({component: list(values) for component, values in self.istio_versions.items()})
        out: dict[str, Any] = {**self.extra, "serverVersion": self.server_version, "istioVersions": versions}
        if self.context is not None:
            out["context"] = self.context
        if self.node_count is not None:
            out["nodeCount"] = self.node_count
        return out

    @classmethod
    def from_dict(cls, obj: object, where: str = "cluster") -> Cluster:
        r = _Reader(obj, where)
        server_version = r.string("serverVersion", None, nullable=True)
        context = r.string("context", None, nullable=True)
        node_count = r.integer("nodeCount", None, nullable=True)
        raw_versions = r.obj_value("istioVersions")
        versions = _empty_istio_versions()
        if raw_versions is not None:
            vr = _Reader(raw_versions, f"{where}.istioVersions")
            for component in raw_versions:
                versions[component] = vr.str_list(component)
        return cls(
            server_version=server_version,
            context=context,
            istio_versions=versions,
            node_count=node_count,
            extra=r.extra(),
        )


# keys an Artifact knows; ``extra`` must not use them
ARTIFACT_KEYS = frozenset({"path", "kind", "source", "status", "reason", "size", "sha256", "started", "finished"})


@dataclass
class Artifact:
    """One entry of ``artifacts``: a member of the bundle, or an artifact that could not be collected.

    ``size`` is the member's size in bytes (0 when there is no member) and ``sha256`` its lowercase hex digest
    (None when there is no member). ``extra`` holds further keys, merged into the JSON object (for example
    ``redactions`` or ``truncation``).
    """

    path: str
    kind: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    status: str = STATUS_OK
    reason: str | None = None
    size: int = 0
    sha256: str | None = None
    started: str | None = None
    finished: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def collected(self) -> bool:
        """True when the bundle holds a member for this artifact (its status is ok or truncated)."""
        return self.status in STATUSES_WITH_MEMBER

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "path": self.path,
            "kind": self.kind,
            "source": dict(self.source),
            "status": self.status,
            "reason": self.reason,
            "size": self.size,
            "sha256": self.sha256,
            "started": self.started,
            "finished": self.finished,
        }

    @classmethod
    def from_dict(cls, obj: object, where: str = "artifact") -> Artifact:
        r = _Reader(obj, where)
        path = r.string("path", required=True)
        if not path:
            raise _broken(f"{where}.path", "must not be empty")
        status = r.string("status", required=True)
        if status not in STATUSES:
            raise _broken(f"{where}.status", f"expected one of {'|'.join(STATUSES)}, got {status!r}")
        size = r.integer("size", 0)
        if size < 0:
            raise _broken(f"{where}.size", f"must not be negative, got {size}")
        sha256 = r.string("sha256", None, nullable=True)
        if sha256 is not None and not _SHA256.match(sha256):
            raise _broken(f"{where}.sha256", "expected 64 lowercase hex digits")
        source = r.obj_value("source")
        if source is None:
            source = {}
        elif not isinstance(source, dict):
            raise _broken(f"{where}.source", f"expected an object, got {_type_name(source)}")
        elif "type" in source and not isinstance(source["type"], str):
            raise _broken(f"{where}.source.type", f"expected a string, got {_type_name(source['type'])}")
        return cls(
            path=path,
            kind=r.string("kind", None, nullable=True),
            source=dict(source),
            status=status,
            reason=r.string("reason", None, nullable=True),
            size=size,
            sha256=sha256,
            started=r.string("started", None, nullable=True),
            finished=r.string("finished", None, nullable=True),
            extra=r.extra(),
        )


@dataclass
class Manifest:
    format_version: int = FORMAT_VERSION
    tool: Tool = field(default_factory=Tool)
    generator: str = "collect"
    command_line: list[str] = field(default_factory=list)
    created_at: str = ""
    window: Window = field(default_factory=Window)
    scope: Scope = field(default_factory=Scope)
    cluster: Cluster = field(default_factory=Cluster)
    artifacts: list[Artifact] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    # --- lookups ---

    def artifact(self, path: str) -> Artifact | None:
        """The (first) artifact entry for ``path``, or None."""
        for art in self.artifacts:
            if art.path == path:
                return art
        return None

    def by_path(self) -> dict[str, Artifact]:
        """Artifacts keyed by path (when a path repeats, the first entry wins)."""
        out: dict[str, Artifact] = {}
        for art in self.artifacts:
            out.setdefault(art.path, art)
        return out

    # --- JSON ---

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "formatVersion": self.format_version,
            "tool": self.tool.to_dict(),
            "generator": self.generator,
            "commandLine": list(self.command_line),
            "createdAt": self.created_at,
            "window": self.window.to_dict(),
            "scope": self.scope.to_dict(),
            "cluster": self.cluster.to_dict(),
            "artifacts": [art.to_dict() for art in self.artifacts],
        }

    def to_json(self) -> bytes:
        """The manifest as written to ``manifest.json``: UTF-8, sorted keys, 2-space indent, final newline."""
        text = json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, obj: object) -> Manifest:
        """Build a Manifest from parsed JSON; raise BundleFormatError naming the key when it is broken."""
        if not isinstance(obj, dict):
            raise BundleFormatError(f"{MANIFEST}: expected a JSON object at the top, got {_type_name(obj)}")
        r = _Reader(obj, "")
        version = r.integer("formatVersion", required=True)
        if version < 1:
            raise _broken("formatVersion", f"expected a positive integer, got {version}")
        if version > FORMAT_VERSION:
            raise BundleFormatError(
                f"{MANIFEST}: formatVersion {version} is newer than this tool reads ({FORMAT_VERSION});"
                " upgrade ztunnel-bundle"
            )
        raw_artifacts = r.obj_value("artifacts", required=True)
        if not isinstance(raw_artifacts, list):
            raise _broken("artifacts", f"expected a list, got {_type_name(raw_artifacts)}")
        tool = r.obj_value("tool")
        window = r.obj_value("window")
        scope = r.obj_value("scope")
        cluster = r.obj_value("cluster")
        return cls(
            format_version=version,
            tool=Tool.from_dict(tool) if tool is not None else Tool(name="", version=""),
            generator=r.string("generator", ""),
            command_line=r.str_list("commandLine"),
            created_at=r.string("createdAt", ""),
            window=Window.from_dict(window) if window is not None else Window(),
            scope=Scope.from_dict(scope) if scope is not None else Scope(),
            cluster=Cluster.from_dict(cluster) if cluster is not None else Cluster(),
            artifacts=[Artifact.from_dict(item, f"artifacts[{i}]") for i, item in enumerate(raw_artifacts)],
            extra=r.extra(),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse ``manifest.json`` bytes; raise BundleFormatError when they are not valid JSON or not a manifest."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleFormatError(f"{MANIFEST}: not valid JSON: {exc}") from None
        except RecursionError:
            raise BundleFormatError(f"{MANIFEST}: not valid JSON: nested too deeply") from None
        if _nested_deeper(obj, MAX_DEPTH):  # unknown keys are kept and written back: none may be a hostile tower
            raise BundleFormatError(f"{MANIFEST}: nested deeper than {MAX_DEPTH} levels")
        return cls.from_dict(obj)
