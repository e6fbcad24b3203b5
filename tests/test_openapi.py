"""The committed OpenAPI file is exactly what the app serves."""

import json

from openapi.generate import PATH, render


def test_committed_openapi_matches_the_app():
    assert PATH.exists(), "run: python -m openapi.generate"
    assert json.loads(PATH.read_text()) == json.loads(render()), \
        "openapi/openapi.json has drifted from the app; regenerate it with: python -m openapi.generate"


def test_served_openapi_matches_the_committed_file(client):
    assert client.get("/openapi.json").json() == json.loads(PATH.read_text())


def test_every_forward_view_documents_json_and_multipart_bodies():
    spec = json.loads(PATH.read_text())
    for view in ("predict", "activations", "occlusion"):
        content = spec["paths"][f"/v1/models/{{model}}/{view}"]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)
        ref = content["application/json"]["schema"]["$ref"].split("/")[-1]
        assert ref in spec["components"]["schemas"]
