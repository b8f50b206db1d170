"""bundler.redact_blocks: redacting a pretty-printed dump block by block gives exactly what redacting it whole gives
(the secret corpus spliced in as values, keys and raw lines; upstream dumps; generated documents), and blocks seen
before are not redacted again."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.redact import redact_bytes
from bundler.redact_blocks import BlockRedactor
from bundler.synth.build import ztunnel_json
from tests.test_redact import CASES, _fill, material  # noqa: F401  (material is a fixture)

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"


def _workload(i: int, **extra: Any) -> dict[str, Any]:
    w = {
        "uid": f"Kubernetes//Pod/team-{i % 7}/app-{i}",
        "name": f"app-{i}",
        "namespace": f"team-{i % 7}",
        "workloadIps": [f"10.0.{i // 250}.{i % 250}"],
        "protocol": "HBONE",
        "serviceAccount": "default",
        "services": {f"team-{i % 7}/svc-{i % 5}.team-{i % 7}.svc.cluster.local": {"80": 8080}},
        "status": "Healthy",
        "capacity": 1,
    }
    w.update(extra)
    return w


def _dump(workloads: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "certificates": [{"identity": "spiffe://cluster.local/ns/a/sa/b", "state": "Available",
                          "certChain": [{"pem": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ0ag==",
                                         "serialNumber": "1", "validFrom": "2026-11-25T00:00:00Z",
                                         "expirationTime": "2026-11-26T00:00:00Z"}]}],
        "policies": [],
        "services": [{"name": f"svc-{i}", "namespace": "team-0", "hostname": f"svc-{i}.team-0.svc.cluster.local",
                      "vips": [f"default/10.96.0.{i}"], "ports": {"80": 8080}} for i in range(20)],
        "workloads": workloads,
        "config": {"clusterId": "Kubernetes", "proxyMode": "Shared"},
    }
    doc.update(top)
    return doc


def _assert_same_as_whole(data: bytes, redactor: BlockRedactor | None = None) -> tuple[bytes, Counter[str]]:
    redactor = redactor or BlockRedactor(smallest_document=0)
    whole, whole_counts = redact_bytes(data)
    blocks, block_counts = redactor.redact_bytes(data)
    assert blocks == whole
    assert block_counts == whole_counts
    return blocks, block_counts


def _case_texts(material: dict[str, str]) -> list[tuple[str, str]]:
    return [(case["id"], _fill(case["text"], material)) for case in CASES]


def test_each_corpus_secret_as_a_value_is_redacted_as_in_the_whole(material: dict[str, str]) -> None:
    for case_id, text in _case_texts(material):
        workloads = [_workload(i) for i in range(40)]
        workloads[17]["name"] = text
        workloads[30]["annotations"] = {"note": text, "password": text}
        _, counts = _assert_same_as_whole(ztunnel_json(_dump(workloads)))
        assert counts, case_id  # the secret was found (by either path)


def test_each_corpus_secret_as_raw_lines_is_redacted_as_in_the_whole(material: dict[str, str]) -> None:
    # Not JSON any more: the raw text (multi-line PEMs, wrapped base64, YAML) sits between two elements, indented
    # like an element and not, so blocks start right before and right after it.
    base = ztunnel_json(_dump([_workload(i) for i in range(40)]))
    at = base.index(b"\n    {", len(base) // 2) + 1
    for case_id, text in _case_texts(material):
        for indent in ("", "    ", "  "):
            raw = "".join(indent + line + "\n" for line in text.splitlines())
            data = base[:at] + raw.encode() + base[at:]
            _, counts = _assert_same_as_whole(data)
            assert counts, (case_id, indent)


def test_rules_reaching_across_lines_see_the_whole_document(material: dict[str, str]) -> None:
    # Each of these would be cut in two at a block boundary; redacted whole, each is one redaction.
    body = material["RSA_PEM_BODY"]
    across = [
        "-----BEGIN RSA PRIVATE KEY-----\n    {\n" + body + "\n-----END RSA PRIVATE KEY-----",
        '{"private_key_id":\n  "0123456789abcdef0123456789abcdef"}',
    ]
    base = ztunnel_json(_dump([_workload(i) for i in range(40)]))
    at = base.index(b"\n    {", len(base) // 2) + 1
    for text in across:
        data = base[:at] + text.encode() + b"\n" + base[at:]
        out, counts = _assert_same_as_whole(data)
        assert sum(counts.values()) == 1, text
        assert b"0123456789abcdef0123456789abcdef" not in out and body.splitlines()[1].encode() not in out


def test_upstream_dumps_are_redacted_as_whole() -> None:
    dumps = sorted(UPSTREAM.rglob("testdata/dump.json"))
    assert dumps
    for path in dumps:
        data = path.read_bytes()
        redacted, counts = BlockRedactor(smallest_document=0).redact_bytes(data)
        assert (redacted, counts) == redact_bytes(data)
        assert redacted is data  # nothing secret in them


def test_sample_dump_is_returned_unchanged_and_remembered() -> None:
    data = ztunnel_json(_dump([_workload(i) for i in range(3000)]))
    redactor = BlockRedactor()
    assert len(data) > 256 * 1024
    out, counts = redactor.redact_bytes(data)
    assert out is data and not counts
    first = redactor.blocks_redacted
    assert first > 0
    again, _ = redactor.redact_bytes(data)
    assert again is data
    assert redactor.blocks_redacted == first  # every block was remembered


def test_a_dump_differing_in_one_workload_redacts_only_that_block(material: dict[str, str]) -> None:
    workloads = [_workload(i) for i in range(3000)]
    redactor = BlockRedactor()
    redactor.redact_bytes(ztunnel_json(_dump(workloads)))
    seen = redactor.blocks_redacted
    changed = copy.deepcopy(workloads)
    changed[1234]["annotations"] = {"token": material["JWT"]}
    out, counts = _assert_same_as_whole(ztunnel_json(_dump(changed)), redactor)
    assert counts == Counter({"jwt": 1})
    assert material["JWT"].encode() not in out
    # the workloads member was new, so it was cut into its elements, and only the changed one met the rules
    assert redactor.blocks_redacted - seen == 1


def test_documents_with_private_keys_are_redacted_whole(material: dict[str, str]) -> None:
    workloads = [_workload(i) for i in range(3000)]
    workloads[5]["name"] = material["RSA_PEM"]
    redactor = BlockRedactor()
    out, counts = _assert_same_as_whole(ztunnel_json(_dump(workloads)), redactor)
    assert counts["private-key"] == 1
    _assert_same_as_whole(ztunnel_json(_dump(workloads)), redactor)  # and again, with blocks remembered


def test_other_texts_are_redacted_whole() -> None:
    redactor = BlockRedactor(smallest_document=0)
    log = b"2026-11-25T11:00:00Z info access connection complete\n" * 10_000
    assert redactor.redact_bytes(log) == redact_bytes(log)
    assert redactor.blocks_redacted == 0


_SECRET_SHAPED = st.sampled_from([case["text"] for case in CASES])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.one_of(st.text(max_size=40), _SECRET_SHAPED), min_size=1, max_size=8),
    positions=st.lists(st.integers(min_value=0, max_value=59), min_size=8, max_size=8),
    raw=st.lists(st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
                           _SECRET_SHAPED), max_size=3),
)
def test_generated_documents_are_redacted_as_whole(material: dict[str, str], values: list[str],
                                                   positions: list[int], raw: list[str]) -> None:
    workloads = [_workload(i) for i in range(60)]
    for value, pos in zip(values, positions, strict=False):
        filled = _fill(value, material)
        workloads[pos]["authorization"] = filled
        workloads[(pos * 7) % 60][filled[:30] or "k"] = filled
    data = ztunnel_json(_dump(workloads))
    for i, text in enumerate(raw):
        at = data.find(b"\n    {", (i + 1) * len(data) // (len(raw) + 1)) + 1
        data = data[:at] + _fill(text, material).encode("utf-8", "surrogatepass") + b"\n" + data[at:]
    _assert_same_as_whole(data)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_line_endings(newline: bytes, material: dict[str, str]) -> None:
    workloads = [_workload(i) for i in range(50)]
    workloads[3]["password"] = "hunter2hunter2"
    data = ztunnel_json(_dump(workloads)).replace(b"\n", newline)
    _, counts = _assert_same_as_whole(data)
    assert counts["password-assignment"] == 1
