"""Built-in analyzers (registered through the ``ztunnel_bundle.analyzers`` entry-point group)."""
