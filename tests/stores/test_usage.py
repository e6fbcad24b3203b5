"""The per-key byte accounts (core/stores/usage.py) on the real Redis: refusal with the figures, items that expire
leaving the account, no lost update when many processes charge at once, and the image preview made once."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from core.errors import Overloaded
from core.stores.images import ImageStore
from core.stores.usage import IMAGE_BYTES, JOB_BYTES, NO_LIMIT, UsageLedger
from tests.conftest import REDIS_URL, clean_prefix


@pytest.fixture
def prefix():
    prefix = f"test-usage-{uuid.uuid4().hex[:8]}:"
    yield prefix
    clean_prefix(prefix)


def test_a_charge_past_the_limit_is_refused_with_the_figures(prefix):
    ledger = UsageLedger(redis.Redis.from_url(REDIS_URL), prefix)
    ledger.charge("alice", IMAGE_BYTES, "a", 100, 60, 250)
    ledger.charge("alice", IMAGE_BYTES, "b", 100, 60, 250)
    with pytest.raises(Overloaded) as refused:
        ledger.charge("alice", IMAGE_BYTES, "c", 100, 60, 250)
    assert refused.value.code == "quota_exceeded" and refused.value.retry_after
    assert refused.value.details == {"quota": IMAGE_BYTES, "held": 200, "adding": 100, "limit": 250}
    ledger.charge("alice", IMAGE_BYTES, "a", 100, 60, 250)  # held already: renewed, adds nothing
    assert ledger.held("alice", IMAGE_BYTES) == 200
    assert ledger.held("bob", IMAGE_BYTES) == 0 and ledger.held("alice", JOB_BYTES) == 0
    ledger.refund("alice", IMAGE_BYTES, "b")
    ledger.charge("alice", IMAGE_BYTES, "c", 100, 60, 250)
    assert ledger.held("alice", IMAGE_BYTES) == 200
    with pytest.raises(Overloaded):
        ledger.check("alice", IMAGE_BYTES, 200)


def test_items_leave_the_account_when_they_expire(prefix):
    ledger = UsageLedger(redis.Redis.from_url(REDIS_URL), prefix)
    ledger.charge(None, JOB_BYTES, "short", 300, 0.5, NO_LIMIT)
    ledger.charge(None, JOB_BYTES, "long", 50, 60, NO_LIMIT)
    assert ledger.held(None, JOB_BYTES) == 350
    time.sleep(0.7)
    assert ledger.held(None, JOB_BYTES) == 50
    ledger.charge(None, JOB_BYTES, "next", 200, 60, 250)  # room again
    assert ledger.held(None, JOB_BYTES) == 250


def test_concurrent_charges_never_pass_the_limit(prefix):
    """Eight clients charging 400 items of 10 bytes against 1000: exactly 100 accepted, the account exact."""
    def charge(worker: int) -> int:
        ledger = UsageLedger(redis.Redis.from_url(REDIS_URL), prefix)  # a client each, as processes have
        accepted = 0
        for i in range(50):
            try:
                ledger.charge("alice", JOB_BYTES, f"{worker}-{i}", 10, 60, 1000)
                accepted += 1
            except Overloaded:
                pass
        return accepted

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(charge, range(8))) == 100
    assert UsageLedger(redis.Redis.from_url(REDIS_URL), prefix).held("alice", JOB_BYTES) == 1000


def test_an_image_preview_is_made_once_kept_with_the_image_and_charged(prefix):
    store = ImageStore(redis.Redis.from_url(REDIS_URL), prefix, ttl_s=60, quota_bytes=10_000)
    store.put("alice", "img1", b"x" * 1000)
    made = []

    def make(data: bytes) -> bytes:
        made.append(data)
        return b"p" * 500

    assert store.preview("alice", "img1", make) == b"p" * 500
    assert store.preview("alice", "img1", make) == b"p" * 500
    assert len(made) == 1
    assert store.usage.held("alice", IMAGE_BYTES) == 1500
    assert 0 < store.client.pttl(f"{prefix}imagepng:alice:img1") <= 60_000
    with pytest.raises(Exception) as missing:
        store.preview("bob", "img1", make)
    assert getattr(missing.value, "code", None) == "image_not_found"


def test_a_dataset_upload_past_the_keys_dataset_bytes_is_refused_and_leaves_nothing(tmp_path):
    import io

    import numpy as np

    from core.settings import Settings
    from core.stores.datasets import DatasetStore, Upload
    from tests.conftest import encode

    pngs = [encode(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(4)]
    settings = Settings(data_dir=tmp_path, max_dataset_bytes_per_key=sum(map(len, pngs[:3])))
    store = DatasetStore.open(settings)

    def parts(images):
        return [Upload(f"{i}.png", io.BytesIO(data), len(data), False) for i, data in enumerate(images)]

    store.create(parts(pngs[:2]), "alice", settings)
    assert store.bytes_held_by("alice") == len(pngs[0]) + len(pngs[1])
    with pytest.raises(Overloaded) as refused:
        store.create(parts(pngs[2:]), "alice", settings)
    assert refused.value.code == "quota_exceeded" and refused.value.details["quota"] == "dataset_bytes"
    assert store.held_by("alice") == 1  # the refused upload left no dataset
    store.create(parts(pngs[2:]), "bob", settings)  # bob's bytes are his own
