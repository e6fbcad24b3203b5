"""Every operation has a stable, readable id (camelCase verb, e.g. `submitJob`) for generated clients."""

from __future__ import annotations

import re

import pytest

from service.app import create_app

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def operations(settings) -> dict[tuple[str, str], dict]:
    spec = create_app(settings).openapi()
    return {(method, path): op for path, item in spec["paths"].items()
            for method, op in item.items() if method in METHODS}


def test_every_operation_has_a_camel_case_id(operations):
    bad = {key: op.get("operationId") for key, op in operations.items()
           if not re.fullmatch(r"[a-z][A-Za-z]+", op.get("operationId") or "")}
    assert not bad, bad


def test_operation_ids_are_unique(operations):
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_known_operations_keep_their_ids(operations):
    assert operations[("post", "/v1/jobs")]["operationId"] == "submitJob"
    assert operations[("get", "/v1/models/{model}")]["operationId"] == "getModel"
    assert operations[("post", "/v1/images")]["operationId"] == "uploadImage"
    assert operations[("get", "/healthz")]["operationId"] == "getHealth"
