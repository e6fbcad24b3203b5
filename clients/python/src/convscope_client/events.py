"""A job's server-sent events (`GET /v1/jobs/{id}/events`), and following them to the job's end.

The stream carries `progress` ({step, total}), `preview` ({step, png_base64}) and `artifact` ({name, media_type,
url}) events, then one `end` whose data is the ended Job. Each event has an `id`; a dropped stream is opened
again with `Last-Event-ID` and resumes after it (`Follower.last_id`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

RECONNECTS = 5  # streams opened again after one ends without an `end` event, before asking the job itself

ProgressCallback = Callable[[int, int], Any]


@dataclass(frozen=True)
class Event:
    event: str
    data: Any  # parsed JSON
    id: str | None = None


class SSEParser:
    """Lines of a `text/event-stream` in, events out (the WHATWG rules this service's stream uses)."""

    def __init__(self) -> None:
        self._event, self._data, self._id = "message", [], None

    def feed(self, line: str) -> Iterator[Event]:
        line = line.rstrip("\r\n")
        if not line:
            if self._data:
                yield Event(self._event, json.loads("\n".join(self._data)), self._id)
            self._event, self._data = "message", []
            return
        if line.startswith(":"):  # a comment: the service's keep-alive
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value


class Follower:
    """Follows one job's events: reports progress, remembers where it is, and returns the Job at `end`."""

    def __init__(self, on_progress: ProgressCallback | None):
        self.on_progress = on_progress
        self.last_id: str | None = None
        self._last_progress: tuple[int, int] | None = None

    def see(self, event: Event) -> dict | None:
        """The ended Job's JSON at `end`, else None."""
        self.last_id = event.id or self.last_id
        if event.event == "progress":
            self.progress(event.data["step"], event.data["total"])
        elif event.event == "end":
            self.progress(event.data["progress"]["step"], event.data["progress"]["total"])
            return event.data
        return None

    def progress(self, step: int, total: int) -> None:
        if self.on_progress is not None and (step, total) != self._last_progress:
            self._last_progress = (step, total)
            self.on_progress(step, total)
