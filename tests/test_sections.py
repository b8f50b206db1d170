"""bundler.model.sections: views built from cut-out, cached sections equal whole-document normalisation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.archive import open_bundle
from bundler.model import normalize
from bundler.model.sections import SectionCache, split_dump
from tests.test_model import FIXTURE, VERSIONS, needs_upstream, synth

PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS  # what ztunnel writes (formats.md 2.1)
WHERE = {"node": "n1", "pod": "ztunnel-a", "namespace": "istio-system", "path": "ztunnel/n1/ztunnel-a/config_dump.json"}


def whole(doc: Any) -> Any:
    return normalize.ztunnel_view(doc, **WHERE)


def assert_same_view(fast: Any, slow: Any) -> None:
    assert fast is not None
    for f in dataclasses.fields(slow):
        mine, theirs = getattr(fast, f.name), getattr(slow, f.name)
        if f.name == "pointers":
            mine = dict(mine)
        assert mine == theirs, f.name


def dumps_of(path: Path) -> list[bytes]:
    with open_bundle(path) as bundle:
        return [bundle.read(name) for name in bundle.names() if name.endswith("config_dump.json")
                and name.startswith("ztunnel/")]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_gives_the_same_view_as_a_whole_parse(tmp_path, version):
    dumps = dumps_of(synth(tmp_path, istioVersion=version))
    cache = SectionCache({})
    for data in dumps:
        view = cache.view(data, **WHERE)
        if version.startswith("1.22."):
            assert view is None  # the 1.22 maps are parsed whole
            continue
        assert_same_view(view, whole(orjson.loads(data)))


def test_bad_entries_drift_and_duplicates_give_the_same_issues_and_pointers(tmp_path):
    doc = orjson.loads(dumps_of(synth(tmp_path))[0])
    variants = []
    a = json.loads(json.dumps(doc))
    a["workloads"][1]["uid"] = 7  # wrong type inside an entry: left out with an issue
    a["services"][0]["ports"] = "not a map"
    variants.append(a)
    b = json.loads(json.dumps(doc))
    del b["workloads"][2]  # a ztunnel missing one workload: its own section, other entries still cached
    b["workloads"].append(b["workloads"][0])  # a duplicate uid
    variants.append(b)
    c = json.loads(json.dumps(doc))
    c["policies"] = []
    for w in c["workloads"]:
        w.pop("services", None)  # <= 1.23: workload services derived from the services' endpoints
    variants.append(c)
    cache = SectionCache({})
    for variant in [doc, *variants, doc]:
        data = orjson.dumps(variant, option=PRETTY)
        assert_same_view(cache.view(data, **WHERE), whole(variant))
    d = json.loads(json.dumps(doc))
    d["services"][0] = "not an object"  # not the shape cut here: parsed whole, which reports it
    assert cache.view(orjson.dumps(d, option=PRETTY), **WHERE) is None


def test_agreeing_dumps_share_their_sections_and_a_drifted_one_does_not(tmp_path):
    doc = orjson.loads(dumps_of(synth(tmp_path))[0])
    drifted = json.loads(json.dumps(doc))
    drifted["workloads"][0]["status"] = "Unhealthy"
    cache = SectionCache({})
    first = cache.view(orjson.dumps(doc, option=PRETTY), **WHERE)
    second = cache.view(orjson.dumps(doc, option=PRETTY), **WHERE)
    third = cache.view(orjson.dumps(drifted, option=PRETTY), **WHERE)
    assert second.workloads is first.workloads and second.policies is first.policies
    assert third.workloads is not first.workloads
    # entries that did not change are the same objects
    uid = drifted["workloads"][1]["uid"]
    assert third.workloads[uid] is first.workloads[uid]
    assert third.workloads[drifted["workloads"][0]["uid"]].status == "Unhealthy"


@pytest.mark.parametrize("render", [
    lambda d: orjson.dumps(d),  # compact
    lambda d: json.dumps(d, indent=4).encode(),  # another indentation
    lambda d: json.dumps(d, indent=2).encode().replace(b'\n    },\n    {\n', b'\n    },\n     {\n', 1),  # odd
    lambda d: orjson.dumps(d, option=PRETTY)[:-200],  # truncated
])
def test_text_without_ztunnels_shape_is_left_to_the_whole_parse(tmp_path, render):
    doc = orjson.loads(dumps_of(synth(tmp_path))[0])
    cache = SectionCache({})
    data = render(doc)
    view = cache.view(data, **WHERE)
    if view is not None:  # a harmless variation may still be read; then it must be right
        assert_same_view(view, whole(orjson.loads(data)))


@needs_upstream
def test_the_upstream_1_22_dump_is_parsed_whole():
    assert SectionCache({}).view(FIXTURE.read_bytes(), **WHERE) is None


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
entries = st.lists(st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=5), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads=entries, services=entries, policies=entries, extra=json_values)
def test_split_cuts_exactly_the_entries(workloads, services, policies, extra):
    doc = {"workloads": workloads, "services": services, "policies": policies, "config": extra,
           "certificates": []}
    split = split_dump(orjson.dumps(doc, option=PRETTY))
    if not (workloads or services or policies):
        assert split is None
        return
    rest, bodies = split
    assert orjson.loads(rest) == {**doc, "workloads": [], "services": [], "policies": []}
    for key, items in (("workloads", workloads), ("services", services), ("policies", policies)):
        if not items:
            assert key not in bodies
            continue
        pieces = bodies[key].split(b"\n    },\n    {\n")
        assert [orjson.loads(b"{\n" + p + b"\n}") for p in pieces] == items


def test_another_top_level_array_between_two_cut_ones_is_left_to_the_whole_parse(tmp_path):
    from bundler.model.bundle import _ItemValidator
    from bundler import layout

    doc = orjson.loads(dumps_of(synth(tmp_path))[0])
    doc["tunnels"] = [{"a": 1}, {"b": 2}]  # sorts between "services" and "workloads"
    data = orjson.dumps(doc, option=PRETTY)
    cache = SectionCache({})
    assert cache.view(data, **WHERE) is None
    cut = cache.cut(data)
    with pytest.raises(orjson.JSONDecodeError):
        _ItemValidator().validate_cut(cut, layout.KIND_ZTUNNEL_CONFIG_DUMP)
