"""``python -m bundler`` is the ``bundle`` command."""

from bundler.cli import main

main()
