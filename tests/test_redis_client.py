"""The service's Redis client (core/redis_client.py): hiredis parses replies, and large values are sent as they
are (redis-py's Python packer), not copied into one buffer first (hiredis's packer: 1.2 ms per 600 KB)."""

from __future__ import annotations

import os

from core.redis_client import COMMAND_PACKER, connect


def test_large_values_are_packed_without_a_copy_and_read_back_whole(settings):
    client = connect(settings.redis_url)
    connection = client.connection_pool.get_connection()
    try:
        assert connection._command_packer is COMMAND_PACKER
        value = os.urandom(600_000)
        assert value in connection.pack_command("SET", "k", value)  # the value itself, as its own chunk
    finally:
        client.connection_pool.release(connection)
    key = f"{settings.redis_prefix}big"
    with client.pipeline() as pipe:
        pipe.multi()
        pipe.set(key, value)
        pipe.hset(key + ":h", mapping={"a": value, "b": 7})
        pipe.execute()
    assert client.get(key) == value and client.hgetall(key + ":h") == {b"a": value, b"b": b"7"}
