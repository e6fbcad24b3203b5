"""The least an HTTP predict costs on this machine: a bare FastAPI app on uvicorn, run as `scripts/run.sh` runs the
API, with one route and nothing of the service's own (no keys, rate limit, admission, batcher, time limit, input
cache, Server-Timing, metrics or logs). It reads the JSON body, runs the built-in model's forward for one prepared
image on FastAPI's thread pool, as `bench.serve.Bare` runs it (ONNX Runtime's spinning pool, the API's threads),
and answers the top 5 classes as the service's predict does.

`bench/serve.py` calls it in turns with the service's predict and the bare forward, so that the distance between
the two HTTP figures is what the service itself adds, and the distance from the bare forward to this one is what
any Python web app that hops to a thread would add here.

Run: python -m uvicorn bench.floor:create_app --factory --port 8000
"""

from __future__ import annotations

import json

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from core import preprocessing
from core.model_record import ModelRecord
from core.settings import Settings
from core.stores.models import ModelStore
from models import forward, runtimes
from models.builtin import BUILTIN_ID


def bare_builtin(settings: Settings) -> tuple[ModelStore, ModelRecord, runtimes.ModelRuntime, Image.Image, np.ndarray]:
    """What the benches' bare forward runs: the built-in model's store and record, its runtime with ONNX Runtime's
    defaults (pool threads that spin, as the API's twin for a lone run: the least a forward costs) and the API's
    threads, no batcher; and the bench's photo (chelsea) with its model input."""
    import skimage.data

    store = ModelStore(settings.data_dir)
    record = store.get(BUILTIN_ID)
    spinning = runtimes.Runtimes(store, settings.model_copy(update={"ort_allow_spinning": True})).get(record)
    photo = Image.fromarray(skimage.data.chelsea())
    return store, record, spinning, photo, preprocessing.to_tensor(preprocessing.fit(photo, record), record)


def create_app() -> FastAPI:
    _, _, rt, _, x = bare_builtin(Settings())
    rt.logits(np.repeat(x, 2, axis=0))  # the session built and run before the first request
    app = FastAPI()

    def work() -> bytes:
        return json.dumps({"predictions": forward.predict(rt, x, 5)}).encode()

    @app.get("/readyz")
    async def ready() -> dict:  # built above: ready once it answers
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.json()
        return Response(await run_in_threadpool(work), media_type="application/json")

    return app
