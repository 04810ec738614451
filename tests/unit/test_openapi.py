"""The OpenAPI document: well formed, every reference resolves, and it describes the app as built.

``schema_errors`` is a small JSON Schema checker (the subset the document uses); the end-to-end
API tests reuse it to hold real responses against the document.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

import pulseboard
from pulseboard.api import Api
from pulseboard.auth import SCOPES, create_key
from pulseboard.engine import WindowValue
from pulseboard.openapi import OPENAPI
from pulseboard.processor import current_payload
from pulseboard.service import Service
from tests.conftest import SHOP_YAML, make_config

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# --- a JSON Schema checker for the subset the document uses ----------------------------------

_JSON_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
KNOWN_KEYWORDS = {
    "$ref",
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "oneOf",
    "description",
    "format",
    "default",
    "example",
}


def resolve(ref: str, document: dict[str, Any] = OPENAPI) -> Any:
    """The node a local ``$ref`` (``#/a/b``) points at; KeyError when it does not resolve."""
    assert ref.startswith("#/"), f"only local references are used, got {ref!r}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(node["$ref"])
    return node


def schema_errors(schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (empty when it conforms)."""
    schema = deref(schema)
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_JSON_TYPES[t](value) for t in names):
            return [f"{where}: {value!r} is not of type {types}"]
    errors = _choice_errors(schema, value, where)
    if isinstance(value, dict):
        errors += _object_errors(schema, value, where)
    elif isinstance(value, list):
        errors += _array_errors(schema, value, where)
    elif isinstance(value, str):
        errors += _string_errors(schema, value, where)
    elif _JSON_TYPES["number"](value):
        errors += _number_errors(schema, value, where)
    return errors


def _choice_errors(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} is not {schema['const']!r}")
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not schema_errors(s, value, where)]
        if len(matching) != 1:
            errors.append(f"{where}: {value!r} matches {len(matching)} of oneOf, expected 1")
    return errors


def _array_errors(schema: dict[str, Any], value: list[Any], where: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{where}: {len(value)} items, at least {schema['minItems']}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where}: {len(value)} items, at most {schema['maxItems']}")
    for i, item in enumerate(value):
        errors += schema_errors(schema.get("items", {}), item, f"{where}[{i}]")
    return errors


def _number_errors(schema: dict[str, Any], value: float, where: str) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{where}: {value} > {schema['maximum']}")
    return errors


def _object_errors(schema: dict[str, Any], value: dict[str, Any], where: str) -> list[str]:
    errors = [f"{where}: missing {k!r}" for k in schema.get("required", ()) if k not in value]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            errors += schema_errors(properties[key], item, f"{where}.{key}")
        elif extra is False:
            errors.append(f"{where}: unexpected property {key!r}")
        elif isinstance(extra, dict):
            errors += schema_errors(extra, item, f"{where}.{key}")
    return errors


def _string_errors(schema: dict[str, Any], value: str, where: str) -> list[str]:
    errors = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{where}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    return errors


def component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = OPENAPI["components"]["schemas"][name]
    return schema


# --- walking the document -------------------------------------------------------------------


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in OPENAPI["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def nodes(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from nodes(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from nodes(value, f"{where}/{i}")


def schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in the document (components, parameters, bodies), nested ones too."""

    def walk(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if not isinstance(schema, dict) or "$ref" in schema:
            return
        yield where, schema
        for key, sub in schema.get("properties", {}).items():
            yield from walk(sub, f"{where}/properties/{key}")
        for key in ("items", "additionalProperties"):
            yield from walk(schema.get(key), f"{where}/{key}")
        for i, sub in enumerate(schema.get("oneOf", [])):
            yield from walk(sub, f"{where}/oneOf/{i}")

    for where, node in nodes(OPENAPI):
        if where.endswith("/schema") or re.fullmatch(r"#/components/schemas/\w+", where):
            yield from walk(node, where)


def media_examples() -> Iterator[tuple[str, dict[str, Any], Any]]:
    for where, node in nodes(OPENAPI):
        if isinstance(node, dict) and "schema" in node and "example" in node:
            yield where, node["schema"], node["example"]


# --- the app's routes, built without starting the service ----------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A service on a fresh data dir whose processor is never started."""
    service = Service(make_config(SHOP_YAML), tmp_path)
    yield service
    service.writer.close()
    service.state.close()
    service.keys.close()


def app_routes(service: Service) -> set[tuple[str, str]]:
    out = set()
    for route in Api(service, require_keys=False).routes():
        if isinstance(route, WebSocketRoute):
            out.add((route.path, "get"))  # the handshake is a GET
        else:
            assert isinstance(route, Route) and route.methods is not None
            out |= {(route.path, m.lower()) for m in route.methods if m != "HEAD"}
    return out


# --- tests ------------------------------------------------------------------------------------


def test_the_document_is_openapi_3_1_for_this_version() -> None:
    assert OPENAPI["openapi"] == "3.1.0"
    assert OPENAPI["info"]["title"] == "Pulseboard"
    assert OPENAPI["info"]["version"] == pulseboard.__version__
    # served with JSONResponse: it must survive a JSON round trip unchanged
    assert json.loads(json.dumps(OPENAPI)) == OPENAPI


def test_the_paths_and_methods_are_exactly_the_apps_routes(service: Service) -> None:
    documented = {(path, method) for path, method, _ in operations()}
    assert documented == app_routes(service)


def test_every_operation_has_an_id_a_summary_known_tags_and_responses() -> None:
    tags = {t["name"] for t in OPENAPI["tags"]}
    ids = []
    for path, method, op in operations():
        where = f"{method.upper()} {path}"
        ids.append(op["operationId"])
        assert op["summary"], where
        assert op["tags"] and set(op["tags"]) <= tags, where
        assert op["responses"], where
        for status, response in op["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", status), f"{where}: status {status}"
            assert deref(response)["description"], f"{where} {status}"
        assert "security" in op, f"{where}: say which scope it needs, or [] for none"
    assert len(ids) == len(set(ids))


def test_every_reference_resolves() -> None:
    refs = [(w, n["$ref"]) for w, n in nodes(OPENAPI) if isinstance(n, dict) and "$ref" in n]
    assert len(refs) > 40  # the walk reaches the whole document
    unresolved = []
    for where, ref in refs:
        try:
            resolve(ref)
        except (KeyError, TypeError):
            unresolved.append(f"{where}: {ref}")
    assert unresolved == []


def test_every_component_is_used() -> None:
    text = json.dumps(OPENAPI)
    unused = [
        f"{kind}/{name}"
        for kind, entries in OPENAPI["components"].items()
        for name in entries
        if kind != "securitySchemes" and f'"#/components/{kind}/{name}"' not in text
    ]
    assert unused == []


def test_path_parameters_match_the_path_templates() -> None:
    for path, method, op in operations():
        params = [deref(p) for p in op.get("parameters", [])]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), f"{method} {path}"
        assert all(p["required"] for p in params if p["in"] == "path")
        assert all(p["in"] in ("path", "query", "header") for p in params)


def test_security_names_only_defined_schemes_and_real_scopes() -> None:
    schemes = OPENAPI["components"]["securitySchemes"]
    for path, method, op in operations():
        for requirement in op["security"]:
            for name, scopes in requirement.items():
                assert name in schemes, f"{method} {path}"
                assert len(scopes) == 1 and scopes[0] in ("ingest", "read", "dashboards"), (
                    f"{method} {path}"
                )


def test_every_error_response_has_the_error_body() -> None:
    for path, method, op in operations():
        for status, response in op["responses"].items():
            response = deref(response)
            if int(status) < 400 or "content" not in response or path == "/readyz":
                continue  # /readyz answers 503 with its checks, not an error
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"


def test_the_error_statuses_of_each_operation() -> None:
    statuses = {(p, m): set(op["responses"]) for p, m, op in operations()}
    assert statuses["/v1/events", "post"] == {"202", "400", "401", "403", "413", "415", "503"}
    assert statuses["/v1/metrics/{name}/series", "get"] == {"200", "400", "401", "403", "404"}
    assert statuses["/v1/metrics/{name}", "get"] == {"200", "401", "403", "404"}
    assert statuses["/v1/live/sse", "get"] == {"200", "400", "401", "403"}
    assert statuses["/readyz", "get"] == {"200", "503"}
    ingest = OPENAPI["paths"]["/v1/events"]["post"]
    assert "Retry-After" in ingest["responses"]["503"]["headers"]
    assert set(ingest["requestBody"]["content"]) == {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
    }
    for path in ("/v1/metrics", "/v1/metrics/{name}", "/v1/metrics/{name}/series"):
        assert "Cache-Control" in OPENAPI["paths"][path]["get"]["responses"]["200"]["headers"]


def test_schemas_use_only_keywords_the_checker_knows() -> None:
    found = list(schemas())
    assert len(found) > 50
    for where, schema in found:
        assert set(schema) <= KNOWN_KEYWORDS, f"{where}: {set(schema) - KNOWN_KEYWORDS}"


def test_every_example_matches_its_schema() -> None:
    examples = list(media_examples())
    assert len(examples) >= 10
    for where, schema, example in examples:
        assert schema_errors(schema, example) == [], where


def test_the_checker_finds_what_is_wrong() -> None:
    good = {"accepted": 1, "rejected": 1, "errors": [{"index": 0, "id": None, "error": "x"}]}
    assert schema_errors(component("IngestResult"), good) == []
    bad = {"accepted": "1", "errors": [{"index": -1, "id": 3, "error": "x", "extra": 1}]}
    assert schema_errors(component("IngestResult"), bad) == [
        "$: missing 'rejected'",
        "$.accepted: '1' is not of type integer",
        "$.errors[0].index: -1 < 0",
        "$.errors[0].id: 3 is not of type ['string', 'null']",
        "$.errors[0]: unexpected property 'extra'",
    ]
    assert schema_errors(component("LiveMessage"), {"heartbeat": 5}) == []
    assert schema_errors(component("LiveMessage"), {"heartbeat": "soon"}) != []


def test_the_current_value_schema_is_what_the_processor_builds() -> None:
    spec = make_config(SHOP_YAML).metric("orders")
    assert spec is not None
    value = WindowValue("orders", {"region": "eu"}, 60_000, 120_000, 3, "open", None)
    payload = current_payload(spec, [value], 61_000, 61_500)
    assert schema_errors(component("MetricValue"), payload) == []
    assert set(payload) == set(component("MetricValue")["properties"])
    assert set(payload["values"][0]) == set(component("WindowValue")["properties"])


def test_each_operation_needs_the_scope_it_documents(service: Service) -> None:
    """A key with exactly the documented scope gets past auth; any other scope gets 403."""
    keys = {scope: create_key(service.keys, [scope]) for scope in SCOPES}
    app = Starlette(routes=Api(service, require_keys=True).routes())
    # requests that stop right after auth with a 4xx of their own, touching no store
    probes: dict[tuple[str, str], dict[str, Any]] = {
        ("/v1/events", "post"): {"headers": {"content-type": "text/plain"}, "content": b"[]"},
        ("/v1/metrics/{name}/series", "get"): {"params": {"step": "bad"}},
        ("/v1/live/sse", "get"): {"params": {"metrics": ""}},
    }

    async def status(client: httpx.AsyncClient, method: str, path: str, key: str | None) -> int:
        probe = probes.get((path, method), {})
        headers = dict(probe.get("headers", {}))
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        kwargs = {k: v for k, v in probe.items() if k != "headers"}
        url = path.replace("{name}", "orders").replace("{id}", "nothing")
        response = await client.request(method, url, headers=headers, **kwargs)
        return response.status_code

    async def run() -> int:
        checked = 0
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path, method, op in operations():
                if path == "/v1/live":
                    continue  # a WebSocket: tests/e2e/test_api.py covers its handshake
                open_status = await status(client, method, path, None)
                if op["security"] == []:
                    assert open_status not in (401, 403), f"{method} {path}"
                    continue
                assert open_status == 401, f"{method} {path} without a key"
                (needed,) = {scopes[0] for req in op["security"] for scopes in req.values()}
                for scope, key in keys.items():
                    got = await status(client, method, path, key)
                    allowed = scope in (needed, "admin")
                    assert (got != 403) == allowed, f"{method} {path} with {scope}: {got}"
                    assert got != 401
                checked += 1
        return checked

    assert asyncio.run(run()) == 11
