"""The house's shape holds: the API process never loads torch, and the import contracts are kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_api_loads_no_torch():
    probe = "import service.app, sys; assert 'torch' not in sys.modules, 'service.app pulled in torch'"
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)


def test_importing_a_method_loads_no_redis_rq_or_onnxruntime():
    probe = ("import sys, workers.methods.attribution.gradcam, workers.methods.dataset.top_activations, "
             "workers.methods.making.feature_vis; "
             "bad = {'redis', 'rq', 'onnxruntime', 'fastapi'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)


def test_only_dependencies_that_do_io_run_in_the_thread_pool():
    """FastAPI runs a plain-function dependency in its thread pool: a thread hop on every request (about 0.1 ms
    here) that only a dependency doing blocking I/O is worth. The app's plain ones are listed here."""
    import inspect

    from fastapi.routing import APIRoute

    from service.app import create_app

    def plain(dependant, found):
        for sub in dependant.dependencies:
            if sub.call is not None and not inspect.iscoroutinefunction(sub.call):
                found.add(f"{sub.call.__module__}.{sub.call.__qualname__}")
            plain(sub, found)
        return found

    def routes(items):
        for route in items:
            if isinstance(route, APIRoute):
                yield route
            yield from routes(getattr(getattr(route, "original_router", None), "routes", []))

    found: set[str] = set()
    checked = 0
    for route in routes(create_app().routes):
        plain(route.dependant, found)
        checked += 1
    assert checked > 20
    assert found == {"service.routes.datasets.dataset_store"}  # opens the dataset storage (a folder or a bucket)
