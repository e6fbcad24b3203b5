"""convscope's job workers: dequeue a job, load its inputs and network, call a method, encode and store.

The runner (`execute`, `inputs`, `networks`, `dataset_feed`, `artifacts`) may import `core`,
`models`, torch, ONNX Runtime, Redis and RQ. The methods themselves (`workers.methods`) are pure
functions of tensors and arrays: torch, numpy and `core`'s types (`core.methods`, the params) only,
never `service`, `rq`, `redis`, `fastapi`, `onnxruntime` or the stores. `workers` never imports
`service` (import contracts in `pyproject.toml`).
"""
