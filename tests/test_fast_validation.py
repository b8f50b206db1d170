"""The compiled validator (jsonschema-rs) that answers "valid?" first must agree with jsonschema, which words the
issues: a document it calls valid must have no jsonschema issue, and the other way round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler import layout
from bundler.archive import open_bundle
from bundler.validation import _fast_valid, kind_from_path, load_validator

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"


def artifacts() -> list[tuple[str, Any]]:
    out = []
    for sample in ("bookinfo-incident.tar.zst", "bookinfo-healthy.tar.zst"):
        with open_bundle(REPO / "samples" / sample) as bundle:
            for path in bundle.names():
                kind = kind_from_path(path)
                if kind in layout.JSON_KINDS and path != layout.MANIFEST:
                    out.append((kind, orjson.loads(bundle.read(path))))
    return out


ARTIFACTS = artifacts()


def agree(kind: str, doc: Any) -> None:
    validator = load_validator(kind)
    valid = next(iter(validator.iter_errors(doc)), None) is None
    assert _fast_valid(validator, doc) == valid, kind


def test_the_fast_validator_is_in_use():
    kind, doc = next((k, d) for k, d in ARTIFACTS if k == layout.KIND_ZTUNNEL_CONFIG_DUMP)
    assert _fast_valid(load_validator(kind), doc)


@pytest.mark.parametrize("index", range(len(ARTIFACTS)))
def test_agrees_on_every_sample_artifact(index):
    agree(*ARTIFACTS[index])


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/upstream not available")
def test_agrees_on_the_upstream_ztunnel_dumps():
    for path in UPSTREAM.rglob("*.json"):
        if "ztunnel/configdump/testdata" in str(path) and path.name == "dump.json":
            agree(layout.KIND_ZTUNNEL_CONFIG_DUMP, json.loads(path.read_text()))


WRONG = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=5),
                  st.just([]), st.just({}), st.just([1, "a"]), st.just({"x": None}))


def leaves(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [prefix] + [p for k, v in doc.items() for p in leaves(v, (*prefix, k))]
    if isinstance(doc, list):
        return [prefix] + [p for i, v in enumerate(doc[:3]) for p in leaves(v, (*prefix, i))]
    return [prefix]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_on_damaged_artifacts(data):
    kind, doc = data.draw(st.sampled_from([a for a in ARTIFACTS if len(orjson.dumps(a[1])) < 200_000]))
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(leaves(doc)))
        value = json.loads(json.dumps(data.draw(WRONG)))  # st.just values are shared between examples
        if not path:
            doc = value
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    agree(kind, doc)
