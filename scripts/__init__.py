"""Scripts that keep the repository's generated files in step (run from the repository root)."""
