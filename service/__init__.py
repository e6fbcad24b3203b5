"""convscope's HTTP API: the FastAPI app, its routes, request bodies, auth and middleware.

It parses, validates, dispatches and serialises; forward views run on ONNX Runtime through
`models.forward`, jobs are handed to the workers through the job store and queue of `core.jobs`.
`service` may import `core` and `models`; it never imports `workers` or torch, directly or
through anything it imports (import contracts in `pyproject.toml`; `tests/test_architecture.py`).
"""
