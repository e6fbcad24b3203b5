"""The image of a job is decoded once: the API keeps the pixels it decoded at submission (briefly, for small
images) and the worker prepares the input from them; without them it decodes the file, to the same input."""

from __future__ import annotations

import hashlib
import io
import types
import uuid

import numpy as np
import redis

from core import images
from core.jobs.store import JobStore
from core.settings import Settings
from tests.conftest import encode, sample
from tests.jobs.conftest import submit, wait_for
from workers.inputs import Loading, load_image


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_the_api_keeps_the_decoded_pixels_briefly_and_the_job_sees_the_same_input(jobs_client, job_settings, builtin):
    data = encode(np.ascontiguousarray(sample("coffee")[3:, 5:]))
    job = submit(jobs_client, "saliency", data, {"evaluate": False}).json()
    key = f"{job_settings.redis_prefix}jobinput:{hashlib.sha256(data).hexdigest()}.rgb"
    client = redis.Redis.from_url(job_settings.redis_url)
    np.testing.assert_array_equal(npy(client.get(key)), np.asarray(images.decode(data, max_bytes=10**8,
                                                                                 max_pixels=10**8)))
    assert 0 < client.ttl(key) <= 600  # a shortcut for the job about to run, not kept for the artifacts' day
    job = wait_for(jobs_client, job["id"])
    assert job["status"] == "finished", job
    x = npy(jobs_client.get(f"/v1/jobs/{job['id']}/artifacts/input.npy").content)
    np.testing.assert_array_equal(x, images.prepare(data, builtin, max_bytes=10**8, max_pixels=10**8).x)


def test_load_image_from_the_decoded_pixels_equals_decoding_the_file(builtin):
    settings = Settings(redis_prefix=f"test-inputs-{uuid.uuid4().hex[:8]}:")
    store = JobStore(redis.Redis.from_url(settings.redis_url), settings.redis_prefix, 60)
    ctx = types.SimpleNamespace(store=store, settings=settings)
    data = encode(sample("camera") if sample("camera").ndim == 3 else np.stack([sample("camera")] * 3, -1))
    decoded = io.BytesIO()
    np.save(decoded, np.asarray(images.decode(data, max_bytes=10**8, max_pixels=10**8)), allow_pickle=False)
    ref = hashlib.sha256(data).hexdigest()
    item = Loading("image", ref, builtin, None, lambda step, total: None)
    try:
        store.files.put_input(ref, data, decoded.getvalue())
        shortcut = load_image(ctx, item)
        store.client.delete(store.keys.decoded(ref))
        decoding = load_image(ctx, item)
        for name in ("pixels", "fitted", "x"):
            np.testing.assert_array_equal(getattr(shortcut, name), getattr(decoding, name))
        store.client.set(store.keys.decoded(ref), b"not npy")  # anything else: the file is decoded
        np.testing.assert_array_equal(load_image(ctx, item).x, decoding.x)
    finally:
        store.client.delete(store.keys.input(ref), store.keys.decoded(ref))
