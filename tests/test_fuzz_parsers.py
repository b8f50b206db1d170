"""Hostile input (issue 8): property and fuzz tests for the normalisers and parsers the model reads bundles with.

Valid documents (the healthy sample, synthetic meshes of other versions, the upstream 1.22 map dump) are mutated:
keys deleted, values replaced by JSON of the wrong type, null, huge integers, deep nesting, odd unicode and lone
surrogates, entries duplicated, lists emptied. Whatever the input, the normalisers and readers never raise except
through the documented whole-document errors (:class:`normalize.NormalizeError`, ``ValueError`` from the metrics
parser), a bad entry becomes an issue/Problem at its own JSON pointer, and no good entry is lost silently.

tests/test_formats.py has the single-line parser and openmetrics round trips; this file feeds whole documents and
whole files through the same functions :mod:`bundler.model.bundle` uses.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import ipaddress
import json
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from bundler import layout
from bundler.formats import istio_log, openmetrics, ztunnel_log
from bundler.manifest import Manifest
from bundler.model import BundleModel, normalize
from bundler.model.types import (
    Certificate,
    CertInfo,
    Connection,
    Endpoint,
    IstiodView,
    WorkloadState,
    ZtunnelView,
)

REPO = Path(__file__).resolve().parents[1]
HEALTHY_TAR = REPO / "samples" / "bookinfo-healthy.tar.zst"
HEALTHY_YAML = REPO / "samples" / "bookinfo-healthy.yaml"
UPSTREAM_DUMP = Path("/work/shared/upstream/istio/istioctl/pkg/writer/ztunnel/configdump/testdata/dump.json")

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=40, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MAX_MESSAGE = 500  # an issue/Problem message is one line of reasonable length, whatever the input held


# --- the valid documents that get mutated ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def healthy_members() -> dict[str, bytes]:
    """Every member of the healthy sample (Istio 1.28: ztunnel dumps in the list shape, ambientz)."""
    from bundler.archive import open_bundle

    bundle = open_bundle(HEALTHY_TAR)
    try:
        return {name: bundle.read(name) for name in bundle.names()}
    finally:
        bundle.close()


def healthy_member(suffix: str) -> bytes:
    return next(data for name, data in sorted(healthy_members().items()) if name.endswith(suffix))


@functools.lru_cache(maxsize=None)
def synthetic_mesh(version: str, log_format: str = "plain") -> Any:
    """The healthy scenario at another Istio version (1.22: map-shaped dumps; 1.24: a full per-proxy dump)."""
    from bundler.synth.build import build_mesh
    from bundler.synth.scenario import scenario_from_dict

    data = yaml.safe_load(HEALTHY_YAML.read_text())
    data["istioVersion"] = version
    data["logFormat"] = log_format
    return build_mesh(scenario_from_dict(data))


def ztunnel_base(name: str) -> bytes:
    if name == "list-1.28":
        return next(data for path, data in sorted(healthy_members().items())
                    if path.startswith("ztunnel/") and path.endswith("/config_dump.json"))
    if name == "map-1.22-synth":
        sm = synthetic_mesh("1.22.3")
        return orjson.dumps(sm.dumps.ztunnel_dump(sorted(sm.cluster.ztunnels)[0]))
    if name == "map-1.22-upstream":  # istioctl's hand-assembled fixture: the real 1.22 layout
        return UPSTREAM_DUMP.read_bytes()
    raise AssertionError(name)


ZTUNNEL_BASES = ["list-1.28", "map-1.22-synth",
                 pytest.param("map-1.22-upstream", marks=pytest.mark.skipif(not UPSTREAM_DUMP.is_file(),
                                                                            reason="upstream fixtures not available"))]


@functools.lru_cache(maxsize=None)
def per_proxy_base() -> tuple[bytes, bytes]:
    """istiod's per-proxy Address dump and WADS dump of a 1.24 mesh (the per-proxy dump is full before 1.25)."""
    sm = synthetic_mesh("1.24.2")
    return orjson.dumps(sm.dumps.proxy_config_dump()), orjson.dumps(sm.dumps.proxy_wads())


def ambientz_base() -> bytes:
    return next(data for path, data in sorted(healthy_members().items()) if path.endswith("/ambientz.json"))


# --- hostile JSON values and a document mutator ---------------------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
ODD_TEXT = st.one_of(
    st.text(max_size=12),
    SURROGATES,
    st.sampled_from(["", "\x00", "\r\n", "\u202e", "\ufeff", "\U0001f980", "-1", "1e999", "NaN", "::", "0x10",
                     "10.0.0.1", "::1", "1::2", "/", "~", "a/b~c", "é" * 3]),
    st.integers(4000, 5000).map(lambda n: "9" * n),  # beyond int()'s default digit limit
    st.integers(10_000, 100_000).map(lambda n: "x" * n),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 65536, 2**31, 2**32, 2**63, 2**64 + 1, -(2**63) - 1]),
    st.integers(300, 500).map(lambda n: 10**n),
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(ODD_TEXT, kids, max_size=4),
    max_leaves=8,
)


def hostile_values(max_depth: int = 1100) -> st.SearchStrategy[Any]:
    return st.one_of(JSON_VALUES, st.builds(nested, st.integers(min_value=20, max_value=max_depth), SCALARS))


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value inside ``doc``, in a stable order."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        for key, value in items:
            out.append((node, key))
            if isinstance(value, (dict, list)) and len(out) < 20_000:
                stack.append(value)
    return out


OPS = ["delete", "replace", "replace", "duplicate", "empty", "wrap", "rename"]


def base_document(name: str) -> bytes:
    """The valid documents, by name (names keep hypothesis' reports short)."""
    kind, _, which = name.partition(":")
    if kind == "ztunnel":
        return ztunnel_base(which)
    if kind == "per-proxy":
        return per_proxy_base()[0]
    if kind == "wads":
        return per_proxy_base()[1]
    if kind == "ambientz":
        return ambientz_base()
    if kind == "k8s":
        return k8s_base(which)
    if kind == "syncz":
        syncz = next(data for path, data in sorted(healthy_members().items()) if path.endswith("/syncz.json"))
        return b'{"root":' + syncz + b"}"
    raise AssertionError(name)


@st.composite
def mutated(draw: Any, base: str, max_depth: int = 1100, top_keys: tuple[str, ...] | None = None) -> Any:
    """The JSON document ``base`` (see base_document) after 1-4 random mutations, biased to the entries of
    ``top_keys``."""
    doc = orjson.loads(base_document(base))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not isinstance(doc, dict) or not doc:
            break
        keys = [k for k in (top_keys or tuple(doc)) if isinstance(doc.get(k), (dict, list))] or list(doc)
        region = draw(st.sampled_from(keys))
        inside = _slots(doc[region]) if isinstance(doc[region], (dict, list)) else []
        container, key = draw(st.sampled_from([(doc, region), *inside]))
        op = draw(st.sampled_from(OPS))
        value = container[key]
        if op == "delete":
            del container[key]
        elif op == "replace":
            container[key] = draw(hostile_values(max_depth))
        elif op == "duplicate":
            # the copy is the same object: the normalisers never modify their input
            if isinstance(value, list) and value:
                value.insert(draw(st.integers(0, len(value))), value[draw(st.integers(0, len(value) - 1))])
            elif isinstance(value, dict) and value:
                name = draw(st.sampled_from(sorted(value)))
                value[f"{name}#dup"] = value[name]
            elif isinstance(container, list):
                container.append(value)
        elif op == "empty":
            container[key] = draw(st.sampled_from([[], {}, "", 0]))
        elif op == "wrap":  # the right value in the wrong type: [v], {"value": v}, "9080" for 9080
            shape = draw(st.sampled_from(["list", "object", "text"]))
            if shape == "list":
                container[key] = [value]
            elif shape == "object":
                container[key] = {"value": value}
            elif isinstance(value, (str, int, float)) or value is None:
                container[key] = str(value)
        elif op == "rename" and isinstance(container, dict):
            container[draw(ODD_TEXT)] = container.pop(key)
    return doc


# --- checks on the normalised objects -------------------------------------------------------------------------------


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


_CLASSES = {"Endpoint": Endpoint, "CertInfo": CertInfo, "Connection": Connection}


def _typed(value: Any, ann: str) -> bool:
    """Whether ``value`` matches the annotation text of a model field (bools are not ints)."""
    alternatives = _split_top(ann, "|")
    if len(alternatives) > 1:
        return any(_typed(value, a) for a in alternatives)
    if ann == "Any":
        return True
    if ann == "None":
        return value is None
    if ann == "str":
        return isinstance(value, str)
    if ann == "bool":
        return isinstance(value, bool)
    if ann == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ann in _CLASSES:
        return isinstance(value, _CLASSES[ann]) and well_typed(value)
    if ann.startswith("tuple[") and ann.endswith("]"):
        if not isinstance(value, tuple):
            return False
        parts = _split_top(ann[6:-1], ",")
        if parts[-1] == "...":
            return all(_typed(v, parts[0]) for v in value)
        return len(value) == len(parts) and all(_typed(v, p) for v, p in zip(value, parts))
    raise AssertionError(f"no check for annotation {ann!r}")


def well_typed(obj: Any) -> bool:
    for f in dataclasses.fields(obj):
        if not _typed(getattr(obj, f.name), str(f.type)):
            raise AssertionError(f"{type(obj).__name__}.{f.name} = {getattr(obj, f.name)!r:.200} is not {f.type}")
    return True


def check_objects(view: ZtunnelView | IstiodView) -> None:
    """Every normalised object is well typed and hashable (analyzers put them in sets and dicts)."""
    for collection in (view.workloads, view.services, view.policies):
        for key, obj in collection.items():
            assert obj.key == key
            assert well_typed(obj)
            hash(obj)
            obj.comparable()
    for policy in view.policies.values():
        policy.rules_json()


def check_issues(issues: list[tuple[str, str]]) -> None:
    for pointer, message in issues:
        assert isinstance(pointer, str) and (pointer == "" or pointer.startswith("/")), pointer
        assert isinstance(message, str) and message
        assert "\n" not in message and len(message) <= MAX_MESSAGE, message[:300]


def resolve(doc: Any, pointer: str) -> Any:
    """RFC 6901 (the document's own keys, so a key that is itself "~1" round-trips)."""
    if pointer == "":
        return doc
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def entries(value: Any, kind: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield normalize.json_pointer(kind, i), item
    elif isinstance(value, dict):
        for key, item in value.items():
            yield normalize.json_pointer(kind, key), item


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def workload_uid(raw: dict[str, Any]) -> str:
    return _text(raw, "uid") or f"{_text(raw, 'namespace')}/{_text(raw, 'name')}"


def namespaced(raw: dict[str, Any], key: str) -> str:
    return f"{_text(raw, 'namespace')}/{_text(raw, key)}"


def check_nothing_lost(view: ZtunnelView | IstiodView, issues: list[tuple[str, str]],
                       groups: list[tuple[list[tuple[str, Any]], dict[str, Any], Any]]) -> None:
    """Each entry is either normalised (its key is in the view) or has an issue at its own pointer."""
    at = {pointer for pointer, _ in issues}
    for items, kept, key_of in groups:
        for pointer, raw in items:
            if pointer in at:
                continue
            assert isinstance(raw, dict), f"{pointer}: a non-object entry left out without an issue"
            assert key_of(raw) in kept, f"{pointer}: entry {key_of(raw)!r} lost without an issue"


def check_unchanged_entries_kept(issues: list[tuple[str, str]], found: list[tuple[str, Any]],
                                 base_found: list[tuple[str, Any]]) -> None:
    """An entry the mutations left as it was in the valid document is never reported as bad."""
    at = {pointer for pointer, _ in issues}
    before = dict(base_found)
    for pointer, raw in found:
        if pointer in before and raw == before[pointer]:
            assert pointer not in at, f"{pointer}: a valid entry reported as bad"


ZTUNNEL_KINDS = ("workloads", "services", "policies", "certificates", "workloadState")


def ztunnel_entries(doc: Any) -> list[tuple[str, Any]]:
    return [e for kind in ZTUNNEL_KINDS for e in entries(doc.get(kind), kind)]


# =====================================================================================================================
# 1. ztunnel /config_dump, both shapes


def ztunnel_view(doc: Any) -> ZtunnelView:
    return normalize.ztunnel_view(doc, node="n1", pod="ztunnel-x", namespace="istio-system", path="dump.json",
                                  intern={})


def check_ztunnel_view(doc: dict[str, Any], view: ZtunnelView) -> None:
    check_issues(view.issues)
    check_objects(view)
    for cert in view.certificates:
        assert isinstance(cert, Certificate) and well_typed(cert)
    for uid, state in view.workload_state.items():
        assert isinstance(state, WorkloadState) and state.pod_uid == uid and well_typed(state)
    for (kind, _), pointer in view.pointers.items():
        resolve(doc, pointer)  # every pointer leads to the evidence
        assert pointer.startswith(f"/{kind}/")
    check_nothing_lost(view, view.issues, [
        (list(entries(doc.get("workloads"), "workloads")), view.workloads, workload_uid),
        (list(entries(doc.get("services"), "services")), view.services, lambda raw: namespaced(raw, "hostname")),
        (list(entries(doc.get("policies"), "policies")), view.policies, lambda raw: namespaced(raw, "name")),
    ])
    certs = list(entries(doc.get("certificates"), "certificates"))
    cert_issues = {p for p, _ in view.issues if p.startswith("/certificates/")}
    assert len(view.certificates) + len(cert_issues) == len(certs)
    state = doc.get("workloadState")
    if isinstance(state, dict):
        state_issues = {p for p, _ in view.issues if p.startswith("/workloadState/")}
        assert len(view.workload_state) + len(state_issues) == len(state)
    assert isinstance(view.config, dict) and isinstance(view.version, dict)
    if isinstance(doc.get("config"), dict):
        assert view.config == doc["config"]  # kept raw (its Durations are {"secs","nanos"} objects)
    assert isinstance(view.staged_services, dict) and isinstance(view.istio_version, str)


@pytest.mark.parametrize("base", ZTUNNEL_BASES)
def test_valid_ztunnel_dump_keeps_every_entry(base):
    doc = orjson.loads(ztunnel_base(base))
    view = ztunnel_view(doc)
    assert view.issues == []
    assert view.shape == ("list" if base.startswith("list") else "map")
    uids = {w["uid"] for _, w in entries(doc["workloads"], "workloads")}
    assert set(view.workloads) == uids and uids
    assert len(view.services) == len({namespaced(s, "hostname") for _, s in entries(doc["services"], "services")})
    assert len(view.policies) == len(list(entries(doc.get("policies"), "policies")))
    assert len(view.certificates) == len(doc["certificates"])
    check_ztunnel_view(doc, view)


@pytest.mark.parametrize("base", ZTUNNEL_BASES)
@FUZZ
@given(data=st.data())
def test_mutated_ztunnel_dump_never_raises_and_loses_nothing_silently(base, data):
    doc = data.draw(mutated(f"ztunnel:{base}",
                            top_keys=("workloads", "services", "policies", "certificates", "workloadState")))
    view = ztunnel_view(doc)  # the root stays an object: never NormalizeError
    check_ztunnel_view(doc, view)
    check_unchanged_entries_kept(view.issues, ztunnel_entries(doc), ztunnel_entries(orjson.loads(ztunnel_base(base))))


@pytest.mark.parametrize("base", ZTUNNEL_BASES)
@FEW
@given(data=st.data())
def test_mutated_ztunnel_dump_top_level(base, data):
    doc = data.draw(mutated(f"ztunnel:{base}"))
    check_ztunnel_view(doc, ztunnel_view(doc))


@pytest.mark.parametrize("base", ZTUNNEL_BASES)
@FEW
@given(data=st.data())
def test_duplicated_ztunnel_entries_change_nothing(base, data):
    doc = orjson.loads(ztunnel_base(base))
    before = ztunnel_view(orjson.loads(ztunnel_base(base)))
    for kind in ("workloads", "services"):
        items = list(entries(doc[kind], kind))
        picks = data.draw(st.lists(st.sampled_from(items), min_size=1, max_size=5))
        for pointer, item in picks:
            copy = orjson.loads(orjson.dumps(item))
            if isinstance(doc[kind], list):
                doc[kind].append(copy)
            else:
                doc[kind][pointer.rsplit("/", 1)[1] + "#again"] = copy
    after = ztunnel_view(doc)
    assert after.issues == []
    assert after.workloads == before.workloads and after.services == before.services


@FEW
@given(value=hostile_values(), key=st.sampled_from(["workloads", "services", "policies", "certificates",
                                                     "workloadState", "version", "config", "stagedServices"]))
def test_ztunnel_dump_collections_of_the_wrong_type(value, key):
    doc = orjson.loads(ztunnel_base("list-1.28"))
    doc[key] = value
    check_ztunnel_view(doc, ztunnel_view(doc))


@FEW
@given(value=hostile_values(max_depth=200))
def test_a_ztunnel_dump_that_is_not_an_object_is_the_documented_error(value):
    assume(not isinstance(value, dict))
    with pytest.raises(normalize.NormalizeError):
        ztunnel_view(value)


@FUZZ
@given(raw=hostile_values(), status=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_ztunnel_entry_normalisers_raise_only_value_or_type_errors(raw, status):
    """The per-object functions: a bad entry raises (the view turns it into an issue), a good one is well typed."""
    for convert in (normalize.ztunnel_workload, normalize.ztunnel_policy, normalize.ztunnel_certificate,
                    lambda r: normalize.ztunnel_service(r, status), lambda r: normalize.ztunnel_workload_state("u", r)):
        try:
            obj = convert(raw)
        except (ValueError, TypeError, AttributeError, RecursionError):
            continue
        assert well_typed(obj)


def _write_bundle(files: dict[str, bytes]) -> contextlib.AbstractContextManager[BundleModel]:
    @contextlib.contextmanager
    def opened() -> Iterator[BundleModel]:
        with tempfile.TemporaryDirectory(prefix="fuzz-bundle-") as tmp:
            root = Path(tmp) / "bundle"
            root.mkdir()
            (root / layout.MANIFEST).write_bytes(Manifest().to_json())  # empty: every member is "ok"
            for path, data in files.items():
                full = root.joinpath(*path.split("/"))
                full.parent.mkdir(parents=True, exist_ok=True)
                full.write_bytes(data)
            model = BundleModel.open(root)
            try:
                yield model
            finally:
                model.close()

    return opened()


def own_problems(model: BundleModel, path: str) -> list[Any]:
    return [p for p in model.problems if p.path == path]


@FEW
@given(data=st.data())
def test_mutated_ztunnel_dump_through_the_model(data):
    base = data.draw(st.sampled_from(["list-1.28", "map-1.22-synth"]))
    doc = data.draw(st.one_of(
        mutated(f"ztunnel:{base}", max_depth=300, top_keys=("workloads", "services", "policies", "certificates")),
        hostile_values(max_depth=300),  # not a dump at all
    ))
    path = layout.ztunnel_file("n1", "ztunnel-x", "config_dump.json")
    with _write_bundle({path: json.dumps(doc).encode()}) as model:
        views = list(model.ztunnels())
        problems = own_problems(model, path)
        if views:
            (view,) = views
            check_ztunnel_view(orjson.loads(json.dumps(doc)), view)
            assert {(p.pointer, p.message) for p in problems} == set(view.issues)
            assert all(p.reason == "invalid" for p in problems)
        else:  # not an object, or not JSON for orjson (lone surrogates, numbers beyond a double)
            (problem,) = problems
            assert problem.reason == "malformed" and "\n" not in problem.message


# =====================================================================================================================
# 2. istiod proto-JSON: the per-proxy dump with its WADS dump, and /debug/ambientz


def check_istiod_view(view: IstiodView, groups: list[tuple[list[tuple[str, Any]], dict[str, Any], Any]]) -> None:
    check_issues(view.issues)
    check_objects(view)
    for key, endpoints in view.staged_services.items():
        assert isinstance(key, str) and all(isinstance(e, Endpoint) and well_typed(e) for e in endpoints)
    check_nothing_lost(view, view.issues, groups)


def address_entries(doc: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    workloads, services = [], []
    configs = doc.get("configs") if isinstance(doc, dict) else None
    for i, entry in enumerate(configs if isinstance(configs, list) else ()):
        if isinstance(entry, dict) and entry.get("@type") == normalize.ADDRESS_TYPE:
            if isinstance(entry.get("workload"), dict):
                workloads.append((normalize.json_pointer("configs", i, "workload"), entry["workload"]))
            elif isinstance(entry.get("service"), dict):
                services.append((normalize.json_pointer("configs", i, "service"), entry["service"]))
    return workloads, services


def test_valid_per_proxy_dump_keeps_every_entry():
    dump, wads = (orjson.loads(b) for b in per_proxy_base())
    view = normalize.istiod_view_from_config_dump(dump, wads, ztunnel_pod="z", path="d.json", wads_path="w.json",
                                                  intern={})
    assert view.issues == []
    workloads, services = address_entries(dump)
    assert len(view.workloads) == len(workloads) and len(view.services) == len(services)
    assert len(view.policies) == len(wads["configs"])
    ambientz = orjson.loads(ambientz_base())
    global_view = normalize.istiod_view_from_ambientz(ambientz, path="a.json")
    assert global_view.issues == [] and len(global_view.workloads) == len(ambientz["workloads"])


@FUZZ
@given(data=st.data())
def test_mutated_per_proxy_dump_never_raises_and_loses_nothing_silently(data):
    dump = data.draw(mutated("per-proxy"))
    wads = data.draw(st.one_of(st.builds(lambda: orjson.loads(per_proxy_base()[1])), mutated("wads")))
    try:
        view = normalize.istiod_view_from_config_dump(dump, wads, ztunnel_pod="z", path="d.json",
                                                      wads_path="w.json", intern={})
    except normalize.NormalizeError:  # documented: a dump whose `configs` is not a list
        assert not isinstance(dump.get("configs"), (list, type(None))) or not isinstance(
            wads.get("configs"), (list, type(None)))
        return
    workloads, services = address_entries(dump)
    policies = [(normalize.json_pointer("configs", i), p) for i, p in enumerate(wads.get("configs") or ())
                if isinstance(p, dict) and p.get("@type", normalize.AUTHORIZATION_TYPE) == normalize.AUTHORIZATION_TYPE]
    check_istiod_view(view, [(workloads, view.workloads, workload_uid),
                             (services, view.services, lambda raw: namespaced(raw, "hostname")),
                             (policies, view.policies, lambda raw: namespaced(raw, "name"))])
    base_workloads, base_services = address_entries(orjson.loads(per_proxy_base()[0]))
    check_unchanged_entries_kept([i for i in view.issues if not i[1].startswith("policy")], workloads + services,
                                 base_workloads + base_services)
    base_policies = orjson.loads(per_proxy_base()[1])["configs"]
    check_unchanged_entries_kept([i for i in view.issues if i[1].startswith("policy")], policies,
                                 [(normalize.json_pointer("configs", i), p) for i, p in enumerate(base_policies)])


@FUZZ
@given(data=st.data())
def test_mutated_ambientz_never_raises_and_loses_nothing_silently(data):
    doc = data.draw(mutated("ambientz"))
    view = normalize.istiod_view_from_ambientz(doc, path="a.json", replica="istiod-0", intern={})
    groups = [(list(entries(doc.get(kind) if isinstance(doc.get(kind), list) else None, kind)), kept, key)
              for kind, kept, key in (("workloads", view.workloads, workload_uid),
                                      ("services", view.services, lambda raw: namespaced(raw, "hostname")),
                                      ("policies", view.policies, lambda raw: namespaced(raw, "name")))]
    check_istiod_view(view, groups)
    base = orjson.loads(ambientz_base())
    for kind in ("workloads", "services", "policies"):
        check_unchanged_entries_kept(view.issues, list(entries(doc.get(kind), kind)),
                                     list(entries(base.get(kind), kind)))


REPLICA = "istiod-0"
ZTUNNEL_POD = "ztunnel-x"


@FEW
@given(data=st.data())
def test_mutated_istiod_views_through_the_model(data):
    """The model's istiod path: per-proxy dump (+ WADS), else /debug/ambientz; syncz."""
    files = {
        layout.istiod_proxy_dump(ZTUNNEL_POD): data.draw(st.one_of(mutated("per-proxy", max_depth=300),
                                                                   hostile_values(max_depth=300))),
        layout.istiod_proxy_wads(ZTUNNEL_POD): data.draw(st.one_of(mutated("wads", max_depth=300),
                                                                   hostile_values(max_depth=300))),
        layout.istiod_file(REPLICA, "ambientz.json"): data.draw(mutated("ambientz", max_depth=300)),
        layout.istiod_file(REPLICA, "syncz.json"): data.draw(st.one_of(
            mutated("syncz", max_depth=300, top_keys=("root",)).map(lambda doc: doc.get("root")),
            hostile_values(max_depth=300))),
    }
    with _write_bundle({path: json.dumps(doc).encode() for path, doc in files.items()}) as model:
        view = model.istiod_view(ZTUNNEL_POD)
        if view is not None:
            check_issues(view.issues)
            check_objects(view)
            assert view.source in ("per-proxy", "ambientz")
        for replica, entry in model.syncz():
            assert replica == REPLICA and isinstance(entry, dict)
        for problem in model.problems:
            assert problem.reason in ("malformed", "invalid") and "\n" not in problem.message
            assert len(problem.message) <= MAX_MESSAGE


@FUZZ
@given(raw=hostile_values())
def test_istiod_entry_normalisers_raise_only_on_bad_entries(raw):
    for convert in (lambda r: normalize.istiod_workload(r)[0], lambda r: normalize.istiod_workload(r, True)[0],
                    normalize.istiod_service, lambda r: normalize.istiod_service(r, (), True), normalize.istiod_policy):
        try:
            obj = convert(raw)
        except (ValueError, TypeError, AttributeError, RecursionError):
            continue
        assert well_typed(obj)


# --- proto-JSON helpers ---------------------------------------------------------------------------------------------

IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@FUZZ
@given(ip=IPS)
def test_decode_ip_of_raw_bytes(ip):
    assert normalize.decode_ip(b64(ip.packed)) == str(ip)


@FUZZ
@given(ip=IPS)
def test_decode_ip_of_the_ambientz_ascii_text(ip):
    """ambientz base64-encodes the IP's text: read with prefer_text, whatever the text's length (1::2 is 4)."""
    assert normalize.decode_ip(b64(str(ip).encode()), prefer_text=True) == str(ip)
    text = str(ip)
    if len(text) not in (4, 16):
        assert normalize.decode_ip(b64(text.encode())) == str(ip)


@FUZZ
@given(ip=IPS)
def test_decode_ip_prefers_raw_bytes_unless_they_read_as_ip_text(ip):
    try:
        as_text = str(ipaddress.ip_address(ip.packed.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        as_text = None
    assert normalize.decode_ip(b64(ip.packed), prefer_text=True) == (as_text or str(ip))


@FUZZ
@given(value=st.one_of(hostile_values(max_depth=50), st.binary(max_size=40).map(b64),
                       st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))),
       prefer_text=st.booleans())
def test_decode_ip_raises_only_value_error(value, prefer_text):
    try:
        ip = normalize.decode_ip(value, prefer_text)
    except ValueError as exc:
        assert len(str(exc)) <= MAX_MESSAGE and "\n" not in str(exc)
        return
    ipaddress.ip_address(ip.split("%")[0])


# Enum value names in proto order (formats.md 3.4): jsonpb writes the name, or the number with EnumsAsInts.
WORKLOAD_ENUMS = {
    "tunnelProtocol": ["NONE", "HBONE", "LEGACY_ISTIO_MTLS"],
    "status": ["HEALTHY", "UNHEALTHY"],
    "workloadType": ["DEPLOYMENT", "CRONJOB", "POD", "JOB"],
    "networkMode": ["STANDARD", "HOST_NETWORK"],
}
SERVICE_ENUMS = {"ipFamilies": ["AUTOMATIC", "IPV4_ONLY", "IPV6_ONLY", "DUAL"]}
LB_ENUMS = {
    "mode": ["UNSPECIFIED_MODE", "STRICT", "FAILOVER", "PASSTHROUGH"],
    "healthPolicy": ["ONLY_HEALTHY", "ALLOW_ALL"],
}
LB_SCOPES = ["UNSPECIFIED_SCOPE", "REGION", "ZONE", "SUBZONE", "NODE", "CLUSTER", "NETWORK"]
POLICY_ENUMS = {"scope": ["GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR"], "action": ["ALLOW", "DENY"]}
APP_TUNNEL = ["NONE", "PROXY"]


@FUZZ
@given(data=st.data())
def test_enums_as_names_or_numbers_normalise_alike(data):
    def pick(table: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
        names, numbers = {}, {}
        for key, values in table.items():
            if data.draw(st.booleans()):
                i = data.draw(st.integers(0, len(values) - 1))
                names[key], numbers[key] = values[i], i
        return names, numbers

    base_wl = {"uid": "u1", "name": "w", "namespace": "ns"}
    names, numbers = pick(WORKLOAD_ENUMS)
    i = data.draw(st.integers(0, len(APP_TUNNEL) - 1))
    by_name = {**base_wl, **names, "applicationTunnel": {"protocol": APP_TUNNEL[i], "port": 15088}}
    by_number = {**base_wl, **numbers, "applicationTunnel": {"protocol": i, "port": 15088}}
    assert normalize.istiod_workload(by_name) == normalize.istiod_workload(by_number)
    # the zero value is the same as an absent field (jsonpb leaves zero values out)
    zero = {**base_wl, **{key: 0 for key in WORKLOAD_ENUMS}, "applicationTunnel": {"protocol": 0, "port": 15088}}
    assert normalize.istiod_workload(zero) == normalize.istiod_workload(
        {**base_wl, "applicationTunnel": {"port": 15088}})

    base_svc = {"name": "s", "namespace": "ns", "hostname": "s.ns.svc.cluster.local"}
    names, numbers = pick(SERVICE_ENUMS)
    lb_names, lb_numbers = pick(LB_ENUMS)
    scopes = data.draw(st.lists(st.integers(1, len(LB_SCOPES) - 1), max_size=3))
    lb_names["routingPreference"] = [LB_SCOPES[s] for s in scopes]
    lb_numbers["routingPreference"] = scopes
    assert normalize.istiod_service({**base_svc, **names, "loadBalancing": lb_names}) == normalize.istiod_service(
        {**base_svc, **numbers, "loadBalancing": lb_numbers})

    base_pol = {"name": "p", "namespace": "ns"}
    names, numbers = pick(POLICY_ENUMS)
    assert normalize.istiod_policy({**base_pol, **names}) == normalize.istiod_policy({**base_pol, **numbers})


@FUZZ
@given(value=st.one_of(st.integers(), st.text(max_size=20), st.booleans(), st.none(), st.floats(allow_nan=False)))
def test_unknown_enum_values_stay_visible(value):
    """An enum value that is not in the table is kept (as text), so that it shows as a difference."""
    wl, _ = normalize.istiod_workload({"uid": "u", "tunnelProtocol": value, "status": value})
    svc = normalize.istiod_service({"hostname": "h", "loadBalancing": {"mode": value, "routingPreference": [value]},
                                    "ipFamilies": value})
    for text in (wl.protocol, wl.status, svc.load_balancer[0], *svc.load_balancer[2]):
        assert isinstance(text, str) and len(text) <= MAX_MESSAGE


def test_fixed_findings_stay_fixed():
    """What the properties above found, pinned (random runs might not hit them again)."""
    # messages of bad entries are one short line, whatever the entry held
    view = ztunnel_view({"services": [{"hostname": "h", "ports": {"9" * 5000: 1}}],
                         "workloads": [{"uid": "u", "name": "n", "workloadIps": ["1.1.1.1"],
                                        "applicationTunnel": {"protocol": "PROXY", "port": True}}]})
    check_issues(view.issues)
    assert view.workloads["u"].application_tunnel == ("PROXY", None)  # true is not port 1
    istiod = normalize.istiod_view_from_ambientz({"workloads": [{"uid": "u", "addresses": ["x" * 100_000]},
                                                                {"uid": "v", "addresses": [nested(900)]}]})
    assert len(istiod.issues) == 2
    check_issues(istiod.issues)
    # enums written as numbers (jsonpb EnumsAsInts) mean what their names mean
    wl, _ = normalize.istiod_workload({"uid": "u", "tunnelProtocol": 2, "workloadType": 2,
                                       "applicationTunnel": {"protocol": 1, "port": 15088}})
    assert (wl.protocol, wl.workload_type, wl.application_tunnel) == ("LEGACY_ISTIO_MTLS", "pod", ("PROXY", 15088))
    svc = normalize.istiod_service({"hostname": "h", "ipFamilies": 1,
                                    "loadBalancing": {"routingPreference": [1, 4], "mode": 1}})
    assert svc.ip_families == "IPv4" and svc.load_balancer == ("Strict", "OnlyHealthy", ("Region", "Node"))
    assert normalize.istiod_service({"hostname": "h", "ipFamilies": 0}).ip_families is None


# proto-JSON Timestamps (syncz sentTime), Kubernetes times, log times

TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                     timezones=st.just(timezone.utc))
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:"
                                                               f"{abs(m) % 60:02d}")


@FUZZ
@given(moment=TIMES)
def test_log_timestamps_round_trip(moment):
    assert ztunnel_log.parse_timestamp(ztunnel_log.format_timestamp(moment)) == moment


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.builds(lambda t, o: t.strftime("%Y-%m-%dT%H:%M:%S") + o,
                                                           TIMES, OFFSETS)))
def test_log_timestamp_parser_never_raises(text):
    moment = ztunnel_log.parse_timestamp(text)
    assert moment is None or moment.tzinfo is not None


@FUZZ
@given(text=st.builds(lambda t, o: t.strftime("%Y-%m-%dT%H:%M:%S") + o, TIMES, OFFSETS))
@example("0001-01-01T00:00:00+01:00")
@example("9999-12-31T23:59:59-01:00")
def test_rfc3339_parser_never_raises_on_hostile_times(text):
    """manifest.parse_time reads hostile times too: Kubernetes creationTimestamp, certificate dates, sentTime."""
    from bundler.manifest import parse_time, timestamp

    moment = parse_time(text)
    assert moment is None or moment.tzinfo is not None
    timestamp(text)


# =====================================================================================================================
# 3. logs: whole files through the model's log reader


@functools.lru_cache(maxsize=None)
def sample_log_lines() -> dict[str, list[bytes]]:
    plain = healthy_member("/logs/istio-proxy.log").splitlines()[:200]
    istiod = next(d for p, d in sorted(healthy_members().items()) if p.endswith("/discovery.log")).splitlines()[:100]
    sm = synthetic_mesh("1.28.1", "json")
    from bundler.synth.telemetry import render_istio_log, render_ztunnel_log

    node = sorted(sm.cluster.ztunnels)[0]
    as_json = render_ztunnel_log(sm.telemetry.ztunnel[node].current, "json").splitlines()[:200]
    istiod_json = render_istio_log(next(iter(sm.telemetry.istiod.values())), "json").splitlines()[:100]
    return {"ztunnel": plain + as_json, "istiod": istiod + istiod_json}


BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80abc"]


@st.composite
def log_files(draw: Any, component: str) -> bytes:
    line = st.one_of(
        st.sampled_from(sample_log_lines()[component]),
        st.binary(max_size=60),
        st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"", b"\x00", b"\r", b"{", b"{}", b'{"level":"info"}', b"\t\t\t", *BAD_BYTES]),
    )
    damaged = st.tuples(line, st.sampled_from(BAD_BYTES + [b"\x00", b"\r"]), st.integers(0, 200)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2]:])
    lines = draw(st.lists(st.one_of(line, damaged), max_size=25))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\n", b"\r\r\n"]), min_size=len(lines),
                         max_size=len(lines)))
    data = b"".join(a + b for a, b in zip(lines, ends))
    if draw(st.booleans()):
        data += draw(line)  # no newline at the end
    return data


def expected_lines(data: bytes) -> list[tuple[bytes, bool]]:
    """(line bytes without its "\\n", whether a newline ended it)."""
    if not data:
        return []
    pieces = data.split(b"\n")
    last = pieces.pop()
    out = [(p, True) for p in pieces]
    if last:
        out.append((last, False))
    return out


def check_log(model: BundleModel, path: str, data: bytes, component: str) -> None:
    records = list(model.log_records(path))
    lines = expected_lines(data)
    assert [r.line for r in records] == list(range(1, len(lines) + 1))
    parse = ztunnel_log.parse_line if component == "ztunnel" else istio_log.parse_line
    first_bad = None
    for record, (raw, terminated) in zip(records, lines):
        text = raw.decode("utf-8", "replace")
        if terminated and text.endswith("\r"):
            text = text[:-1]
        assert record.text == text or (not terminated and record.text == text.removesuffix("\r"))
        assert record.path == path
        assert repr(record.record) == repr(parse(record.text))
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            first_bad = first_bad or record.line
    problems = own_problems(model, path)
    if first_bad is None:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.line == first_bad and problem.reason == "unreadable"


@FUZZ
@given(data=st.data())
def test_log_files_through_the_model_never_raise_and_keep_line_numbers(data):
    component = data.draw(st.sampled_from(["ztunnel", "istiod"]))
    content = data.draw(log_files(component))
    path = layout.ztunnel_log("n1", "ztunnel-x") if component == "ztunnel" else layout.istiod_log("istiod-x")
    with _write_bundle({path: content}) as model:
        check_log(model, path, content, component)


BIG = 3_000_000


@pytest.mark.parametrize(
    "content",
    [
        b"first\n" + b"x" * BIG + b"\nlast",
        b"2024-05-04T09:59:05.028771Z\tinfo\taccess\tmsg\tk=" + b'"' * BIG + b"\r\n\x00\r\n\xff\xfe" * 3,
        b'{"level":"info","time":"2024-05-04T09:59:05Z","scope":"access","message":"' + b"\\\\" * (BIG // 2)
        + b'"}\n' + b"{" * BIG,
        b"\n" * 100_000,
        b"\r\n" * 50_000 + b"\x00" * BIG,
    ],
    ids=["long-line-no-final-newline", "quotes-crlf-nul-bad-utf8", "json-escapes-then-braces", "empty-lines",
         "crlf-then-nul"],
)
def test_log_files_with_multi_megabyte_lines(content):
    path = layout.ztunnel_log("n1", "ztunnel-x")
    with _write_bundle({path: content}) as model:
        check_log(model, path, content, "ztunnel")


def test_an_empty_log_has_no_records():
    path = layout.ztunnel_log("n1", "ztunnel-x")
    with _write_bundle({path: b""}) as model:
        assert list(model.log_records(path)) == [] and own_problems(model, path) == []


# =====================================================================================================================
# 4. metrics


def sample_metrics() -> bytes:
    return healthy_member("/metrics.txt")


@st.composite
def metrics_texts(draw: Any) -> bytes:
    choice = draw(st.sampled_from(["binary", "text", "damaged", "lines"]))
    if choice == "binary":
        return draw(st.binary(max_size=400))
    if choice == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    base = sample_metrics()
    if choice == "lines":
        lines = base.splitlines(keepends=True)
        picked = draw(st.lists(st.sampled_from(lines), max_size=30))
        junk = draw(st.lists(st.sampled_from([b"# EOF\n", b"# TYPE x counter\n", b"x_total 1\n", b'x{a="\n',
                                              b"\xff\n", b"\x00\n", b"\r\n", b"# HELP \n", b"x NaN\n",
                                              b"x 1e999\n", b'x{le="+Inf"} 1\n']), max_size=4))
        return b"".join(picked + junk)
    cut = draw(st.integers(0, len(base)))
    insert = draw(st.binary(max_size=10))
    return base[:cut] + insert + base[cut + draw(st.integers(0, 50)):]


@FUZZ
@given(content=metrics_texts())
def test_metrics_parser_raises_only_value_error(content):
    try:
        families = openmetrics.parse(content)
    except ValueError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= MAX_MESSAGE
        return
    for fam in families:
        assert isinstance(fam, openmetrics.ParsedFamily) and isinstance(fam.name, str)
        assert all(isinstance(s.value, (int, float)) for s in fam.samples)


@FEW
@given(content=metrics_texts())
def test_the_models_metrics_reader_turns_bad_metrics_into_a_problem(content):
    path = layout.ztunnel_file("n1", "ztunnel-x", "metrics.txt")
    try:
        expected = openmetrics.parse(content)
    except ValueError:
        expected = None
    with _write_bundle({path: content}) as model:
        families = model.metrics("n1")
        problems = own_problems(model, path)
        if expected is None:
            assert families == [] and len(problems) == 1 and problems[0].reason == "malformed"
        else:
            assert repr(families) == repr(expected) and problems == []  # repr: NaN samples compare equal


# =====================================================================================================================
# 5. Kubernetes lists (pods, services, endpointslices, namespaces)

K8S = {
    "pods": ("pods", ""),
    "services": ("services", ""),
    "endpointslices": ("endpointslices", "discovery.k8s.io"),
    "namespaces": ("namespaces", ""),
    "nodes": ("nodes", ""),
}


def k8s_base(name: str) -> bytes:
    return healthy_members()[layout.k8s_list(*K8S[name])]


@FUZZ
@given(data=st.data())
def test_mutated_kubernetes_lists_never_raise(data):
    docs = {name: orjson.loads(k8s_base(name)) for name in K8S}
    for name in data.draw(st.lists(st.sampled_from(sorted(K8S)), min_size=1, max_size=3, unique=True)):
        docs[name] = data.draw(st.one_of(mutated(f"k8s:{name}", max_depth=300, top_keys=("items",)),
                                         hostile_values(max_depth=300)))
    files = {layout.k8s_list(*K8S[name]): json.dumps(doc).encode() for name, doc in docs.items()}
    with _write_bundle(files) as model:
        lists = {name: model.k8s(*K8S[name]) for name in K8S}
        for name, items in lists.items():
            assert isinstance(items, list) and all(isinstance(item, dict) for item in items)
            doc = docs[name]
            raw = doc.get("items") if isinstance(doc, dict) else None
            problems = own_problems(model, layout.k8s_list(*K8S[name]))
            if isinstance(raw, list) and not problems:
                parsed = orjson.loads(files[layout.k8s_list(*K8S[name])])["items"]
                assert items == [i for i in parsed if isinstance(i, dict)]  # none lost
            for problem in problems:
                assert problem.reason == "malformed" and "\n" not in problem.message
        assert model.pods() is lists["pods"]
        for pod in lists["pods"]:
            meta = pod.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("name"), str) and isinstance(meta.get("namespace"),
                                                                                         str):
                assert model.pod(meta["namespace"], meta["name"]) is not None
        by_ip = model.pods_by_ip()
        assert all(isinstance(ip, str) and pod in lists["pods"] for ip, pod in by_ip.items())
        namespaces = model.namespaces()
        assert all(isinstance(k, str) and isinstance(v, dict) for k, v in namespaces.items())
        model.nodes()
        model.ztunnel_refs()


@FUZZ
@given(value=hostile_values(max_depth=300))
def test_kubernetes_items_of_the_wrong_type(value):
    path = layout.k8s_list("pods")
    data = json.dumps({"kind": "PodList", "items": value}).encode()
    try:
        parsed = orjson.loads(data)["items"]
    except orjson.JSONDecodeError:  # numbers beyond a double, lone surrogates: not JSON for the model
        parsed = orjson.JSONDecodeError
    with _write_bundle({path: data}) as model:
        pods = model.pods()
        problems = own_problems(model, path)
        assert all(p.reason == "malformed" and "\n" not in p.message for p in problems)
        if parsed is orjson.JSONDecodeError:
            assert pods == [] and len(problems) == 1
        elif isinstance(parsed, list):
            assert pods == [v for v in parsed if isinstance(v, dict)] and problems == []
        else:
            assert pods == [] and len(problems) == (0 if parsed is None else 1)
        model.pods_by_ip()
        model.pod("a", "b")
        model.namespaces()
