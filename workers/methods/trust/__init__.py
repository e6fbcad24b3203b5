"""Kinds that judge attribution maps (`core.kinds.trust`): one module per kind, `run(task) -> Output`."""
