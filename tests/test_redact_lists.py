"""bundler.redact_lists: a Kubernetes list redacted one item at a time gives what redacting the decoded list gives,
keeps the bytes of every item it did not change, holds one item at a time, and refuses what is not a list (which
collect then redacts whole, or as text when it is not JSON)."""

from __future__ import annotations

import copy
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from bundler import redact as redact_module
from bundler.archive import open_bundle
from bundler.collect.engine import _redact_kubernetes_document
from bundler.redact import redact_kubernetes_list
from bundler.redact_lists import NotAList, redact_list_text

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _whole(data: bytes) -> tuple[Any, Counter[str]]:
    document = orjson.loads(data)
    counts = redact_kubernetes_list(document)
    return document, counts


def _pod(i: int, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"app-{i}", "namespace": "shop", "uid": f"uid-{i}",
                     "labels": {"app": "shop", "pod-template-hash": "abc123"}},
        "spec": {"nodeName": f"node-{i % 3}", "containers": [{"name": "app", "image": "shop:1.0", **container}]},
        "status": {"podIP": f"10.0.0.{i}", "phase": "Running"},
    }


def _list(kind: str, items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "42"}, "items": items})


def test_sample_lists_are_unchanged_and_agree() -> None:
    checked = 0
    for sample in sorted(SAMPLES.glob("*.tar.zst")):
        with open_bundle(sample) as bundle:
            for path, data in bundle.iter_members(lambda p: p.startswith("cluster/") and p != "cluster/version.json"):
                out, counts = redact_list_text(data)
                document, whole_counts = _whole(data)
                assert orjson.loads(out) == document and counts == whole_counts, path
                if not counts:
                    assert out is data
                checked += 1
    assert checked >= 10


def test_secrets_in_items_are_redacted_as_in_the_whole_list() -> None:
    items = [_pod(i) for i in range(50)]
    items[3] = _pod(3, env=[{"name": "DB_PASSWORD", "value": "hunter2-hunter2"}])
    items[20] = _pod(20, args=["--api-token", "s3cr3t-t0ken-value"])
    items[20]["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"password":"in-last-applied"}}'}
    items[41] = _pod(41, env=[{"name": "LOG", "value": "Authorization: Bearer abcdefgh12345678"}])
    data = _list("PodList", items)
    out, counts = redact_list_text(data)
    document, whole_counts = _whole(data)
    assert orjson.loads(out) == document
    assert counts == whole_counts == Counter({"password-assignment": 3, "bearer-token": 1})
    for secret in (b"hunter2-hunter2", b"s3cr3t-t0ken-value", b"in-last-applied", b"abcdefgh12345678"):
        assert secret not in out
    # every other item keeps the API server's bytes
    for i in (0, 2, 4, 19, 21, 40, 42, 49):
        assert orjson.dumps(items[i]) in out


@pytest.mark.parametrize("sort_keys", [False, True])
def test_configmap_list_items_are_redacted_as_configmaps(sort_keys: bool) -> None:
    # The API server leaves kind out of a list's items: the list's kind says they are ConfigMaps, whose data keys
    # name files (credentials.json) the generic key rule does not take.
    items = [{"metadata": {"name": "istio", "namespace": "istio-system"},
              "data": {"mesh": "defaultConfig: {}", "credentials.json": '{"type": "service_account"}'}}]
    data = _list("ConfigMapList", items)
    if sort_keys:  # kubectl's order: items before kind
        data = orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS)
    out, counts = redact_list_text(data)
    assert b"service_account" not in out and counts == Counter({"password-assignment": 1})
    document, whole_counts = _whole(data)
    assert orjson.loads(out) == document and whole_counts == counts
    assert "kind" not in orjson.loads(out)["items"][0]


@pytest.mark.parametrize("text", [
    b"", b"not json", b"[]", b'{"kind": "PodList"}', b'{"items": {}}', b'{"items": [1, 2}',
    b'{"kind": "PodList", "items": []} trailing', b'{"kind": "PodList", "items": [{"a": NaN}]}',
    b'{"items": [], "items": []}', b'{"kind": "PodList", "items": [',
    b'{"kind": "PodList", "items": [{"a": 1}]', b"\xff\xfe{}", b'{"items": [], 1: 2}',
])
def test_what_is_not_a_list_is_refused(text: bytes) -> None:
    with pytest.raises(NotAList):
        redact_list_text(text)


def test_collect_redacts_a_cut_off_list_as_text() -> None:
    data = _list("PodList", [_pod(1, env=[{"name": "X", "value": "password=hunter2hunter2"}])])[:-10]
    out, counts = _redact_kubernetes_document(data)
    assert b"hunter2hunter2" not in out and counts == Counter({"password-assignment": 1})


def test_one_item_at_a_time() -> None:
    items = [_pod(i, env=[{"name": f"V{j}", "value": f"value-{i}-{j}" * 4} for j in range(20)]) for i in range(1500)]
    items[700] = _pod(700, env=[{"name": "TOKEN", "value": "x" * 100}])
    data = _list("PodList", items)

    def peak(run) -> int:
        redact_module._STR_MEMO.clear()  # the same strings are memoised either way
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(lambda: redact_list_text(data))
    whole = peak(lambda: redact_kubernetes_list(orjson.loads(data)))
    # the text (the bytes as str, the output) and one item, against every item as Python objects
    assert 3 * streamed < whole


def test_many_items_agree_with_the_whole_list() -> None:
    items = [_pod(i) for i in range(300)]
    for i in range(0, 300, 37):
        items[i] = _pod(i, env=[{"name": "SECRET_KEY", "value": f"k-{i}-abcdefgh"}], args=["--password", f"p{i}"])
    data = _list("PodList", copy.deepcopy(items))
    out, counts = redact_list_text(data)
    document, whole_counts = _whole(data)
    assert orjson.loads(out) == document and counts == whole_counts
