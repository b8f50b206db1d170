"""The repository's promises: the README's commands, CI running the same test command, and a wheel that
carries the schemas and templates (a non-editable install must find them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [m.strip() for m in re.findall(r"```sh\n(.+?)\n\s*```", setup)]


def test_readme_starts_with_the_two_setup_commands():
    install_and_run, test = readme_commands()[:2]
    assert install_and_run.startswith("pip install . && bundle analyze samples/bookinfo-incident.tar.zst")
    assert "samples/bookinfo-" in install_and_run
    assert test.startswith("pip install -e '.[test]' && ") and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test = readme_commands()[1]
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test in lines


def test_readme_first_command_works_on_the_sample(tmp_path):
    # The first command's `bundle ...` parts, run against this checkout's installed CLI; outputs go to tmp_path.
    install_and_run = readme_commands()[0]
    for part in install_and_run.split(" && ")[1:]:
        args = part.split()
        assert args[0] == "bundle"
        args = [str(REPO / a) if a.startswith("samples/") else a for a in args[1:]]
        if "-o" in args:
            args[args.index("-o") + 1] = str(tmp_path / args[args.index("-o") + 1])
        result = subprocess.run([sys.executable, "-m", "bundler", *args], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, (part, result.stderr)
        assert "findings" in result.stdout
    report = tmp_path / "bookinfo-incident-report.html"
    assert report.exists() and b"cert-expired" in report.read_bytes()


@pytest.mark.slow
def test_wheel_ships_schemas_and_templates_and_finds_them(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("ztunnel_bundle-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for schema in (REPO / "schemas").glob("*.json"):
        assert f"bundler/_data/schemas/{schema.name}" in names
    assert any(n.startswith("bundler/_data/templates/") for n in names)
    # A non-editable install in a fresh venv (dependencies from this interpreter's site-packages).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    probe = ("import bundler.resources as r; from bundler.validation import load_validator; "
             "load_validator('ztunnel-config-dump'); print(r.schemas_dir())")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert str(env_dir) in result.stdout and "_data/schemas" in result.stdout
