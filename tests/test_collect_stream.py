"""bundler.collect.stream: the archive written while artifacts finish, in any order, holds the members in collection
order (priority, then layout order) with the same bytes and manifest entries as one written afterwards; a failed
write loses nothing silently."""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from bundler import layout
from bundler.archive import BundleWriter, open_bundle
from bundler.collect.engine import Outcome
from bundler.collect.stream import StreamingArchive, write_outcome
from bundler.collect.tasks import PRIORITY_LOGS, PRIORITY_STATE, PRIORITY_VIEWS, ApiGet
from bundler.errors import BundleError

PATHS = [
    "cluster/pods.json",
    "cluster/nodes.json",
    "ztunnel/node-b/ztunnel-b/config_dump.json",
    "ztunnel/node-a/ztunnel-a/config_dump.json",
    "ztunnel/node-a/ztunnel-a/pod.json",
    "ztunnel/node-a/ztunnel-a/logs/istio-proxy.log",
    "istiod/istiod-1/syncz.json",
    "istiod/proxies/ztunnel-a/config_dump.json",
]


def _outcomes(tmp_path: Path) -> list[Outcome]:
    out = []
    for i, path in enumerate(PATHS):
        priority = PRIORITY_LOGS if "/logs/" in path else PRIORITY_VIEWS if "dump" in path else PRIORITY_STATE
        task = ApiGet(path, priority, api_path=f"/x/{i}")
        if i == 5:  # one artifact that could not be collected
            out.append(Outcome(task, "error", "503 Service Unavailable", attempts=4))
            continue
        spool = tmp_path / f"spool-{i}"
        spool.write_bytes(f"artifact {i} {path}\n".encode() * (i + 1))
        out.append(Outcome(task, "ok", spool=spool, size=spool.stat().st_size, attempts=1,
                           started="2026-11-25T10:00:00Z", finished="2026-11-25T10:00:01Z"))
    return out


def _describe(writer: BundleWriter) -> None:
    writer.manifest.extra["warnings"] = ["described last"]


def _member_names(path: Path) -> list[str]:
    with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        return [m.name.split("/", 1)[1] for m in tar]


@pytest.mark.parametrize("seed", range(5))
def test_any_arrival_order_gives_the_archive_written_afterwards(tmp_path: Path, seed: int) -> None:
    outcomes = _outcomes(tmp_path)
    after = tmp_path / "after.tar.zst"
    with BundleWriter(after, mtime=0) as writer:
        _describe(writer)
        for o in sorted(outcomes, key=lambda o: (o.task.priority, layout.order_key(o.task.path))):
            write_outcome(writer, o)

    streamed = tmp_path / "streamed.tar.zst"
    stream = StreamingArchive(streamed, [o.task for o in outcomes])
    arrivals = list(outcomes)
    random.Random(seed).shuffle(arrivals)
    for o in arrivals:
        stream.put(o)
    size = stream.finish(outcomes, _describe)

    assert size == streamed.stat().st_size
    names = _member_names(streamed)
    assert names == _member_names(after)
    assert names == [
        "istiod/proxies/ztunnel-a/config_dump.json",  # views first, as they are fetched
        "ztunnel/node-a/ztunnel-a/config_dump.json",
        "ztunnel/node-b/ztunnel-b/config_dump.json",
        "cluster/nodes.json",  # then cluster state
        "cluster/pods.json",
        "istiod/istiod-1/syncz.json",
        "ztunnel/node-a/ztunnel-a/pod.json",
        layout.MANIFEST,  # the log was not collected: a manifest entry only
    ]
    with open_bundle(streamed) as a, open_bundle(after) as b:
        def artifacts(bundle) -> dict[str, bytes]:
            return {k: v for k, v in bundle.iter_members() if k != layout.MANIFEST}  # the manifest holds times

        assert artifacts(a) == artifacts(b)
        entries = {x.path: (x.status, x.sha256, x.reason) for x in a.manifest.artifacts}
        assert entries == {x.path: (x.status, x.sha256, x.reason) for x in b.manifest.artifacts}
        assert a.manifest.extra["warnings"] == ["described last"]


def test_outcomes_that_never_reached_put_are_written_by_finish(tmp_path: Path) -> None:
    outcomes = _outcomes(tmp_path)
    out = tmp_path / "late.tar.zst"
    stream = StreamingArchive(out, [o.task for o in outcomes])
    for o in outcomes[::2]:
        stream.put(o)
    stream.finish(outcomes, _describe)
    with open_bundle(out) as bundle:
        assert sorted(a.path for a in bundle.manifest.artifacts) == sorted(PATHS)


def test_a_failed_write_is_reported_and_leaves_no_file(tmp_path: Path) -> None:
    outcomes = _outcomes(tmp_path)
    outcomes[0].spool.unlink()  # cluster/pods.json: gone before it could be written
    out = tmp_path / "failed.tar.zst"
    stream = StreamingArchive(out, [o.task for o in outcomes])
    for o in outcomes:
        stream.put(o)
    with pytest.raises(BundleError, match="not written"):
        stream.finish(outcomes, _describe)
    assert list(tmp_path.glob("*.tar.zst*")) == []
    assert not any(p.name.startswith(".failed.tar.zst") for p in tmp_path.iterdir())


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    outcomes = _outcomes(tmp_path)
    out = tmp_path / "aborted.tar.zst"
    stream = StreamingArchive(out, [o.task for o in outcomes])
    for o in outcomes[:3]:
        stream.put(o)
    stream.abort()
    assert not out.exists()
    assert not any(p.name.startswith(".aborted.tar.zst") for p in tmp_path.iterdir())
