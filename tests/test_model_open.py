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
