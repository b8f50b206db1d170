"""integrity: the bundle's members against its manifest (size and sha256), as `bundle verify` checks them.

An altered member means the evidence itself cannot be trusted (a damaged download, a hand-edited file), so
every other finding about it is suspect: this says which files, before anyone acts on them.
"""

from __future__ import annotations

from collections.abc import Iterator

from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource
from bundler.commands.verify import verify_bundle
from bundler.errors import BundleError

_TITLES = {
    "altered": ("member-altered", "error", "bundle files differ from the manifest's hashes"),
    "missing": ("member-missing", "warning", "files the manifest lists are missing from the bundle"),
    "extra": ("member-extra", "info", "files not listed in the manifest"),
    "manifest": ("manifest-problem", "error", "the manifest cannot be checked"),
}


class Integrity(Analyzer):
    metadata = Metadata(
        id="integrity",
        title="bundle files do not match the manifest",
        severity="error",
        description="Hashes every member and compares size and sha256 with the manifest (what `bundle verify` "
                    "does): altered, missing and unlisted files.",
        docs="docs/archive-format.md",
        inputs=(),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        try:
            # an archive was hashed while the model read it (bundler/model/onepass.py): not read a second time
            result = verify_bundle(ctx.model.bundle, getattr(ctx.model, "digests", None))
        except BundleError as exc:
            yield ctx.finding("manifest-problem", f"the bundle could not be checked: {exc}",
                              title=_TITLES["manifest"][2], severity="error",
                              resources=[Resource("Bundle", str(ctx.model.bundle.root))],
                              evidence=[Evidence(layout.MANIFEST)])
            return
        for problem in result.problems:
            code, severity, title = _TITLES.get(problem.kind, _TITLES["manifest"])
            yield ctx.finding(code, f"{problem.path}: {problem.detail}", title=title, severity=severity,
                              resources=[Resource("File", problem.path)],
                              evidence=[Evidence(problem.path if problem.kind != "missing" else layout.MANIFEST,
                                                 excerpt=problem.detail)],
                              remediation="Re-download or re-collect the bundle; do not act on findings that rest "
                                          "on these files.")
