"""BundleModel.open extracts an archive to a temporary folder (random access into one zstd stream would
decompress from its start for every member) and removes it on close."""

from __future__ import annotations

from pathlib import Path

from bundler.model import BundleModel

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bookinfo-incident.tar.zst"


def test_archive_is_read_from_an_extracted_copy_removed_on_close():
    model = BundleModel.open(SAMPLE)
    try:
        assert not getattr(model.bundle, "is_archive", True)
        folder = Path(model._cleanup)
        assert folder.is_dir()
        assert str(model.bundle.source) == str(SAMPLE)
        assert model.manifest.generator == "synth"
        assert sum(1 for _ in model.ztunnels()) == 3
    finally:
        model.close()
    assert not folder.exists()


def test_repeated_istiod_dumps_are_written_once_and_read_back_whole():
    from bundler import layout
    from bundler.archive import open_bundle

    with open_bundle(SAMPLE) as archive:
        originals = {path: data for path, data in archive.iter_members()
                     if layout.kind_of_path(path) in (layout.KIND_ISTIOD_CONFIG_DUMP, layout.KIND_ISTIOD_WADS)}
    model = BundleModel.open(SAMPLE)
    try:
        folder = Path(model._cleanup)
        on_disk = [p for p in folder.rglob("*") if p.is_file() and "/istiod/proxies/" in p.as_posix()]
        assert len(on_disk) == len(set(originals.values())) < len(originals)  # one file per distinct content
        for path, data in originals.items():
            assert model.bundle.read(path) == data
            with model.bundle.open(path) as fh:
                assert fh.read() == data
            assert model.digests[path][0] == len(data)
    finally:
        model.close()
