"""The one exception the client raises for anything the service refused or a job that did not finish.

    ConvscopeError        the service answered an error ({"error": {code, message, details}}), `.status` its HTTP status
    └── JobFailed         a job ended `failed` or `canceled`; `.status` is None, `.job` the ended Job

Network failures (connection refused, timeouts) are httpx's own exceptions (`httpx.TransportError`).
"""

from __future__ import annotations

from typing import Any

import httpx


class ConvscopeError(Exception):
    """An error answer of the service (or a job's error), with its stable `code`."""

    def __init__(self, status: int | None, code: str, message: str, details: Any = None):
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details

    @classmethod
    def from_response(cls, response: httpx.Response) -> ConvscopeError:
        """The error a non-2xx answer carries; a body that is not the API's error shape still gives one."""
        try:
            error = response.json()["error"]
            return cls(response.status_code, str(error["code"]), str(error["message"]), error.get("details"))
        except (ValueError, KeyError, TypeError):
            text = response.text[:200].strip() or response.reason_phrase
            return cls(response.status_code, f"http_{response.status_code}", text)


class JobFailed(ConvscopeError):
    """A job that ended `failed` (its error's code and message) or `canceled`."""

    def __init__(self, job: Any):
        error = job.error
        code, message = (error.code, error.message) if error else (str(job.status), f"the job ended {job.status}")
        super().__init__(None, code, f"job {job.id} ({job.kind}): {message}")
        self.job = job
