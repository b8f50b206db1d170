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


@pytest.fixture
def served(tmp_path):
    """Start `bundle serve` on a source (default: the incident sample) with optional faults; each server is
    stopped at the end of the test."""
    from bundler.serve.server import start_server

    servers = []

    def start(source=SAMPLES / "bookinfo-incident.tar.zst", faults=None):
        server = start_server(source, kubeconfig_out=tmp_path / f"kubeconfig-{len(servers)}", faults=faults)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
