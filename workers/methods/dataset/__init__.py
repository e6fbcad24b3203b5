"""Dataset kinds (`core.kinds.dataset`): one module per kind, `run(task) -> Output`, forward passes only."""
