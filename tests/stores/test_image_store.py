"""Uploaded images in Redis (core/stores/images.py): the owner's namespace and the lease on an image found there."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from core.errors import NotFound
from core.stores.images import ImageStore
from tests.conftest import REDIS_URL, clean_prefix


@pytest.fixture
def client():
    prefix = f"test-images-{uuid.uuid4().hex[:8]}:"
    yield redis.Redis.from_url(REDIS_URL), prefix
    clean_prefix(prefix)


def test_an_image_is_its_owners_only(client):
    r, prefix = client
    store = ImageStore(r, prefix, ttl_s=60)
    store.put("alice", "abc", b"bytes")
    store.require("alice", "abc")
    assert store.get("alice", "abc") == b"bytes"
    for owner in ("bob", None):
        with pytest.raises(NotFound):
            store.require(owner, "abc")
        with pytest.raises(NotFound):
            store.get(owner, "abc")


def test_an_image_found_is_trusted_for_the_lease_and_never_past_its_ttl(client):
    r, prefix = client
    leased = ImageStore(r, prefix, ttl_s=60, lease_s=30)
    every_time = ImageStore(r, prefix, ttl_s=60, lease_s=0)
    leased.put("alice", "abc", b"bytes")
    leased.require("alice", "abc")
    every_time.require("alice", "abc")
    r.delete(leased._key("alice", "abc"))  # lost early (evicted, flushed): not an API operation
    leased.require("alice", "abc")  # within its lease: not asked again
    with pytest.raises(NotFound):
        every_time.require("alice", "abc")
    with pytest.raises(NotFound):
        leased.require("bob", "abc")  # a lease is the owner's

    leased.put("alice", "short", b"bytes")
    r.pexpire(leased._key("alice", "short"), 300)
    leased.require("alice", "short")  # the lease ends with the TTL read: 0.3 s, not 30
    time.sleep(0.4)
    with pytest.raises(NotFound):
        leased.require("alice", "short")


def test_leases_are_bounded(client):
    r, prefix = client
    store = ImageStore(r, prefix, ttl_s=60, lease_s=30)
    store.MAX_LEASES = 5
    for i in range(12):
        store.put("alice", f"i{i}", b"x")
        store.require("alice", f"i{i}")
        assert len(store._leases) <= 5
    store.require("alice", "i11")
    assert store._leases  # the latest is held
