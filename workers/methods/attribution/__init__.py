"""Attribution kinds (`core.kinds.attribution`): one module per kind, `run(task) -> Attribution`."""
