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

from core import preprocessing
from core.settings import Settings
from core.stores.models import ModelStore
from models import forward, runtimes
from models.builtin import BUILTIN_ID


def create_app() -> FastAPI:
    settings = Settings()
    store = ModelStore(settings.data_dir)
    record = store.get(BUILTIN_ID)
    rt = runtimes.Runtimes(store, settings.model_copy(update={"ort_allow_spinning": True})).get(record)
    import skimage.data
    from PIL import Image

    x = preprocessing.to_tensor(preprocessing.fit(Image.fromarray(skimage.data.chelsea()), record), record)
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
