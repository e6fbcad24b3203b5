"""The one registry of job kinds: every family's declared `Kind`s, by name. Torch-free.

The API reads it to build the `POST /v1/jobs` body (a union discriminated on `kind`, so OpenAPI shows every
kind's parameters and bad values are refused with 422 before anything is queued); the worker reads it to find
the function to call. Kinds are declared by their families (`core/kinds/<family>.py`, see `core.kinds.kind`),
in the order the API lists them: attribution, trust, making, dataset, atlas.

Params models hold the static bounds; `resolve(record)` checks what depends on the model (class labels, layer
names, channel counts) and fills in model-dependent defaults, so the Job a client gets back shows every
parameter it will run with.
"""

from __future__ import annotations

from core.kinds import atlas, attribution, dataset, making, trust
from core.kinds.kind import Kind

FAMILIES = (attribution, trust, making, dataset, atlas)

KINDS: dict[str, Kind] = {kind.name: kind for family in FAMILIES for kind in family.KINDS}
