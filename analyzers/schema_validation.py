"""schema-validation: every artifact that does not match its JSON Schema, or that could not be read at all.

``model.validation_issues()`` validates each JSON artifact against ``schemas/<kind>.schema.json`` (one pass,
one member in memory); what could not be parsed, or is in an unsupported layout, lands in ``model.problems``.
Each invalid artifact is one finding pointing at the file and the JSON pointers of its first issues. The rest
of the analysis goes on: the model leaves out what it cannot read, and the analyzers treat it as unknown.

Problems with reason ``not-collected`` are collection-gaps' business and are not repeated here. Entries the
model left out while normalising (reason ``invalid``) are reported with the schema issues of their artifact
when an analyzer that ran before this one found them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource, artifact_resource
from bundler.analysis.api import POINTER_PATTERN
from bundler.manifest import STATUSES_WITH_MEMBER

DOCS = "docs/writing-analyzers.md#schema-validation"
MAX_ISSUES_SHOWN = 5  # in the message; the evidence keeps more

_UNREADABLE = {"malformed": "artifact-unreadable", "unreadable": "artifact-unreadable",
               "missing": "artifact-unreadable", "unsupported": "artifact-unsupported"}
_TITLES = {"artifact-unreadable": "artifact could not be read",
           "artifact-unsupported": "artifact format not supported"}


class SchemaValidation(Analyzer):
    metadata = Metadata(
        id="schema-validation",
        title="artifact does not match its schema",
        severity="error",
        description=("Reports each artifact that fails its JSON Schema, cannot be parsed or is in an unsupported "
                     "layout, with the JSON pointers of the offending values; analyzers read such an artifact "
                     "partly or not at all."),
        docs=DOCS,
        inputs=(),  # whatever the bundle holds
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        model = ctx.model
        invalid: dict[str, list[tuple[str, str]]] = {}
        for path, _kind, issues in model.validation_issues():
            if issues:
                invalid[path] = [(issue.pointer, issue.message) for issue in issues]
        unreadable = []
        for problem in list(model.problems):
            if problem.reason == "invalid":
                issues = invalid.setdefault(problem.path, [])
                if (problem.pointer, problem.message) not in issues:
                    issues.append((problem.pointer, f"left out: {problem.message}"))
            elif problem.reason == "missing" and not _listed_as_collected(model, problem.path):
                continue  # asked for by an analyzer but never part of the bundle: nothing is broken
            elif problem.reason in _UNREADABLE:
                unreadable.append(problem)

        for path in sorted(invalid):
            issues = invalid[path]
            shown = "; ".join(f"{pointer or '/'}: {message}" for pointer, message in issues[:MAX_ISSUES_SHOWN])
            more = f" (and {len(issues) - MAX_ISSUES_SHOWN} more)" if len(issues) > MAX_ISSUES_SHOWN else ""
            yield ctx.finding(
                "schema-invalid",
                f"{path} has {len(issues)} schema violation(s): {shown}{more}",
                resources=[_resource(model, path)],
                evidence=[_evidence(path, pointer, message) for pointer, message in issues],
                remediation=("Check it with 'bundle validate'. A newer Istio may have changed the format (report "
                             "it with the artifact), or the artifact was edited or damaged; the analyzers left "
                             "out what they could not read."),
            )
        for problem in sorted(unreadable, key=lambda p: (p.path, p.pointer, p.message)):
            code = _UNREADABLE[problem.reason]
            yield ctx.finding(
                code,
                f"{problem.path or 'the bundle'}: {problem.message}",
                title=_TITLES[code],
                resources=[_resource(model, problem.path)] if problem.path else [],
                evidence=[_evidence(problem.path, problem.pointer or None, problem.message, problem.line)]
                if problem.path else [],
                remediation=("Check the bundle with 'bundle verify' and the artifact with 'bundle validate'; "
                             "the checks that read it treat its content as unknown."),
            )


def _listed_as_collected(model: Any, path: str) -> bool:
    art = model.artifact(path)
    return art is not None and art.status in STATUSES_WITH_MEMBER


def _resource(model: Any, path: str) -> Resource:
    art = model.artifact(path)
    return artifact_resource(path, art.source if art is not None else None)


def _evidence(path: str, pointer: str | None, message: str, line: int | None = None) -> Evidence:
    if line is not None and line >= 1:
        return Evidence(path, lines=(line, line), excerpt=message)
    valid = isinstance(pointer, str) and POINTER_PATTERN.match(pointer) is not None
    return Evidence(path, pointer if valid else None, excerpt=message)
