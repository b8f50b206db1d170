"""Hostile input: nothing crashes, nothing leaks, nothing escapes.

Every bundle command that reads a bundle is run on every case of the hostile corpus (tests/hostile_corpus.py)
through the real entry point (bundler.cli.main). Each must answer with its documented exit code (bundler/errors.py),
a one-line error and never a traceback, show nothing of the files outside the bundle that its links point at,
and write nothing but its requested outputs: the case's folder (which also holds the working directory and
TMPDIR of the run) is compared before and after. The one real decompression bomb runs in subprocesses under an
address-space limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bundler.cli import main
from tests import hostile_corpus as corpus

REPO = Path(__file__).resolve().parents[1]


# --- running a command -----------------------------------------------------------------------------------------


def command_argv(command: str, built: corpus.Built, other: Path, out_dir: Path) -> tuple[list[str], set[Path]]:
    """The argv of ``command`` on the case, and the files it may create."""
    b = str(built.bundle)
    if command == "inspect":
        return ["inspect", b], set()
    if command == "inspect-json":
        return ["inspect", "-o", "json", b], set()
    if command == "verify":
        return ["verify", b], set()
    if command == "validate":
        return ["validate", str(built.artifact)], set()
    if command == "analyze":  # the text summary on stdout, the HTML report and the findings JSON beside it
        base = out_dir / "report"
        return ["analyze", b, "--format", "text,html,json", "-o", str(base)], {
            out_dir / "report.txt", out_dir / "report.html", out_dir / "report.json"}
    if command == "ztunnel-config-all":
        return ["ztunnel-config", "all", b], set()
    if command == "ztunnel-config-workload-json":
        return ["ztunnel-config", "workload", "-o", "json", b], set()
    if command == "logs":
        return ["logs", b], set()
    if command == "metrics":
        return ["metrics", b], set()
    if command == "diff":  # the hostile side first; the findings side is analyze's
        return ["diff", "--no-findings", b, str(other)], set()
    if command == "pack":
        parent = built.bundle.parent
        name = built.bundle.name.removesuffix(".tar.zst")
        return ["pack", b], {parent / f"{built.bundle.name}.zip", *(parent / f"{name}.part{i:02d}.zip"
                                                                      for i in range(1, 100))}
    raise AssertionError(command)


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The real entry point; any exception but SystemExit fails the test with its traceback."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def snapshot(folder: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``folder``: its type, size and (for files) content digest. Fifos are not opened."""
    found: dict[str, tuple[str, int, str]] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            st = path.lstat()
            if path.is_symlink():
                found[rel] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", 0, "")
            elif path.is_file():
                found[rel] = ("file", st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[rel] = ("special", 0, "")
    return found


def check_outcome(case: corpus.Case, command: str, built: corpus.Built, code: int, out: str, err: str) -> None:
    expected = case.expected(command)
    assert code in expected, f"{case.name} / {command}: exit {code}, expected {sorted(expected)}\n{err[-3000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("wrote ")]
    if code == corpus.USAGE:  # click's own usage message ends with its one "Error: ..." line
        assert lines and lines[-1].startswith("Error: "), err
    elif code == corpus.ERROR and not (command == "validate" and out.strip()):  # validate lists schema errors
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case.name} / {command}: {err!r}"
        if case.refused and command not in ("validate", "pack"):
            for word in case.error_words:
                assert word in lines[0], f"{case.name} / {command}: {word!r} not in {lines[0]!r}"
    else:
        assert len(lines) <= 1, f"{case.name} / {command}: {err!r}"
    if built.secret is not None:
        assert corpus.SECRET not in out and corpus.SECRET not in err, "a file outside the bundle was shown"
    assert "\x1b" not in err, "an escape sequence from the bundle reached the terminal"
    if command in ("logs", "ztunnel-config-all", "ztunnel-config-workload-json"):  # text from the bundle, as it is
        assert "\x1b" not in out and "\x07" not in out, "an escape sequence from the bundle reached the terminal"


def assert_no_analyzer_crashed(case: corpus.Case, report: Path) -> None:
    """The engine turns an analyzer's exception into an "analyzer failed" finding (the analysis goes on): on hostile
    input that is still a bug of the analyzer, whose checks did not run."""
    analyzers = json.loads(report.read_text())["analyzers"]
    crashed = [f"{run['id']}: {run.get('reason')}" for run in analyzers["run"]
               if run["status"] not in ("ok", "skipped")]
    crashed += [f"{run['id']}: {run.get('error')}" for run in analyzers["failed"]]
    assert not crashed, f"{case.name}: analyzers crashed on the hostile bundle: {crashed}"


# --- the corpus x the commands ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[corpus.Built, Path, Path]]:
    """Each case built once (lazily): its Built, its folder, and a copy of the sample (diff's other side)."""
    base = tmp_path_factory.mktemp("hostile")

    class Lazy(dict):
        def __missing__(self, name: str) -> tuple[corpus.Built, Path, Path]:
            folder = base / name
            built = corpus.by_name(name).build(folder / "case")
            other = corpus.copy_sample(folder / "other")
            self[name] = (built, folder, other)
            return self[name]

    return Lazy()


@pytest.mark.parametrize("command", corpus.COMMANDS)
@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.name)
def test_hostile_bundle(case: corpus.Case, command: str, built_cases, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    built, folder, other = built_cases[case.name]
    run_dir = folder / f"run-{command}"
    work, tmp, out_dir = run_dir / "cwd", run_dir / "tmp", run_dir / "out"
    for path in (work, tmp, out_dir):
        path.mkdir(parents=True)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.chdir(work)
    argv, allowed = command_argv(command, built, other, out_dir)
    before = snapshot(folder)
    capsys.readouterr()

    code, out, err = run_in_process(argv, capsys)

    after = snapshot(folder)
    check_outcome(case, command, built, code, out, err)
    created = {folder / rel for rel in set(after) - set(before)}
    unexpected = sorted(str(p) for p in created - allowed)
    assert not unexpected, f"{case.name} / {command} wrote outside its target: {unexpected}"
    changed = sorted(rel for rel in before if after.get(rel) != before[rel])
    assert not changed, f"{case.name} / {command} changed or removed {changed}"
    if code != corpus.OK:
        assert not created, f"{case.name} / {command} failed but wrote {sorted(map(str, created))}"
    elif command == "analyze":
        assert_no_analyzer_crashed(case, out_dir / "report.json")
    for path in created:  # the next command of the case sees the folder as built
        path.unlink()
    shutil.rmtree(run_dir)


def test_every_case_is_documented() -> None:
    text = (REPO / "docs" / "security.md").read_text()
    missing = [case.name for case in [*corpus.CASES, corpus.REAL_BOMB] if f"`{case.name}`" not in text]
    assert not missing, f"docs/security.md does not list {missing}"


# --- the real bomb, under an address-space limit ---------------------------------------------------------------

# Address space for a bundle whose one member decompresses to 320 MiB: less than twice that, so a command that held
# the member (or its one line) whole, as text and as bytes, would fail; 320 MiB are enough for each command here.
MEMORY_LIMIT = 768 << 20


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture(scope="module")
def real_bomb(tmp_path_factory: pytest.TempPathFactory) -> tuple[corpus.Built, Path]:
    folder = tmp_path_factory.mktemp("bomb")
    built = corpus.REAL_BOMB.build(folder / "case")
    assert built.bundle.stat().st_size < 200_000, "the bomb should compress to almost nothing"
    return built, folder


@pytest.mark.slow
@pytest.mark.parametrize("command", ["inspect", "verify", "analyze", "ztunnel-config-all", "logs", "metrics"])
def test_real_bomb_memory_is_bounded(command: str, real_bomb) -> None:
    built, folder = real_bomb
    run_dir = folder / f"run-{command}"
    work, tmp, out_dir = run_dir / "cwd", run_dir / "tmp", run_dir / "out"
    for path in (work, tmp, out_dir):
        path.mkdir(parents=True)
    argv, _ = command_argv(command, built, built.bundle, out_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "TMPDIR": str(tmp)}
    with (run_dir / "stdout").open("wb") as stdout:  # whatever it prints of the 320 MiB stays out of this process
        proc = subprocess.run([sys.executable, "-m", "bundler", *argv], cwd=work, env=env, stdout=stdout,
                              stderr=subprocess.PIPE, preexec_fn=_limit_memory, timeout=300)
    with (run_dir / "stdout").open("rb") as stdout:
        head = stdout.read(1 << 16).decode("utf-8", "replace")
    check_outcome(corpus.REAL_BOMB, command, built, proc.returncode, head, proc.stderr.decode("utf-8", "replace"))
    if command == "analyze":  # a MemoryError in an analyzer would be a finding, not a failed command
        assert_no_analyzer_crashed(corpus.REAL_BOMB, out_dir / "report.json")
    assert not list(tmp.iterdir()), f"{command} left temporary files: {list(tmp.iterdir())}"
    assert not list(work.iterdir())
    shutil.rmtree(run_dir)


# --- the line cap that keeps the bomb's memory bounded ----------------------------------------------------------


def test_a_long_line_is_read_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's lines are at most ZTUNNEL_BUNDLE_MAX_LINE_BYTES long, from an archive and from a folder; no byte
    is lost."""
    from bundler.archive import extract_bundle, open_bundle

    built = corpus.by_name("log-8mb-line").build(tmp_path / "case")
    folder = extract_bundle(built.bundle, tmp_path / "x")
    monkeypatch.setenv("ZTUNNEL_BUNDLE_MAX_LINE_BYTES", str(1 << 20))
    for source in (built.bundle, folder):
        with open_bundle(source) as bundle:
            whole = bundle.read(corpus.ZT_LOG)
            with bundle.open(corpus.ZT_LOG) as fh:
                lines = list(fh)
        assert max(map(len, lines)) == 1 << 20
        assert b"".join(lines) == whole
