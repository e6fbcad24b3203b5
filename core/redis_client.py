"""Redis access shared by the API and the workers: one pooled client, Redis failures as 503."""

from __future__ import annotations

import contextlib

import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from core.errors import Unavailable

# Replies are parsed by hiredis (in C) when it is installed, but commands are packed by redis-py's Python packer:
# it hands a large value to the socket as it is, where hiredis's packer copies it into one buffer first, a copy
# whose cost grows with every artifact stored.
COMMAND_PACKER = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)


@contextlib.contextmanager
def redis_errors():
    """Turn a Redis outage into `Unavailable` (503), whatever call it hit."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise Unavailable(f"Redis is unavailable: {exc.__class__.__name__}", code="redis_unavailable") from None


def connect(url: str) -> redis.Redis:
    """A pooled client that fails fast (2 s) when Redis is away and reconnects by itself."""
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=15,
                                command_packer=COMMAND_PACKER)


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
