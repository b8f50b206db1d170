"""Pure renderers of bundle data (no I/O)."""
