"""``bundle analyze BUNDLE``: run the analyzers on a bundle and report the findings (text, JSON, HTML).

Exit status: 0, or 3 with ``--fail-on LEVEL`` when a finding at or above LEVEL remains after suppressions
(whatever the output format); 1 when the bundle (or the suppressions file) cannot be read; 2 for a usage
error (an unknown analyzer id, an unknown format).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from bundler.errors import EXIT_FINDINGS, BundleError

FORMATS = ("text", "json", "html")
SUFFIXES = {"text": ".txt", "json": ".json", "html": ".html"}
FAIL_LEVELS = ("warning", "error", "critical")
TEXT_LIMIT = 200  # finding lines in the text summary


def _formats(value: str | None) -> list[str]:
    if value is None:
        return ["text"]
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise click.BadParameter(f"{', '.join(unknown) or value!r}: choose from {', '.join(FORMATS)}",
                                 param_hint="'--format'")
    return list(dict.fromkeys(names))


def _targets(formats: list[str], output: Path | None) -> dict[str, Path | None]:
    """Where each format goes: a file, or None for stdout."""
    if output is None:
        if len(formats) > 1:
            raise click.UsageError("-o PATH is needed to write more than one format")
        return {formats[0]: None}
    if len(formats) == 1 and output.name.endswith(SUFFIXES[formats[0]]):
        return {formats[0]: output}
    return {fmt: output.with_name(output.name + SUFFIXES[fmt]) for fmt in formats}


@contextlib.contextmanager
def open_model(path: Path) -> Iterator[Any]:
    """The bundle's canonical model; anything that goes wrong opening it is one line (exit 1)."""
    try:
        from bundler.model import BundleModel
    except ImportError as exc:
        raise BundleError(f"the bundle model is not available in this installation ({exc})") from None
    try:
        model = BundleModel.open(path)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{path}: cannot read the bundle: {type(exc).__name__}: {exc}") from None
    try:
        # The model reads what it can of a damaged or unsafe bundle and notes the rest among its problems; a
        # command refuses such a bundle with the reader's one-line error, as inspect and verify do
        # (docs/security.md): listing the members checks every one of them.
        model.bundle.names()
    except BaseException as exc:
        close = getattr(model, "close", None)
        if callable(close):
            close()
        if isinstance(exc, BundleError) or not isinstance(exc, Exception):
            raise
        raise BundleError(f"{path}: cannot read the bundle: {type(exc).__name__}: {exc}") from None
    if hasattr(model, "__enter__"):
        with model:
            yield model
        return
    try:
        yield model
    finally:
        close = getattr(model, "close", None)
        if callable(close):
            close()


def _list(fmt: str) -> None:
    from bundler.analysis.engine import load_analyzers

    registry = load_analyzers()
    rows = [{"id": a.metadata.id, "severity": a.metadata.severity, "title": a.metadata.title,
             "inputs": list(a.metadata.inputs), "docs": a.metadata.docs, "description": a.metadata.description}
            for a in registry.analyzers]
    failed = [{"id": e.id, "error": e.message} for e in registry.errors]
    if fmt == "json":
        click.echo(json.dumps({"analyzers": rows, "failed": failed}, indent=2))
        return
    if not rows and not failed:
        click.echo("no analyzers registered (entry-point group ztunnel_bundle.analyzers; run pip install -e .)")
    width = max([len(r["id"]) for r in rows] + [len(f["id"]) for f in failed] + [2])
    click.echo(f"{'ID':<{width}}  {'SEVERITY':<8}  TITLE")
    for r in rows:
        click.echo(f"{r['id']:<{width}}  {r['severity']:<8}  {r['title']}")
        click.echo(f"{'':<{width}}  {'':<8}  inputs: {', '.join(r['inputs']) or '(none declared: always runs)'}; docs: {r['docs']}")
    for f in failed:
        click.echo(f"{f['id']:<{width}}  {'-':<8}  failed to load: {f['error']}")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _html_renderer() -> Callable[[dict[str, Any]], str]:
    """bundler.report.html.render, imported only when HTML is asked for (it loads jinja2)."""
    try:
        from bundler.report.html import render
    except ImportError as exc:
        raise BundleError(f"HTML output is not available in this installation ({exc})") from None
    return render


@click.command("analyze")
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--list", "list_", is_flag=True, help="List the analyzers (id, severity, title, inputs, docs) and exit.")
@click.option("--only", multiple=True, metavar="ID", help="Run only this analyzer (repeatable).")
@click.option("--skip", multiple=True, metavar="ID", help="Do not run this analyzer (repeatable).")
@click.option("--suppress", "suppress_file", type=click.Path(path_type=Path), metavar="FILE",
              help="YAML list of accepted findings: {id, resource, reason, expires}.")
@click.option("--format", "format_", metavar="FORMATS",
              help="Comma list of text, json, html (default: a text summary on stdout).")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PATH",
              help="Output base path: writes PATH.html, PATH.json, PATH.txt (or PATH itself for one format "
                   "when it has that suffix).")
@click.option("--fail-on", type=click.Choice(FAIL_LEVELS), help="Exit 3 when a finding at or above this severity exists.")
def command(bundle: Path | None, list_: bool, only: tuple[str, ...], skip: tuple[str, ...],
            suppress_file: Path | None, format_: str | None, output: Path | None, fail_on: str | None) -> None:
    """Analyze BUNDLE (a .tar.zst archive, its .zip parts or an extracted directory) and report findings.

    Without --format the text summary goes to stdout. With -o, each format is written to a file (and the
    text summary still goes to stdout); without -o, the single format goes to stdout.
    """
    formats = _formats(format_)
    if list_:
        _list("json" if formats == ["json"] else "text")
        return
    if bundle is None:
        raise click.UsageError("missing argument BUNDLE")
    targets = _targets(formats, output)

    from bundler.analysis.engine import UnknownAnalyzerError, run_analyzers
    from bundler.analysis.output import html_report, render_json, render_text
    from bundler.analysis.suppress import load_suppressions

    render_html = _html_renderer() if "html" in targets else None  # fail before the analysis runs
    suppressions = load_suppressions(suppress_file) if suppress_file is not None else []
    with open_model(bundle) as model:
        try:
            report = run_analyzers(model, only=only, skip=skip, suppressions=suppressions, source=str(bundle))
        except UnknownAnalyzerError as exc:
            raise click.UsageError(str(exc)) from None
        extra_views: dict[str, Any] = {}
        if "html" in targets:
            bundle_obj = getattr(model, "bundle", None)
            if bundle_obj is not None:
                from bundler.commands.inspect import summarize

                with contextlib.suppress(Exception):  # the report shows less, the analysis stands
                    extra_views["bundle"] = summarize(bundle_obj)

    stdout_used = False
    for fmt, path in targets.items():
        if fmt == "text":
            text = render_text(report, limit=None if path is not None else TEXT_LIMIT)
        elif fmt == "json":
            text = render_json(report)
        else:
            assert render_html is not None
            text = render_html(html_report(report, extra_views))
        if path is None:
            click.echo(text, nl=False)
            stdout_used = True
        else:
            _write(path, text)
            click.echo(f"wrote {path}", err=True)
    if not stdout_used:
        click.echo(render_text(report, limit=TEXT_LIMIT), nl=False)

    if fail_on is not None and report.has_at_or_above(fail_on):
        # sys.exit, not ctx.exit: bundler.cli.main runs click without standalone mode (see commands/validate.py)
        sys.exit(EXIT_FINDINGS)
