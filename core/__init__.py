"""convscope's torch-free shared core, which the API (`service`) and the workers (`workers`) both stand on.

Here live the settings, the error hierarchy, the image pipeline (`images`, `preprocessing`), pictures
(`render`) and their PNG/npy encoding (`encoding`), the model record, the stores (models, images,
datasets), the job store with its states, queueing and lost-job supervision (`core.jobs`), the kind
registry with every kind's params (`core.kinds`), the types methods exchange with the runner
(`core.methods`) and logging.
`core` may import the standard library and third-party packages except torch, ONNX Runtime and
FastAPI; it never imports `service`, `workers` or `models` (checked by the import contracts in
`pyproject.toml`).
"""
