"""The OpenAPI paths and schemas of dashboards and pipeline stats (merged into ``OPENAPI``)."""

from __future__ import annotations

from typing import Any

from pulseboard.dashboards import MAX_PANELS, MAX_TITLE_CHARS, PIPELINE_STATS

_READ = [{"bearer": ["read"]}, {"queryKey": ["read"]}]
_WRITE = [{"bearer": ["dashboards"]}, {"queryKey": ["dashboards"]}]
_KEY = {"$ref": "#/components/parameters/Key"}
_ID = {"$ref": "#/components/parameters/DashboardId"}
_NO_STORE = {"Cache-Control": {"$ref": "#/components/headers/NoStore"}}
_AUTH = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _NO_STORE,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _error(description: str, example: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": {"error": example},
            }
        },
    }


_UNKNOWN = _error(
    "No dashboard has that id; the message lists the known ones.",
    "no dashboard 'sales'; known: operations, management, engineering",
)
_READ_ONLY = _error(
    "The dashboard is defined in the config file, which the API does not change.",
    "dashboard 'operations' is defined in the config file and is read-only here; save a copy "
    "under another id, or change the config",
)

PATHS: dict[str, Any] = {
    "/v1/dashboards": {
        "get": {
            "operationId": "listDashboards",
            "tags": ["dashboards"],
            "summary": "Every dashboard: the config's, then the saved ones by id",
            "security": _READ,
            "parameters": [_KEY],
            "responses": {"200": _json("DashboardList", "The dashboards."), **_AUTH},
        }
    },
    "/v1/dashboards/{id}": {
        "get": {
            "operationId": "getDashboard",
            "tags": ["dashboards"],
            "summary": "One dashboard",
            "security": _READ,
            "parameters": [_ID, _KEY],
            "responses": {"200": _json("Dashboard", "The dashboard."), **_AUTH, "404": _UNKNOWN},
        },
        "put": {
            "operationId": "putDashboard",
            "tags": ["dashboards"],
            "summary": "Save a dashboard (create or replace)",
            "description": (
                "The body is checked against the running config: every panel names a metric "
                "of the config or a pipeline stat, and every problem is listed. Keys the "
                "server adds (`source`, `updated_ms`, `problems`) and `null` values are "
                "ignored, so a dashboard read with GET can be sent back as it is. The last "
                "save wins."
            ),
            "security": _WRITE,
            "parameters": [
                _ID,
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "description": (
                        "`*` creates only: when a dashboard with this id exists, nothing is "
                        "saved and the answer is 412."
                    ),
                    "schema": {"const": "*"},
                },
                _KEY,
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/DashboardIn"}}
                },
            },
            "responses": {
                "200": _json("Dashboard", "Replaced an existing dashboard."),
                "201": _json("Dashboard", "Created a new dashboard."),
                "400": _error(
                    "The body is not a valid dashboard; every problem is listed with where.",
                    "panels[0].metric: unknown metric 'ordrs' (did you mean 'orders'?); "
                    "panels[1].compare: '1x' is not a duration; expected a whole number and a "
                    "unit, e.g. 500ms, 30s, 1m, 2h, 90d",
                ),
                **_AUTH,
                "409": _READ_ONLY,
                "412": _error(
                    "`If-None-Match: *` was sent and a dashboard with this id exists.",
                    "dashboard 'b1' exists already; choose another id, or open it to edit it",
                ),
                "413": _error("The body is over 256 KiB.", "a dashboard body is at most 262144"),
            },
        },
        "delete": {
            "operationId": "deleteDashboard",
            "tags": ["dashboards"],
            "summary": "Delete a saved dashboard",
            "security": _WRITE,
            "parameters": [_ID, _KEY],
            "responses": {
                "204": {"description": "Deleted."},
                **_AUTH,
                "404": _UNKNOWN,
                "409": _READ_ONLY,
            },
        },
    },
    "/v1/pipeline": {
        "get": {
            "operationId": "getPipeline",
            "tags": ["dashboards"],
            "summary": "The pipeline's own numbers, one sample per tick (15 minutes kept)",
            "security": _READ,
            "parameters": [
                {
                    "name": "from",
                    "in": "query",
                    "required": False,
                    "description": (
                        "The oldest sample to return: a time as for series (`-5m`, epoch ms, "
                        "RFC 3339); default `-5m`."
                    ),
                    "schema": {"type": "string", "default": "-5m"},
                },
                _KEY,
            ],
            "responses": {
                "200": _json("PipelineStats", "The latest sample, history, and per metric."),
                "400": _error(
                    "`from` is not a time.",
                    "from='yesterday' is not a time; expected epoch milliseconds, RFC 3339 "
                    "with an offset (2026-11-27T10:00:00Z), 'now', or a time relative to now "
                    "such as -1h",
                ),
                **_AUTH,
            },
        }
    },
}

_DURATION = {"type": "string", "pattern": r"^\d+(ms|s|m|h|d)$"}
_METRIC_REF = {
    "type": "string",
    "description": (
        "A metric of the config, or a pipeline stat: "
        + ", ".join(f"`pipeline.{s}`" for s in PIPELINE_STATS)
    ),
}

_PANEL = {
    "type": "object",
    "required": ["metric"],
    "additionalProperties": False,
    "properties": {
        "metric": _METRIC_REF,
        "kind": {"enum": ["stat", "timeseries", "bars", "table"], "default": "timeseries"},
        "title": {"type": ["string", "null"], "maxLength": MAX_TITLE_CHARS},
        "compare": {
            **_DURATION,
            "type": ["string", "null"],
            "description": (
                "Also show the metric this long ago: a stat's change is against it, other "
                "kinds show the shifted range beside the live one. Not for pipeline stats."
            ),
        },
        "divide_by": {
            "type": ["string", "null"],
            "description": (
                "Another metric of the config with the same window (and `every`) and either no "
                "`group_by` or the same: the panel shows metric / divide_by."
            ),
        },
    },
}

_DASHBOARD_PROPS = {
    "title": {"type": "string", "maxLength": MAX_TITLE_CHARS},
    "range": {**_DURATION, "default": "5m", "description": "The range it opens with."},
    "panels": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_PANELS,
        "items": {"$ref": "#/components/schemas/Panel"},
    },
}

_SAMPLE_PROPS: dict[str, Any] = {"t": {"type": "integer", "description": "Epoch ms."}}
_SAMPLE_PROPS.update(
    {
        name: {"type": "number" if name.endswith("_per_second") else "integer"}
        for name in PIPELINE_STATS
    }
)
_SAMPLE_PROPS.update(processor_up={"type": "boolean"}, tick_ms={"type": "number"})

SCHEMAS: dict[str, Any] = {
    "Panel": _PANEL,
    "DashboardIn": {
        "type": "object",
        "required": ["title", "panels"],
        "properties": {"id": {"type": "string"}, **_DASHBOARD_PROPS},
    },
    "Dashboard": {
        "type": "object",
        "required": ["id", "title", "range", "panels", "source", "updated_ms", "problems"],
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            **_DASHBOARD_PROPS,
            "source": {"enum": ["config", "user"]},
            "updated_ms": {"type": ["integer", "null"], "description": "Last save (epoch ms)."},
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    "For a saved dashboard that the running config no longer satisfies (a "
                    "metric was removed): what is wrong. It is still listed, to be fixed."
                ),
            },
        },
    },
    "DashboardList": {
        "type": "object",
        "required": ["dashboards"],
        "properties": {
            "dashboards": {"type": "array", "items": {"$ref": "#/components/schemas/Dashboard"}}
        },
    },
    "PipelineSample": {
        "type": "object",
        "description": (
            "Counters (`late_events`, `reconciled`, `dead_letters`) are cumulative since the "
            "processor (or server) started; rates are over the last tick."
        ),
        "required": list(_SAMPLE_PROPS),
        "properties": _SAMPLE_PROPS,
    },
    "MetricFootprint": {
        "type": "object",
        "required": ["name", "label_sets", "state_bytes"],
        "properties": {
            "name": {"type": "string"},
            "label_sets": {"type": "integer"},
            "state_bytes": {
                "type": "integer",
                "description": (
                    "Embedded: encoded size of its open windows' state at the processor's last "
                    "checkpoint. Distributed: bytes Redis uses for its open buckets."
                ),
            },
        },
    },
    "PipelineStats": {
        "type": "object",
        "required": ["current", "history", "metrics"],
        "properties": {
            "current": {
                "oneOf": [{"$ref": "#/components/schemas/PipelineSample"}, {"type": "null"}]
            },
            "history": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/PipelineSample"},
            },
            "metrics": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/MetricFootprint"},
            },
        },
    },
}

PARAMETERS: dict[str, Any] = {
    "DashboardId": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
    }
}

TAG = {"name": "dashboards", "description": "Saved dashboards and the pipeline's own stats."}
