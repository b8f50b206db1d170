"""Schema validation of bundle artifacts.

Every JSON artifact kind of ``bundler.layout`` has a Draft 2020-12 schema ``schemas/<kind>.schema.json``. The
schemas refer to each other by relative URI (``istio-proto.schema.json#/$defs/Workload``); one
``referencing.Registry`` holds every file of ``bundler.resources.schemas_dir()``, so refs resolve locally and
nothing is ever fetched.

Public API:

* ``load_validator(kind)``: the cached ``Draft202012Validator`` of a kind.
* ``detect_kind(path, document)``: the kind of an artifact, from its layout path or else from its content.
* ``validate_document(document, kind)``: the list of ``ValidationIssue`` (JSON pointer + message), sorted.
* ``validate_bytes(data, kind=None, path=None)``: parse (orjson) + detect + validate, returns ``(kind, issues)``.
* ``parse_json(data)``, ``kind_from_path(path)``, ``legacy_layout(document)``, ``schema_kinds()``,
  ``schema_registry()``.

A ztunnel config dump in the <=1.21 layout (``by_addr``/``by_uid``...) is recognised and raises
``UnsupportedFormatError``; malformed JSON raises ``ArtifactError``. Both are one-line ``BundleError``\\ s.
"""

from __future__ import annotations

import ast
import functools
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bundler import layout
from bundler.errors import ArtifactError
from bundler.resources import schemas_dir

__all__ = [
    "SCHEMA_BASE_URI",
    "TEXT_KINDS",
    "UnsupportedFormatError",
    "ValidationIssue",
    "detect_kind",
    "kind_from_path",
    "legacy_layout",
    "load_validator",
    "parse_json",
    "schema_kinds",
    "schema_registry",
    "validate_bytes",
    "validate_document",
]

SCHEMA_BASE_URI = "https://ztunnel-bundle.dev/schemas/"

# Artifact kinds that are text, not JSON: they have no schema and are not validated.
TEXT_KINDS = frozenset(
    {
        layout.KIND_ZTUNNEL_METRICS,
        layout.KIND_ZTUNNEL_LOG,
        layout.KIND_ISTIOD_VERSION,
        layout.KIND_ISTIOD_LOG,
        layout.KIND_CNI_LOG,
    }
)

LEGACY_MESSAGE = "ztunnel config dump in the <=1.21 layout (by_addr/by_uid) is not supported"
_LEGACY_TOP_LEVEL = ("by_addr", "by_uid", "workload_to_services", "by_vip")
_LEGACY_CERT_KEYS = ("cert_chain", "ca_cert")

# Enough for jsonschema to repr() a value nested 1024 levels deep (orjson's limit) inside a validation.
_DEEP_RECURSION_LIMIT = 8000

_ADDRESS_TYPE = "type.googleapis.com/istio.workload.Address"
_WORKLOAD_TYPE = "type.googleapis.com/istio.workload.Workload"
_AUTHORIZATION_TYPE = "type.googleapis.com/istio.security.Authorization"
_ZTUNNEL_ONLY_KEYS = ("config", "version", "certificates", "staticConfig", "workloadState", "stagedServices")


class UnsupportedFormatError(ArtifactError):
    """The artifact is recognised but in a layout this tool does not support (ztunnel <=1.21 config dump)."""


@dataclass(frozen=True)
class ValidationIssue:
    """One schema violation.

    ``pointer`` is an RFC 6901 JSON pointer to the offending value ("" is the whole document; use
    ``display_pointer`` to print it), ``message`` a one-line description.
    """

    pointer: str
    message: str

    @property
    def display_pointer(self) -> str:
        return self.pointer or "/"

    def __str__(self) -> str:
        return f"{self.display_pointer}: {self.message}"


# --- schemas and validators --------------------------------------------------------------------------------


@functools.cache
def _schema_files() -> dict[str, dict[str, Any]]:
    """Every readable ``*.schema.json`` of the schemas folder, by name without the suffix.

    A file that cannot be read or parsed is left out, so that one broken schema only breaks its own kind.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(schemas_dir().glob("*.schema.json")):
        try:
            contents = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(contents, dict):
            schemas[path.name.removesuffix(".schema.json")] = contents
    return schemas


def schema_registry() -> Registry:
    """The ``referencing.Registry`` of every schema file (for validating against a ``$defs`` entry)."""
    return _registry()


@functools.cache
def _registry() -> Registry:
    """A registry of all schema files, under their ``$id`` and under the base URI + file name."""
    resources: list[tuple[str, Resource[Any]]] = []
    for name, contents in _schema_files().items():
        resource = Resource.from_contents(contents, default_specification=DRAFT202012)
        by_name = f"{SCHEMA_BASE_URI}{name}.schema.json"
        resources.append((by_name, resource))
        schema_id = contents.get("$id")
        if isinstance(schema_id, str) and schema_id and schema_id != by_name:
            resources.append((schema_id, resource))
    return Registry().with_resources(resources).crawl()


def schema_kinds() -> list[str]:
    """The artifact kinds that have a schema file, sorted."""
    return sorted(kind for kind in layout.JSON_KINDS if kind in _schema_files())


@functools.cache
def load_validator(kind: str) -> Draft202012Validator:
    """The validator of ``kind`` (one per kind, cached). Format assertions are off.

    Raises ArtifactError when the kind has no schema file.
    """
    contents = _schema_files().get(kind)
    if contents is None or kind not in layout.JSON_KINDS:
        raise ArtifactError(f"no schema for artifact kind {kind!r}")
    return Draft202012Validator(contents, registry=_registry())


# --- parsing -----------------------------------------------------------------------------------------------


def parse_json(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON with orjson; any syntax error (or nesting deeper than orjson's 1024 levels) becomes a
    one-line ArtifactError with its line and column."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = exc.msg
        if "depth" in reason or "recursion" in reason.lower():
            reason = "nested deeper than 1024 levels"
        raise ArtifactError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {reason}") from None


# --- kind detection ----------------------------------------------------------------------------------------


def kind_from_path(path: str | PathLike[str]) -> str | None:
    """The kind a path holds according to the bundle layout.

    ``path`` may be relative to the bundle root (``ztunnel/n1/zt-abc/config_dump.json``) or any path ending with
    a layout path (``/tmp/bundle/ztunnel/n1/zt-abc/config_dump.json``): its last components are tried, the
    shortest suffix first.
    """
    text = str(path).replace("\\", "/")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    for count in range(1, min(len(parts), 5) + 1):
        kind = layout.kind_of_path("/".join(parts[-count:]))
        if kind is not None:
            return kind
    return None


def legacy_layout(document: object) -> str | None:
    """If ``document`` is a ztunnel config dump in the <=1.21 layout (top-level ``by_addr``, ``by_uid``,
    ``workload_to_services`` or ``by_vip`` stores, or snake_case ``cert_chain``/``ca_cert`` certificates), the
    message saying it is unsupported; else None."""
    if not isinstance(document, dict):
        return None
    found = [key for key in _LEGACY_TOP_LEVEL if key in document]
    certificates = document.get("certificates")
    if isinstance(certificates, list):
        for cert in certificates:
            if isinstance(cert, dict) and any(key in cert for key in _LEGACY_CERT_KEYS):
                found.extend(f"certificates[].{key}" for key in _LEGACY_CERT_KEYS if key in cert)
                break
    if not found:
        return None
    return f"{LEGACY_MESSAGE} (found {', '.join(found)}); only ztunnel 1.22 and newer dumps are supported"


def _any_types(configs: object) -> set[str]:
    if not isinstance(configs, list):
        return set()
    return {entry.get("@type") for entry in configs if isinstance(entry, dict) and isinstance(entry.get("@type"), str)}


def _detect_from_content(document: object) -> str | None:
    if isinstance(document, list):
        if document and all(isinstance(item, dict) for item in document) and "proxy" in document[0]:
            return layout.KIND_ISTIOD_SYNCZ
        return None
    if not isinstance(document, dict) or not document:
        return None
    if legacy_layout(document) is not None:
        return layout.KIND_ZTUNNEL_CONFIG_DUMP
    if "formatVersion" in document and "artifacts" in document:
        return layout.KIND_MANIFEST
    if "findings" in document and isinstance(document.get("findings"), list):
        return layout.KIND_FINDINGS
    if "configs" in document:
        types = _any_types(document["configs"])
        if _AUTHORIZATION_TYPE in types and not types & {_ADDRESS_TYPE, _WORKLOAD_TYPE}:
            return layout.KIND_ISTIOD_WADS
        return layout.KIND_ISTIOD_CONFIG_DUMP
    if any(key in document for key in ("workloads", "services", "policies")):
        if any(key in document for key in _ZTUNNEL_ONLY_KEYS):
            return layout.KIND_ZTUNNEL_CONFIG_DUMP
        workloads = document.get("workloads")
        if isinstance(workloads, dict):
            return layout.KIND_ZTUNNEL_CONFIG_DUMP  # the 1.22 map layout
        if isinstance(workloads, list) and workloads and isinstance(workloads[0], dict):
            if "workloadIps" in workloads[0] or "protocol" in workloads[0]:
                return layout.KIND_ZTUNNEL_CONFIG_DUMP
        return layout.KIND_ISTIOD_AMBIENTZ
    kind = document.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in document:
        return layout.KIND_K8S_LIST
    if all(key in document for key in ("apiVersion", "kind", "metadata")):
        return layout.KIND_K8S_OBJECT
    if "gitVersion" in document:
        return layout.KIND_K8S_VERSION
    return None


def detect_kind(path: str | PathLike[str] | None, document: object) -> str | None:
    """The artifact kind: from the layout path when it is one (see ``kind_of_path``), else from the content.

    Returns None when neither tells; an empty object ``{}`` (what istiod >= 1.25 returns for a ztunnel's
    config_dump) is only recognised through its path.
    """
    if path is not None:
        kind = kind_from_path(path)
        if kind is not None:
            return kind
    return _detect_from_content(document)


# --- validation --------------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    """A short rendering of a JSON value for a message; containers are never rendered in full."""
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)" if value else "{}"
    if isinstance(value, list):
        return f"an array of {len(value)} item(s)" if value else "[]"
    if value is None or isinstance(value, (str, int, float, bool)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    if len(text) > limit:
        text = text[: limit - 4] + "...\"" if text.startswith('"') else text[: limit - 3] + "..."
    return text


def _choices(values: Iterable[object]) -> str:
    return ", ".join(_short(value, 40) for value in values)


def _describe(error: ValidationError) -> str:
    keyword = error.validator
    value = error.validator_value
    instance = error.instance
    if keyword == "type":
        expected = value if isinstance(value, list) else [value]
        shown = "" if isinstance(instance, (dict, list)) or instance is None else f" {_short(instance)}"
        return f"expected {' or '.join(map(str, expected))}, got {_json_type(instance)}{shown}"
    if keyword == "required":
        # jsonschema yields one error per missing property, named only in its message: "'name' is a required property"
        suffix = " is a required property"
        if error.message.endswith(suffix):
            try:
                name = ast.literal_eval(error.message[: -len(suffix)])
            except (ValueError, SyntaxError):
                name = error.message[: -len(suffix)]
            return f"missing required property {_short(name)}"
        return error.message
    if keyword == "enum":
        return f"{_short(instance)} is not one of {_choices(value)}"
    if keyword == "const":
        return f"expected {_short(value, 80)}, got {_short(instance)}"
    if keyword == "pattern":
        subject = "property name " if "propertyNames" in error.absolute_schema_path else ""
        return f"{subject}{_short(instance)} does not match the pattern {value}"
    if keyword == "not":
        for described in (value, error.schema):
            if isinstance(described, dict) and isinstance(described.get("description"), str):
                return described["description"]
        return "matches a shape that is not allowed here"
    if keyword in ("minItems", "maxItems"):
        bound = "at least" if keyword == "minItems" else "at most"
        return f"expected {bound} {value} item(s), got {len(instance) if isinstance(instance, list) else '?'}"
    if keyword in ("minProperties", "maxProperties"):
        bound = "at least" if keyword == "minProperties" else "at most"
        return f"expected {bound} {value} propert(y/ies), got {len(instance) if isinstance(instance, dict) else '?'}"
    if keyword == "minLength":
        return f"expected a string of at least {value} character(s), got {_short(instance)}"
    message = error.message
    if isinstance(instance, (dict, list)) or len(repr(instance)) > 60:
        message = message.replace(repr(instance), _short(instance))
    return message


def _leaf(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, the most relevant error among the alternatives (jsonschema's own heuristic)."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        error = best_match(error.context)
    return error


def _pointer(error: ValidationError) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in error.absolute_path)


def _sort_key(issue: ValidationIssue) -> tuple[tuple[tuple[int, int, str], ...], str]:
    tokens = issue.pointer.split("/")[1:] if issue.pointer else []
    return (tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in tokens), issue.message)


def validate_document(document: object, kind: str) -> list[ValidationIssue]:
    """Validate a parsed document against the schema of ``kind``; the issues are sorted by pointer
    (array indexes numerically) and deduplicated. A text kind (metrics, logs, istiod version) has no schema
    and gives no issues.

    Raises UnsupportedFormatError for a ztunnel config dump in the <=1.21 layout, ArtifactError for a kind
    without a schema.
    """
    if kind in TEXT_KINDS:
        return []
    if kind == layout.KIND_ZTUNNEL_CONFIG_DUMP:
        legacy = legacy_layout(document)
        if legacy is not None:
            raise UnsupportedFormatError(legacy)
    validator = load_validator(kind)
    try:
        return _collect(validator, document)
    except RecursionError:
        pass
    # jsonschema renders the offending value into each error message with repr(), which recurses once per level:
    # a value nested close to orjson's 1024-level limit needs more than Python's default recursion limit.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _DEEP_RECURSION_LIMIT))
    try:
        return _collect(validator, document)
    except RecursionError:
        raise ArtifactError("the document is nested too deeply to validate") from None
    finally:
        sys.setrecursionlimit(limit)


def _collect(validator: Draft202012Validator, document: object) -> list[ValidationIssue]:
    if _fast_valid(validator, document):
        return []
    issues = {
        ValidationIssue(_pointer(leaf), _describe(leaf))
        for leaf in (_leaf(error) for error in validator.iter_errors(document))
    }
    return sorted(issues, key=_sort_key)


_FAST: dict[int, tuple[Any, Draft202012Validator]] = {}


def _fast_valid(validator: Draft202012Validator, document: object) -> bool:
    """True when jsonschema-rs, a compiled validator, finds ``document`` valid against ``validator``'s schema:
    most artifacts are valid, and it answers a few hundred times faster (python-stack.md). When it says invalid
    (or is not installed), jsonschema finds and words the issues as before."""
    entry = _FAST.get(id(validator))
    if entry is None:
        entry = _FAST[id(validator)] = (_compile_fast(validator.schema), validator)  # keeps the id in use
    fast = entry[0]
    if fast is None:
        return False
    try:
        return bool(fast.is_valid(document))
    except Exception:  # noqa: BLE001 - any doubt: let jsonschema decide
        return False


def _compile_fast(schema: Any) -> Any:
    try:
        import jsonschema_rs

        return jsonschema_rs.validator_for(schema, registry=_fast_registry(), validate_formats=False)
    except Exception:  # noqa: BLE001 - not installed, or a schema it cannot compile: jsonschema alone
        return None


@functools.cache
def _fast_registry() -> Any:
    import jsonschema_rs

    resources = []
    for name, contents in _schema_files().items():
        by_name = f"{SCHEMA_BASE_URI}{name}.schema.json"
        resources.append((by_name, contents))
        schema_id = contents.get("$id")
        if isinstance(schema_id, str) and schema_id and schema_id != by_name:
            resources.append((schema_id, contents))
    return jsonschema_rs.Registry(resources)


def validate_bytes(
    data: bytes | bytearray | memoryview | str,
    kind: str | None = None,
    path: str | PathLike[str] | None = None,
) -> tuple[str, list[ValidationIssue]]:
    """Parse and validate one artifact; returns ``(kind, issues)``.

    The kind is ``kind`` if given, else the one of ``path`` in the bundle layout, else detected from the
    content. Text kinds (ztunnel-metrics, the logs, istiod-version) are not schema-validated: their issues are
    always empty and their content is not even decoded.

    Raises ArtifactError for malformed JSON (with line and column), JSON nested deeper than 1024 levels, a
    kind that cannot be detected, or an unknown kind; UnsupportedFormatError for a ztunnel <=1.21 dump.
    """
    if kind is None and path is not None:
        kind = kind_from_path(path)
    if kind is not None and kind in TEXT_KINDS:
        return kind, []
    if kind is not None and kind not in layout.JSON_KINDS:
        raise ArtifactError(f"unknown artifact kind {kind!r}")
    document = parse_json(data)
    if kind is None:
        kind = detect_kind(None, document)
        if kind is None:
            raise ArtifactError("cannot detect the kind; use --kind")
    return kind, validate_document(document, kind)
