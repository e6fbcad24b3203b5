"""Every operation of `openapi/openapi.json` has a method in both clients, and the client's models match the schema.

When a route is added, this fails until `OPERATIONS` names the client method that calls it (and its answer's
model, for a JSON answer): add one line to `clients/python/src/convscope_client/calls.py` and one method to each
client in `client.py`.
"""

from __future__ import annotations

import inspect
import json
import types
import typing

import pytest
from convscope_client import AsyncClient, Client
from convscope_client import models as m
from pydantic import BaseModel

from openapi.generate import PATH

# operationId -> (client method, the model its JSON answer is read into; None for files, text or nothing)
OPERATIONS: dict[str, tuple[str, type[BaseModel] | None]] = {
    "getHealth": ("health", None),
    "getReadiness": ("ready", None),
    "getMetrics": ("metrics", None),
    "getAuth": ("auth", m.AuthStatus),
    "getUsage": ("usage", m.Usage),
    "listModels": ("models", m.ModelList),
    "getModel": ("model", m.ModelInfo),
    "uploadModel": ("upload_model", m.ModelInfo),
    "deleteModel": ("delete_model", None),
    "getFilters": ("filters", None),
    "getCircuit": ("circuit", m.Circuit),
    "predict": ("predict", m.PredictResponse),
    "getActivations": ("activations", m.ActivationsResponse),
    "getOcclusion": ("occlusion", m.OcclusionResponse),
    "uploadImage": ("upload_image", m.ImageInfo),
    "getImage": ("image", None),
    "uploadDataset": ("upload_dataset", m.DatasetCreated),
    "listDatasets": ("datasets", m.DatasetList),
    "getDataset": ("dataset", m.DatasetInfo),
    "getDatasetImage": ("dataset_image", None),
    "deleteDataset": ("delete_dataset", None),
    "submitJob": ("submit", m.Job),
    "listJobs": ("jobs", m.JobList),
    "getJob": ("job", m.Job),
    "cancelJob": ("cancel", m.Job),
    "getJobArtifact": ("artifact", None),
    "getJobEvents": ("events", None),
}
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(PATH.read_text())


def operations(spec: dict) -> dict[str, dict]:
    return {op["operationId"]: op for item in spec["paths"].values() for method, op in item.items() if method in METHODS}


def test_every_operation_has_a_method_in_both_clients(spec):
    missing = sorted(set(operations(spec)) - set(OPERATIONS))
    assert not missing, (f"operations with no client method: {missing}; add them to convscope_client (calls.py, "
                         f"client.py) and to OPERATIONS in {__file__}")
    for operation_id in operations(spec):
        name = OPERATIONS[operation_id][0]
        assert callable(getattr(Client, name, None)), f"Client has no {name}() for {operation_id}"
        asynchronous = getattr(AsyncClient, name, None)
        assert inspect.iscoroutinefunction(asynchronous) or inspect.isasyncgenfunction(asynchronous), \
            f"AsyncClient has no async {name}() for {operation_id}"


def test_both_clients_take_the_same_arguments():
    for name, _ in OPERATIONS.values():
        assert inspect.signature(getattr(Client, name)).parameters.keys() == \
            inspect.signature(getattr(AsyncClient, name)).parameters.keys(), name


def json_answer(op: dict, spec: dict) -> dict | None:
    """The schema of an operation's 2xx JSON answer, if it has one."""
    for status, response in op["responses"].items():
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if status.startswith("2") and schema and "$ref" in schema:
            return resolve(schema, spec)
    return None


def resolve(schema: dict, spec: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def nested(schema: dict, spec: dict) -> dict | None:
    """The object schema a property holds (directly, in a list, or as one branch of anyOf), if any."""
    for branch in schema.get("anyOf", [schema]):
        branch = branch.get("items", branch) if branch.get("type") == "array" else branch
        if "$ref" in branch:
            target = resolve(branch, spec)
            if target.get("type") == "object" and "properties" in target:
                return target
    return None


def model_in(annotation: typing.Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if found := model_in(arg):
            return found
    return None


def accepts_none(annotation: typing.Any) -> bool:
    return annotation is type(None) or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                        and type(None) in typing.get_args(annotation))


def mismatches(model: type[BaseModel], schema: dict, spec: dict, where: str) -> list[str]:
    """How `model` differs from `schema`: properties missing or invented, required-ness, nullability; recursively."""
    properties, required = schema.get("properties", {}), set(schema.get("required", []))
    fields = model.model_fields
    problems = [f"{where}.{name}: in the schema, not in {model.__name__}" for name in properties.keys() - fields.keys()]
    problems += [f"{where}.{name}: in {model.__name__}, not in the schema" for name in fields.keys() - properties.keys()]
    for name in properties.keys() & fields.keys():
        field, prop = fields[name], properties[name]
        if field.is_required() and name not in required:
            problems.append(f"{where}.{name}: required by {model.__name__}, optional in the schema")
        if any(branch.get("type") == "null" for branch in prop.get("anyOf", [])) and not accepts_none(field.annotation):
            problems.append(f"{where}.{name}: may be null in the schema, not in {model.__name__}")
        inner_schema, inner_model = nested(prop, spec), model_in(field.annotation)
        if inner_schema is not None:
            if inner_model is None:
                problems.append(f"{where}.{name}: an object in the schema, not a model in {model.__name__}")
            else:
                problems += mismatches(inner_model, inner_schema, spec, f"{where}.{name}")
    return problems


def test_the_client_models_match_the_schema(spec):
    problems = []
    for operation_id, op in operations(spec).items():
        model = OPERATIONS.get(operation_id, (None, None))[1]
        answer = json_answer(op, spec)
        if model is not None and answer is not None:
            problems += mismatches(model, answer, spec, operation_id)
        elif answer is not None:
            problems.append(f"{operation_id} answers JSON, but OPERATIONS names no model for it")
    assert not problems, "convscope_client/models.py has drifted from openapi/openapi.json:\n" + "\n".join(problems)
