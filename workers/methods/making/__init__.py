"""Image-making kinds (`core.kinds.making`): one module per kind, `run(task) -> Made`."""
