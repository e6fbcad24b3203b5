"""A worker serving the tenant queues (`workers.main.ConvscopeWorker`) keeps RQ's terms for a dequeue: a burst
looks once at every queue and returns, `max_idle_time` ends an idle wait, and a job in a tenant queue that appeared
after the worker started is found."""

from __future__ import annotations

import time
import uuid

from rq.serializers import JSONSerializer

from core.jobs import queueing
from core.redis_client import connect
from workers import main


def worker_over_tenants(client, base: str, registry: str) -> main.ConvscopeWorker:
    worker = main.ConvscopeWorker([queueing.queue(client, base)], connection=client,
                                  name=f"dequeue-{uuid.uuid4().hex[:8]}", serializer=JSONSerializer,
                                  job_class=queueing.SafeJob)
    worker.serve_tenants(base, registry)
    return worker


def test_a_burst_returns_at_once_an_idle_limit_ends_the_wait_and_a_new_tenant_queue_is_served(settings):
    client = connect(settings.redis_url)
    base = f"dequeue-{uuid.uuid4().hex[:8]}"
    registry = f"{base}:registry"
    tenant = queueing.tenant_queue(base, "alice")
    worker = worker_over_tenants(client, base, registry)
    try:
        start = time.monotonic()
        assert worker.dequeue_job_and_maintain_ttl(None) is None  # a burst over empty queues
        assert time.monotonic() - start < 1
        start = time.monotonic()
        assert worker.dequeue_job_and_maintain_ttl(405, max_idle_time=2) is None  # idle for 2 s, then done
        assert 1.5 < time.monotonic() - start < 5

        client.sadd(registry, tenant)
        queueing.enqueue(queueing.queue(client, tenant), "j1", 1, time_limit_s=60, ttl_s=60)
        job, queue = worker.dequeue_job_and_maintain_ttl(None)  # the tenant queue, read again before the look
        assert job.id == queueing.rq_job_id("j1", 1) and queue.name == tenant
    finally:
        for name in (base, tenant):
            queueing.queue(client, name).empty()
        client.delete(registry)
        worker.register_death()


def test_a_tenant_queue_at_its_running_cap_is_skipped_until_one_of_its_jobs_ends(settings):
    """With a cap of one, a tenant's queue whose started registry holds a job (running on some worker) is not
    listened to; the base queue and the other tenants' queues are."""
    client = connect(settings.redis_url)
    base = f"dequeue-{uuid.uuid4().hex[:8]}"
    registry = f"{base}:registry"
    alice, bob = queueing.tenant_queue(base, "alice"), queueing.tenant_queue(base, "bob")
    worker = worker_over_tenants(client, base, registry)
    worker.serve_tenants(base, registry, running_cap=1)
    client.sadd(registry, alice, bob)
    started = queueing.queue(client, alice).started_job_registry
    try:
        worker.discover_queues()
        assert {q.name for q in worker._ordered_queues} == {base, alice, bob}
        client.zadd(started.key, {"a0:e0": time.time() + 60})  # what RQ keeps of an execution: id → expiry
        assert started.get_job_count(cleanup=False) == 1
        worker.discover_queues()
        assert {q.name for q in worker._ordered_queues} == {base, bob}
        queueing.enqueue(queueing.queue(client, alice), "a1", 1, time_limit_s=60, ttl_s=60)
        assert worker.dequeue_job_and_maintain_ttl(None) is None  # alice's job waits for her running one
    finally:
        for name in (base, alice, bob):
            queueing.queue(client, name).empty()
        client.delete(registry, started.key)
        worker.register_death()
