"""The errors a bundle command reports as one line, and the exit codes they map to.

Exit codes (documented in README.md):
    0  success
    1  error: bad input (damaged archive, malformed artifact), verification or validation failed
    2  usage error (click's own code)
    3  analyze --fail-on: a finding at or above the chosen severity exists
    4  collect: the archive was written but is partial
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FINDINGS = 3
EXIT_PARTIAL = 4


class BundleError(Exception):
    """An error to show the user as a single line, without a traceback."""

    exit_code = EXIT_ERROR


class BundleFormatError(BundleError):
    """The input is not a readable bundle (not an archive, truncated, unsafe member, bad manifest)."""


class ArtifactError(BundleError):
    """An artifact cannot be read or parsed (malformed JSON, unknown kind)."""


class ScenarioError(BundleError):
    """A synth scenario file is invalid."""
