"""A worker's warm shutdown is not held up by RQ's command-channel listener: it stops within seconds, not the
minute RQ's 60 s listener sleep cost. Once the channel is unsubscribed, the listener thread sleeps its full
sleep, and redis-py's `stop()` joins it (2 of 5 workers took 61 s to stop after SIGTERM before the fix)."""

from __future__ import annotations

import time
import uuid

from core.jobs import queueing
from core.redis_client import connect
from workers import main


def test_the_command_channel_listener_stops_within_seconds(settings):
    client = connect(settings.redis_url)
    queue = queueing.queue(client, f"shutdown-{uuid.uuid4().hex[:8]}")
    worker = main.ConvscopeWorker([queue], connection=client, name=f"shutdown-{uuid.uuid4().hex[:8]}",
                                  job_class=queueing.SafeJob)
    worker.subscribe()
    time.sleep(0.3)
    worker.pubsub.unsubscribe()  # what teardown sends first; the listener reads the reply and goes to sleep
    time.sleep(0.3)
    start = time.monotonic()
    worker.unsubscribe()  # RQ's teardown: unsubscribe, stop the listener (joins it), close
    assert time.monotonic() - start < 5
    assert not worker.pubsub_thread.is_alive()
