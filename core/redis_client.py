"""Redis access shared by the API and the workers: one pooled client, Redis failures as 503."""

from __future__ import annotations

import contextlib

import redis

from core.errors import Unavailable


@contextlib.contextmanager
def redis_errors():
    """Turn a Redis outage into `Unavailable` (503), whatever call it hit."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise Unavailable(f"Redis is unavailable: {exc.__class__.__name__}", code="redis_unavailable") from None


def connect(url: str) -> redis.Redis:
    """A pooled client that fails fast (2 s) when Redis is away and reconnects by itself."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=15)


@contextlib.contextmanager
def redis_errors_around(manager):
    """Enter and leave a context manager that talks to Redis (a lock), with Redis failures as 503."""
    with redis_errors():
        manager.__enter__()
    try:
        yield manager
    finally:
        with redis_errors():
            manager.__exit__(None, None, None)
