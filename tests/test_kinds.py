"""Every job kind is whole: declared by its family, with a method where the convention puts it, a schema in the
committed OpenAPI, and a row in the README's table of kinds; and nothing in a family's method folder is not a kind."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from core.kinds import registry
from core.kinds.kind import Family
from core.kinds.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]


def test_each_family_declares_its_kinds_and_the_registry_has_them_all():
    declared = [kind.name for family in registry.FAMILIES for kind in family.KINDS]
    assert len(declared) == len(set(declared)), "a kind name is declared twice"
    assert list(KINDS) == declared
    for family in registry.FAMILIES:
        for kind in family.KINDS:
            assert family.__name__ == f"core.kinds.{kind.family}", (kind.name, family.__name__)


@pytest.mark.parametrize("name", list(KINDS))
def test_a_kind_has_its_method_in_its_family_folder(name):
    kind = KINDS[name]
    module, _, function = kind.method.partition(":")
    assert module == f"workers.methods.{kind.family}.{name}" and function == "run"
    assert callable(getattr(importlib.import_module(module), function, None)), f"{module} has no run(task)"


def test_every_module_in_a_family_folder_is_a_declared_kind():
    for family in Family:
        folder = ROOT / "workers" / "methods" / family
        modules = {path.stem for path in folder.glob("*.py") if path.stem != "__init__"}
        assert modules == {kind.name for kind in KINDS.values() if kind.family == family}, family


def test_every_kind_has_a_schema_in_the_committed_openapi():
    schema = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    mapping = next(body["discriminator"]["mapping"] for body in _all(schema) if isinstance(body, dict)
                   and "discriminator" in body and "saliency" in body["discriminator"].get("mapping", {}))
    assert set(mapping) == set(KINDS)
    for name, kind in KINDS.items():
        job = schema["components"]["schemas"][mapping[name].rsplit("/", 1)[1]]
        assert job["properties"]["kind"]["const"] == name
        params = schema["components"]["schemas"][kind.params.__name__]
        assert set(params["properties"]) == set(kind.params.model_fields), name


def test_every_kind_has_a_row_in_the_readme():
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "README.md").read_text(), flags=re.M))
    missing = sorted(set(KINDS) - rows)
    assert not missing, f"README.md has no row `| \\`kind\\` | … |` for {missing}"


def _all(node):
    """Every dict and list in a JSON document, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _all(child)
