"""Shared fixtures: the incident sample served once per session by ``bundle serve`` (in-process, on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="session")
def served_incident():
    """A RunningServer (bundler.serve.server) for samples/bookinfo-incident.tar.zst, stopped at the end."""
    from bundler.serve.server import start_server

    server = start_server(SAMPLES / "bookinfo-incident.tar.zst")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def incident_dir(tmp_path_factory) -> Path:
    """The incident sample extracted: its files are what the served cluster must answer, byte for byte."""
    from bundler.archive import extract_bundle

    return Path(extract_bundle(SAMPLES / "bookinfo-incident.tar.zst", tmp_path_factory.mktemp("incident")))
