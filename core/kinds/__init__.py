"""The one registry of job kinds and every kind's params (see `core.kinds.registry`)."""

from core.kinds.registry import KINDS, Kind

__all__ = ["KINDS", "Kind"]
