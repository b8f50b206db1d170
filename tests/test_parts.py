"""GitHub .zip parts: packing, reading back through every command, and damaged or missing parts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bundler.archive import open_bundle
from bundler.errors import BundleFormatError
from bundler.parts import pack

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bookinfo-incident.tar.zst"


def bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler", *args], capture_output=True, text=True)


def test_one_part_when_it_fits(tmp_path):
    parts = pack(SAMPLE, out_dir=tmp_path)
    assert [p.name for p in parts] == ["bookinfo-incident.tar.zst.zip"]
    with open_bundle(parts[0]) as b:
        assert b.read("cluster/pods.json") == open_bundle(SAMPLE).read("cluster/pods.json")


def test_several_parts_each_under_the_limit_read_back_by_every_command(tmp_path):
    size = 64 * 1024 + 8000  # small parts, to split the small sample
    parts = pack(SAMPLE, part_size=size, out_dir=tmp_path)
    assert len(parts) >= 3 and all(p.stat().st_size <= size for p in parts)
    assert all(zipfile.is_zipfile(p) for p in parts)
    for part in (parts[0], parts[-1]):  # any part names the bundle
        for command in (["verify"], ["inspect", "-o", "json"]):
            result = bundle(*command, str(part))
            assert result.returncode == 0, result.stderr
    with open_bundle(parts[1]) as b, open_bundle(SAMPLE) as original:
        assert dict(b.iter_members()) == dict(original.iter_members())


def test_a_missing_part_is_named(tmp_path):
    parts = pack(SAMPLE, part_size=64 * 1024 + 8000, out_dir=tmp_path)
    parts[1].unlink()
    with pytest.raises(BundleFormatError, match="part02"):
        open_bundle(parts[0])
    result = bundle("verify", str(parts[0]))
    assert result.returncode == 1 and "part02" in result.stderr and "Traceback" not in result.stderr


def test_an_altered_part_is_refused(tmp_path):
    parts = pack(SAMPLE, part_size=64 * 1024 + 8000, out_dir=tmp_path)
    with zipfile.ZipFile(parts[-1]) as zf:
        name = zf.namelist()[0]
        data = bytearray(zf.read(name))
    data[10] ^= 0xFF
    with zipfile.ZipFile(parts[-1], "w") as zf:
        zf.writestr(name, bytes(data))
    with pytest.raises(BundleFormatError, match="does not match"):
        open_bundle(parts[0])


def test_pack_command(tmp_path):
    target = tmp_path / SAMPLE.name
    target.write_bytes(SAMPLE.read_bytes())
    result = bundle("pack", str(target), "--part-size", "80k")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) >= 2
    assert bundle("pack", str(tmp_path / "missing.tar.zst")).returncode == 2
