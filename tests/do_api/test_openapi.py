"""docs/openapi.json describes exactly the HTTP API the gateway serves, and is served itself."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from openapi_spec_validator import validate

from gateway.app import GATEWAY
from gateway.http import openapi
from gateway.http.admin import ROUTES as ADMIN_ROUTES
from gateway.http.token_file import TOKEN_FILE
from gateway.settings import Settings

from .conftest import Api

REPO = Path(__file__).resolve().parents[2]
METHODS = ("get", "post", "put", "patch", "delete")
PARAMS = {"agentId": "bob", "resourcePath": "src%2Fa.ts"}


def test_the_committed_document_is_the_generated_one() -> None:
    """docs/openapi.json is what `agent-coord docs openapi` prints (regenerate it after a change)."""
    assert (REPO / "docs" / "openapi.json").read_bytes() == openapi.render()


def test_the_document_is_valid_openapi() -> None:
    """The document passes the OpenAPI 3.1 validator."""
    validate(openapi.document())


@pytest.mark.actors_only("the routes are the same for every store")
async def test_the_documented_paths_are_the_served_routes(api: Api) -> None:
    """Every route the gateway dispatches is documented, and every documented path is a route."""
    table = api.app[GATEWAY].route_table()
    served = {
        "/",
        "/health",
        "/ready",
        "/openapi.json",
        "/coordinator",
        "/agent/{agentId}",
        "/lock/{resourcePath}",
    }
    served |= {f"/coordinator{sub}" for sub in table["coordinator"]}
    served |= {f"/agent/{{agentId}}{sub}" for sub in table["agent"]}
    served |= {f"/lock/{{resourcePath}}{sub}" for sub in table["lock"]}
    served |= set(ADMIN_ROUTES)
    assert set(openapi.document()["paths"]) == served
    for path, methods in ADMIN_ROUTES.items():
        assert sorted(m.upper() for m in METHODS if m in openapi.document()["paths"][path]) == sorted(methods)


def concrete(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.mark.actors_only("the methods are the same for every store")
async def test_each_path_answers_exactly_its_documented_methods(api: Api, settings: Settings) -> None:
    """A documented method never answers 405; any other method does, unless the path is marked
    `x-any-method` (it answers every method alike, as upstream)."""
    token = (settings.storage.data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    admin = {"Authorization": f"Bearer {token}"}
    for path, item in openapi.document()["paths"].items():
        if path == "/coordinator":
            continue  # a WebSocket only: without the upgrade it is the 404 of an unknown path
        for method in METHODS:
            resp = await api.request(method.upper(), concrete(path), {}, headers=admin)
            documented = method in item or bool(item.get("x-any-method"))
            assert (resp.status == 405) is not documented, (method, path, resp.status)


@pytest.mark.actors_only("serving the document does not depend on the store")
async def test_the_document_is_served_at_openapi_json(api: Api) -> None:
    """GET /openapi.json answers the document as JSON."""
    status, body = await api.get("/openapi.json")
    assert status == 200
    assert body == orjson.loads(orjson.dumps(openapi.document()))
