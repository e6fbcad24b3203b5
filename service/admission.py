"""Admission of the forward views: a bounded line per API key, served so that one key cannot take every place.

At most `running` forward views run at once and at most `queued` wait, each for at most `wait_s`; a request asks
for its place once its body has arrived (`arrived`: a slow upload holds none). Each key has a line of its own,
first come first served within it. Between keys:

- **A share.** While more than one key is in flight, a key runs at most its share at once: `share` when set,
  otherwise the forward runs that go at once (`models.runtimes.run_slots`, one per core) split evenly among the
  keys in flight, at least one each. A key alone runs as many as `running` lets in, so the open service (one
  tenant) and a lone key lose nothing.
- **The lightest key next.** A freed place goes to the waiting key that has the fewest running; among equals, to
  the one whose last turn was longest ago (round robin): a key that sends one request at a time goes before a key
  that sends thirty.
- **A short memory (`linger_s`).** A key counts as in flight for a moment after its last view ended, so that a
  client sending one request after another is not taken for gone in the milliseconds between two of them (then
  another key would take every place, and each of its requests would wait for one of those runs). The places
  it keeps free stay free at most that long.
- **Beyond its share, a view yields.** A request that had to wait because its key was at its share, and that is
  let in while other keys are still in flight, is marked `beyond_share`: it runs on threads of a lower CPU priority
  (`service.lanes`), so the other keys' runs get the cores first.
- **The longest line gives way.** When the lines are full, a newcomer whose key's line is shorter than the
  longest one takes the place of that line's newest request, which is shed; otherwise the newcomer is shed. So
  a key flooding the line cannot keep another key out of it.

Keys are told apart by a digest of the `Authorization` header (the route authenticates; a wrong key just waits
in a line of its own before its 401); requests without one (the open service) share one line. Waiting is cheap:
a future on the event loop, no thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from starlette.types import Message, Receive, Scope

OPEN = ""  # the line of requests without a key
_BEYOND_SHARE: contextvars.ContextVar[bool] = contextvars.ContextVar("beyond_share", default=False)


def beyond_share() -> bool:
    """Whether the forward view of this request was let in beyond its key's share (set by `Admission.enter`)."""
    return _BEYOND_SHARE.get()


@dataclass
class _Turn:
    key: str
    held: bool = False  # it waits because its key was at its share while other keys were in flight
    beyond: bool = False  # let in beyond its key's share: held, and other keys still in flight then
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Admission:
    """Per-key lines before `running` places (see the module's docstring); `enter(key)` and `leave(key)` around each
    forward view."""

    def __init__(self, running: int, queued: int, wait_s: float, body_bytes: int = 64 * 1024 * 1024, *,
                 share: int = 0, run_slots: int = 1, linger_s: float = 0.1):
        self.running, self.queued, self.wait_s, self.body_bytes = running, queued, wait_s, body_bytes
        self.share, self.run_slots, self.linger_s = share, run_slots, linger_s
        self.active = 0
        self.by_key: Counter[str] = Counter()  # running, per key
        self.lines: dict[str, deque[_Turn]] = {}
        self.ended: dict[str, float] = {}  # when each key's last view ended (time.monotonic), for `linger_s`
        self.turns: dict[str, int] = {}  # the number of each key's last admission, for the round robin
        self._admitted = 0
        self.shed = 0
        self._recheck: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self.lines.values())

    def coming(self) -> int:
        """Views admitted, and one more when any waits: what a forward run beginning now may soon run beside. Safe
        from any thread (two sizes read, nothing iterated)."""
        return self.active + (1 if self.lines else 0)

    def share_of(self, key: str, now: float) -> int:
        """How many views `key` may run at once now: all of `running` alone, its share while other keys are in
        flight."""
        others = {k for k, n in self.by_key.items() if n} | set(self.lines)
        others |= {k for k, at in self.ended.items() if now - at < self.linger_s}
        others.discard(key)
        if not others:
            return self.running
        return self.share or max(1, self.run_slots // (len(others) + 1))

    async def enter(self, key: str = OPEN) -> bool:
        """True when admitted (call `leave(key)` when done); False when the request is to be shed. Also sets
        `beyond_share()` for the caller's context."""
        now = time.monotonic()
        share = self.share_of(key, now)
        _BEYOND_SHARE.set(False)
        if self.active < self.running and key not in self.lines and self.by_key[key] < share:
            self._admit(key)
            return True
        if self.waiting >= self.queued and not self._make_room(key):
            self.shed += 1
            return False
        turn = _Turn(key, held=share < self.running and self.by_key[key] >= share)
        self.lines.setdefault(key, deque()).append(turn)
        self._dispatch()
        try:
            admitted = await asyncio.wait_for(asyncio.shield(turn.future), self.wait_s)
            _BEYOND_SHARE.set(admitted and turn.beyond)
            return admitted
        except (TimeoutError, asyncio.CancelledError) as exc:
            if turn.future.done() and not turn.future.cancelled():
                if not turn.future.result():  # shed by a shorter line just as the wait ended (counted there)
                    return False
                self.leave(key)  # admitted just as the wait ended: hand the place on
            else:
                turn.future.cancel()
                self._drop(turn)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.shed += 1
            return False

    def leave(self, key: str = OPEN) -> None:
        """A view admitted is done: its place goes to the next waiting request, by the rules above."""
        self.active -= 1
        self.by_key[key] -= 1
        if not self.by_key[key]:
            del self.by_key[key]
        self.ended[key] = time.monotonic()
        self._dispatch()

    def _admit(self, key: str) -> None:
        self.active += 1
        self.by_key[key] += 1
        self._admitted += 1
        self.turns[key] = self._admitted

    def _dispatch(self) -> None:
        """Give free places to waiting requests: the key with the fewest running first, among those under their
        share, and of those the one served longest ago. A key held back only by another's `linger_s` is looked at
        again when that has passed."""
        now = time.monotonic()
        for key, at in list(self.ended.items()):
            if now - at >= self.linger_s:
                del self.ended[key]
        for key in [k for k in self.turns if k not in self.by_key and k not in self.lines and k not in self.ended]:
            del self.turns[key]
        while self.active < self.running and self.lines:
            ready = [k for k in self.lines if self.by_key[k] < self.share_of(k, now)]
            if not ready:
                break
            key = min(ready, key=lambda k: (self.by_key[k], self.turns.get(k, 0)))
            turn = self.lines[key].popleft()
            if not self.lines[key]:
                del self.lines[key]
            turn.beyond = turn.held and self.share_of(key, now) < self.running
            self._admit(key)
            turn.future.set_result(True)
        if self.lines and self.active < self.running and self.ended and self._recheck is None:  # held by shares
            soonest = min(self.ended.values()) + self.linger_s - now
            self._recheck = asyncio.get_running_loop().call_later(max(0.0, soonest), self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._dispatch()

    def _make_room(self, key: str) -> bool:
        """The lines are full: shed the newest request of the longest line, when `key`'s own is shorter by two
        or more (so the lines end up no more than one apart); True when a place was made."""
        if not self.lines:
            return False
        longest = max(self.lines, key=lambda k: len(self.lines[k]))
        if len(self.lines[longest]) < len(self.lines.get(key, ())) + 2:
            return False
        turn = self.lines[longest].pop()
        if not self.lines[longest]:
            del self.lines[longest]
        turn.future.set_result(False)
        self.shed += 1
        return True

    def _drop(self, turn: _Turn) -> None:
        line = self.lines.get(turn.key)
        if line is not None and turn in line:
            line.remove(turn)
            if not line:
                del self.lines[turn.key]
        self._dispatch()  # a line gone may let another key's share grow

    async def arrived(self, receive: Receive) -> Receive:
        """Read the request's body before it asks for a place, so that a client sending slowly holds none, and
        give back a `receive` that replays it. At most `body_bytes` are kept: past that the rest streams on to
        the route, which refuses the body (413) as it reads."""
        messages: list[Message] = []
        size = 0
        while size <= self.body_bytes:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay


def key_of(scope: Scope) -> str:
    """The line a request waits in: a digest of its `Authorization` header, or the open service's line."""
    header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    return hashlib.sha256(header).hexdigest()[:16] if header else OPEN
