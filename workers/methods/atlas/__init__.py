"""Atlas kinds (`core.kinds.atlas`): one module per kind, `run(task) -> Output`."""
