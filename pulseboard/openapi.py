"""The OpenAPI 3.1 document served at ``/openapi.json`` (kept in step with docs/API.md).

It describes what ``pulseboard/api.py`` does, route by route: the WebSocket ``/v1/live`` is
listed as the ``GET`` that opens it (OpenAPI has no WebSocket operations), with its messages
under ``components.schemas`` (``LiveSubscribe``, ``LiveMessage``). Every error body is
``{"error": message}``. ``tests/unit/test_openapi.py`` checks that the paths equal the app's
routes and that every ``$ref`` resolves.
"""

from __future__ import annotations

from typing import Any

from pulseboard.openapi_boards import PARAMETERS, PATHS, SCHEMAS, TAG

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Pulseboard",
        "version": "0.1.0",
        "summary": "Events in over HTTP, windowed metrics out, live over WebSocket and SSE.",
        "description": (
            "Post events to `/v1/events`; read the metrics the config defines at "
            "`/v1/metrics`, their series at `/v1/metrics/{name}/series`, and subscribe to live "
            "values on `/v1/live` (WebSocket) or `/v1/live/sse` (server-sent events). The full "
            "reference, with examples, is docs/API.md.\n\n"
            "API keys (`Authorization: Bearer pb_<id>_<secret>`, or `?key=` where a browser "
            "cannot set headers) are required when the server listens on a non-loopback "
            "address or runs with `--require-keys`; otherwise every request is allowed. A key "
            "has scopes `ingest`, `read`, `dashboards` and/or `admin`; `admin` grants every "
            "scope. The scope each operation needs is listed in its `security` requirement.\n\n"
            "The web UI is served at `/` (not described here)."
        ),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "tags": [
        {"name": "ingest", "description": "Sending events."},
        {"name": "metrics", "description": "Current values and series of the metrics."},
        {"name": "live", "description": "Pushed updates over WebSocket or SSE."},
        {"name": "operations", "description": "Health, readiness, telemetry, this document."},
    ],
    "paths": {
        "/v1/events": {
            "post": {
                "operationId": "postEvents",
                "tags": ["ingest"],
                "summary": "Ingest a batch of events",
                "description": (
                    "Validates every event against the config and makes the good ones durable "
                    "in the log before answering 202; bad events are rejected one by one (with "
                    "their index, id and reason) and written to the dead-letter store, while "
                    "the good events of the same request are accepted. An event whose id was "
                    "already counted (within window + lateness) is accepted but counts once. "
                    "The body is at most `limits.max_request_bytes` (default 10 MiB), "
                    "before and after gzip decompression."
                ),
                "security": [{"bearer": ["ingest"]}, {"queryKey": ["ingest"]}],
                "parameters": [
                    {
                        "name": "Content-Encoding",
                        "in": "header",
                        "required": False,
                        "description": "`gzip` or `identity` (the default); anything else is 415.",
                        "schema": {"type": "string", "enum": ["gzip", "identity"]},
                    },
                    {"$ref": "#/components/parameters/Key"},
                ],
                "requestBody": {
                    "required": True,
                    "description": (
                        "A JSON array of events (`application/json`; a request without a "
                        "Content-Type is read as JSON), or NDJSON, one event per line "
                        "(`application/x-ndjson` or `application/ndjson`; blank lines are "
                        "skipped, and a line that is not JSON rejects only that event)."
                    ),
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/Event"},
                            },
                            "example": [
                                {
                                    "id": "ord-1001",
                                    "type": "order",
                                    "time": "2026-11-27T10:00:03.120Z",
                                    "data": {"amount": 42.5, "region": "eu"},
                                },
                                {
                                    "id": "ord-1002",
                                    "type": "order",
                                    "time": 1795773603500,
                                    "data": {"amount": 7.0, "region": "us"},
                                },
                            ],
                        },
                        "application/x-ndjson": {
                            "schema": {
                                "type": "string",
                                "description": "One Event object (JSON) per line.",
                            },
                            "example": (
                                '{"id":"ord-1001","type":"order","time":1795773603120,'
                                '"data":{"amount":42.5,"region":"eu"}}\n'
                                '{"id":"ord-1002","type":"order","time":1795773603500,'
                                '"data":{"amount":7.0,"region":"us"}}\n'
                            ),
                        },
                        "application/ndjson": {
                            "schema": {
                                "type": "string",
                                "description": "The same as application/x-ndjson.",
                            }
                        },
                    },
                },
                "responses": {
                    "202": {
                        "description": (
                            "The accepted events are durable. `rejected` counts every bad "
                            "event; `errors` lists the first 100 of them, in request order."
                        ),
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/IngestResult"},
                                "example": {
                                    "accepted": 1,
                                    "rejected": 1,
                                    "errors": [
                                        {
                                            "index": 1,
                                            "id": "ord-1002",
                                            "error": (
                                                "events[1].data: object missing required "
                                                "field amount"
                                            ),
                                        }
                                    ],
                                },
                            }
                        },
                    },
                    "400": {
                        "description": (
                            "The body does not parse (the message gives the byte position), "
                            "is not a JSON array, or is not valid gzip. Nothing was accepted."
                        ),
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {
                                    "error": (
                                        "request body is not valid JSON: JSON is malformed: "
                                        "invalid character (byte 12)"
                                    )
                                },
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    "413": {
                        "description": (
                            "The body (as sent, or once gzip-inflated) is larger than "
                            "`limits.max_request_bytes`. Nothing was accepted; split the batch."
                        ),
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {
                                    "error": (
                                        "the body is 11000000 bytes; at most 10485760 are "
                                        "accepted (limits.max_request_bytes); split it into "
                                        "smaller requests"
                                    )
                                },
                            }
                        },
                    },
                    "415": {
                        "description": (
                            "A Content-Type other than JSON or NDJSON, or a Content-Encoding "
                            "other than gzip or identity."
                        ),
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {
                                    "error": (
                                        "Content-Type 'text/plain' is not accepted; send "
                                        "application/json (an array of events) or "
                                        "application/x-ndjson (one event per line)"
                                    )
                                },
                            }
                        },
                    },
                    "503": {
                        "description": (
                            "The log cannot take writes now: the processor is more than "
                            "`limits.max_backlog_events` behind (Retry-After: 2), or the log "
                            "failed (Retry-After: 5). Nothing of the request was accepted; "
                            "send it again after Retry-After seconds, with the same event ids."
                        ),
                        "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {
                                    "error": (
                                        "the processor is 2000350 events behind "
                                        "(limits.max_backlog_events = 2000000)"
                                    )
                                },
                            }
                        },
                    },
                },
            }
        },
        "/v1/metrics": {
            "get": {
                "operationId": "listMetrics",
                "tags": ["metrics"],
                "summary": "Every metric with its definition and current value",
                "security": [{"bearer": ["read"]}, {"queryKey": ["read"]}],
                "parameters": [{"$ref": "#/components/parameters/Key"}],
                "responses": {
                    "200": {
                        "description": "The metrics in config order.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/MaxAge"}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MetricList"}
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                },
            }
        },
        "/v1/metrics/{name}": {
            "get": {
                "operationId": "getMetric",
                "tags": ["metrics"],
                "summary": "The current value of one metric",
                "description": (
                    "For a tumbling metric, the window that holds stream time; for a sliding "
                    "one, the last `window` ending with the `every` step that holds stream "
                    "time. One value per label set (group_by); `values` is empty when that "
                    "window has no events yet, and before the processor's first tick "
                    "(`as_of` null)."
                ),
                "security": [{"bearer": ["read"]}, {"queryKey": ["read"]}],
                "parameters": [
                    {"$ref": "#/components/parameters/MetricName"},
                    {"$ref": "#/components/parameters/Key"},
                ],
                "responses": {
                    "200": {
                        "description": "The current value.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/MaxAge"}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/MetricValue"}
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    "404": {"$ref": "#/components/responses/UnknownMetric"},
                },
            }
        },
        "/v1/metrics/{name}/series": {
            "get": {
                "operationId": "getSeries",
                "tags": ["metrics"],
                "summary": "A metric over a time range, history and open windows stitched",
                "description": (
                    "Points are `step` apart, aligned to multiples of `step` since the epoch "
                    "(`from` is rounded down to one); the point at `t` merges the metric's "
                    "windows starting in `[t, t + step)`. Windows without events have no "
                    "point. A point is `open` when any of its windows is open, else `revised` "
                    "when any was revised by reconciliation, else `final`. A sliding metric's "
                    "series is made of its windows aligned to multiples of `window`."
                ),
                "security": [{"bearer": ["read"]}, {"queryKey": ["read"]}],
                "parameters": [
                    {"$ref": "#/components/parameters/MetricName"},
                    {
                        "name": "from",
                        "in": "query",
                        "required": False,
                        "description": (
                            "Start (inclusive): epoch ms, RFC 3339 with an offset, `now`, or "
                            "relative to now (`-1h`, `now-15m`). Default `-1h`."
                        ),
                        "schema": {"type": "string", "default": "-1h"},
                        "examples": {
                            "relative": {"value": "-15m"},
                            "rfc3339": {"value": "2026-11-27T10:00:00Z"},
                            "epoch_ms": {"value": "1795773600000"},
                        },
                    },
                    {
                        "name": "to",
                        "in": "query",
                        "required": False,
                        "description": (
                            "End (exclusive), in the same forms as `from`. Default `now`."
                        ),
                        "schema": {"type": "string", "default": "now"},
                    },
                    {
                        "name": "step",
                        "in": "query",
                        "required": False,
                        "description": (
                            "Point spacing: a duration (`5m`) or integer ms, a positive "
                            "multiple of the metric's window. Default: the window. At most "
                            "20000 points per request."
                        ),
                        "schema": {"type": "string"},
                        "example": "5m",
                    },
                    {"$ref": "#/components/parameters/Key"},
                ],
                "responses": {
                    "200": {
                        "description": "The series, one per label set, sorted by labels.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/MaxAge"}},
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Series"}}
                        },
                    },
                    "400": {
                        "description": (
                            "`from`, `to` or `step` cannot be read, `step` is not a multiple "
                            "of the window, `from` is not before `to`, or the range holds more "
                            "than 20000 points."
                        ),
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {
                                    "error": (
                                        "step='90s' is not a multiple of metric 'revenue''s "
                                        "window (1m); use e.g. step=1m or step=5m"
                                    )
                                },
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                    "404": {"$ref": "#/components/responses/UnknownMetric"},
                },
            }
        },
        "/v1/live": {
            "get": {
                "operationId": "live",
                "tags": ["live"],
                "summary": "WebSocket of live metric values",
                "description": (
                    "Open a WebSocket, then send `LiveSubscribe` messages (text frames of "
                    "JSON). The server answers each subscription with the current value of "
                    "every subscribed metric at once, then pushes `MetricValue` messages when a "
                    'metric changes (at most once per tick per metric), `{"heartbeat": ms}` '
                    'every 15 s, and `{"error": ...}` for a message it cannot use (the socket '
                    "stays open). A client that falls 256 messages behind is closed with code "
                    "1013. Browsers pass the key as `?key=`."
                ),
                "security": [{"bearer": ["read"]}, {"queryKey": ["read"]}],
                "parameters": [{"$ref": "#/components/parameters/Key"}],
                "x-websocket-messages": {
                    "client": {"$ref": "#/components/schemas/LiveSubscribe"},
                    "server": {"$ref": "#/components/schemas/LiveMessage"},
                },
                "responses": {
                    "101": {
                        "description": "Switching protocols: the WebSocket is open.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/LiveMessage"}
                            }
                        },
                    },
                    "403": {
                        "description": (
                            "The handshake is refused (empty body) when a key is required and "
                            "missing, unknown, or lacks the `read` scope."
                        )
                    },
                },
            }
        },
        "/v1/live/sse": {
            "get": {
                "operationId": "liveSse",
                "tags": ["live"],
                "summary": "Server-sent events of live metric values",
                "description": (
                    "The same stream as the WebSocket: first `retry: 2000`, then one "
                    "`data: <MetricValue JSON>` event per current value and per update, "
                    'heartbeats as `data: {"heartbeat": ms}`.'
                ),
                "security": [{"bearer": ["read"]}, {"queryKey": ["read"]}],
                "parameters": [
                    {
                        "name": "metrics",
                        "in": "query",
                        "required": True,
                        "description": "Metric names separated by commas.",
                        "schema": {"type": "string"},
                        "example": "orders,revenue",
                    },
                    {"$ref": "#/components/parameters/Key"},
                ],
                "responses": {
                    "200": {
                        "description": "An endless event stream.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "example": (
                                    "retry: 2000\n\n"
                                    'data: {"metric":"revenue","agg":"sum","window_ms":60000,'
                                    '"every_ms":null,"as_of":1795773661000,'
                                    '"stream_time":1795773660950,"stale":false,"values":[]}\n\n'
                                ),
                            }
                        },
                    },
                    "400": {
                        "description": "`metrics` is empty or names a metric the config lacks.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {"error": "metrics='nope': unknown metrics ['nope']"},
                            }
                        },
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: the API process answers",
                "security": [],
                "responses": {
                    "200": {
                        "description": 'Always `{"status": "ok"}`.',
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                        },
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: the log, the state store and the processor answer",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Every check is `ok`.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}
                        },
                    },
                    "503": {
                        "description": "Some check is not `ok`; its value says why.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Ready"},
                                "example": {
                                    "ready": False,
                                    "checks": {
                                        "log": "ok",
                                        "state": "ok",
                                        "processor": "not reporting",
                                    },
                                },
                            }
                        },
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "prometheus",
                "tags": ["operations"],
                "summary": "The service's own telemetry in the Prometheus text format",
                "security": [{"bearer": ["read"]}, {"queryKey": ["read"]}],
                "parameters": [{"$ref": "#/components/parameters/Key"}],
                "responses": {
                    "200": {
                        "description": (
                            "Prometheus text format 0.0.4: pulseboard_events_ingested_total"
                            "{type,status}, pulseboard_ingest_request_seconds (histogram), "
                            "pulseboard_log_backlog_events, pulseboard_processing_lag_seconds, "
                            "pulseboard_late_events_total, pulseboard_dead_letters_total, "
                            "pulseboard_live_clients and more (see docs/API.md)."
                        ),
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "403": {"$ref": "#/components/responses/Forbidden"},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "pb_<id>_<secret>",
                "description": (
                    "An API key made by `pulseboard keys create --scope S`. The roles in a "
                    "security requirement are the scopes needed (`admin` grants all)."
                ),
            },
            "queryKey": {
                "type": "apiKey",
                "in": "query",
                "name": "key",
                "description": (
                    "The same key as a query parameter, for browsers' WebSocket and "
                    "EventSource, which cannot set headers. Used only when no Authorization "
                    "header is sent."
                ),
            },
        },
        "parameters": {
            "MetricName": {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "A metric name from the config.",
                "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
            },
            "Key": {
                "name": "key",
                "in": "query",
                "required": False,
                "description": "The API key, when it cannot be sent as a bearer token.",
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "MaxAge": {
                "description": (
                    "`max-age=N`, N the pipeline tick in whole seconds: the value may be up to "
                    "one tick old; `no-store` when the tick is under a second."
                ),
                "schema": {"type": "string", "example": "max-age=1"},
            },
            "NoStore": {
                "description": "`no-store`.",
                "schema": {"type": "string", "const": "no-store"},
            },
            "RetryAfter": {
                "description": "Seconds to wait before sending the request again.",
                "schema": {"type": "integer", "minimum": 1},
            },
        },
        "responses": {
            "Unauthorized": {
                "description": (
                    "A key is required and none was sent, it is malformed, or it is unknown "
                    "or revoked."
                ),
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"},
                        "example": {
                            "error": (
                                "an API key is required: send 'Authorization: Bearer <key>' "
                                "(create one with 'pulseboard keys create --scope ...')"
                            )
                        },
                    }
                },
            },
            "Forbidden": {
                "description": "The key lacks the scope this operation needs.",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"},
                        "example": {
                            "error": "the API key has scopes ['ingest']; this needs 'read'"
                        },
                    }
                },
            },
            "UnknownMetric": {
                "description": "The config defines no metric of that name; the message lists them.",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"},
                        "example": {
                            "error": "no metric named 'revnue'; the config defines: orders, revenue"
                        },
                    }
                },
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "description": "Every error: what was expected, what arrived, what to do.",
                "required": ["error"],
                "additionalProperties": False,
                "properties": {"error": {"type": "string"}},
            },
            "Event": {
                "type": "object",
                "description": (
                    "An event envelope (a subset of CloudEvents). `type` must be registered in "
                    "the config's `events:` and `data` must match that type's fields; fields the "
                    "config does not declare are accepted and ignored. Events more than "
                    "`pipeline.max_future` (default 5m) ahead of the server clock are rejected."
                ),
                "required": ["id", "type", "time", "data"],
                "properties": {
                    "id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 256,
                        "description": "Unique per event; a repeated id counts once.",
                    },
                    "type": {"type": "string", "description": "A type from the config."},
                    "time": {
                        "description": "Event time: epoch milliseconds or RFC 3339 with an offset.",
                        "oneOf": [
                            {"type": "integer", "minimum": 0, "maximum": 253402300799999},
                            {"type": "string", "format": "date-time"},
                        ],
                    },
                    "data": {"type": "object"},
                    "source": {"type": ["string", "null"]},
                    "specversion": {"type": ["string", "null"]},
                },
            },
            "EventError": {
                "type": "object",
                "required": ["index", "id", "error"],
                "additionalProperties": False,
                "properties": {
                    "index": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Position in the request (0-based; the line for NDJSON).",
                    },
                    "id": {
                        "type": ["string", "null"],
                        "description": "The event's id, when it had a string one.",
                    },
                    "error": {"type": "string"},
                },
            },
            "IngestResult": {
                "type": "object",
                "required": ["accepted", "rejected", "errors"],
                "additionalProperties": False,
                "properties": {
                    "accepted": {"type": "integer", "minimum": 0},
                    "rejected": {"type": "integer", "minimum": 0},
                    "errors": {
                        "type": "array",
                        "maxItems": 100,
                        "items": {"$ref": "#/components/schemas/EventError"},
                    },
                },
            },
            "Labels": {
                "type": "object",
                "description": (
                    "The group_by field values of a label set (null where the field was "
                    "absent; `__other__` beyond the metric's max_label_sets). `{}` without "
                    "group_by."
                ),
                "additionalProperties": {
                    "type": ["string", "integer", "number", "boolean", "null"]
                },
            },
            "Value": {
                "type": ["integer", "number", "null"],
                "description": (
                    "The aggregate: an integer for count and distinct, a number otherwise; null "
                    "when no event had the field (min, max, avg, quantiles)."
                ),
            },
            "WindowValue": {
                "type": "object",
                "required": ["labels", "value", "window_start", "window_end", "status"],
                "additionalProperties": False,
                "properties": {
                    "labels": {"$ref": "#/components/schemas/Labels"},
                    "value": {"$ref": "#/components/schemas/Value"},
                    "window_start": {"type": "integer", "description": "Epoch ms, inclusive."},
                    "window_end": {"type": "integer", "description": "Epoch ms, exclusive."},
                    "status": {"type": "string", "enum": ["open", "final"]},
                },
            },
            "MetricValue": {
                "type": "object",
                "description": "The current value of a metric (also each live update).",
                "required": [
                    "metric",
                    "agg",
                    "window_ms",
                    "every_ms",
                    "as_of",
                    "stream_time",
                    "stale",
                    "values",
                ],
                "additionalProperties": False,
                "properties": {
                    "metric": {"type": "string"},
                    "agg": {"$ref": "#/components/schemas/Agg"},
                    "window_ms": {"type": "integer"},
                    "every_ms": {
                        "type": ["integer", "null"],
                        "description": "The slide step of a sliding metric; null if tumbling.",
                    },
                    "as_of": {
                        "type": ["integer", "null"],
                        "description": (
                            "Epoch ms (server clock) of the processor tick that computed this "
                            "value; null before the first."
                        ),
                    },
                    "stream_time": {
                        "type": ["integer", "null"],
                        "description": "Stream time (epoch ms) at that tick; null before events.",
                    },
                    "stale": {
                        "type": "boolean",
                        "description": (
                            "True when the processor is not running or has not reported for "
                            "3 ticks + 2 s: the value may be out of date."
                        ),
                    },
                    "values": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/WindowValue"},
                    },
                },
            },
            "Agg": {
                "type": "string",
                "enum": [
                    "count",
                    "sum",
                    "avg",
                    "min",
                    "max",
                    "distinct",
                    "p50",
                    "p90",
                    "p95",
                    "p99",
                ],
            },
            "MetricDefinition": {
                "type": "object",
                "required": [
                    "name",
                    "event",
                    "agg",
                    "field",
                    "window_ms",
                    "every_ms",
                    "group_by",
                    "where",
                    "current",
                ],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "event": {"type": "string", "description": "The event type aggregated."},
                    "agg": {"$ref": "#/components/schemas/Agg"},
                    "field": {"type": ["string", "null"]},
                    "window_ms": {"type": "integer"},
                    "every_ms": {"type": ["integer", "null"]},
                    "group_by": {"type": "array", "items": {"type": "string"}},
                    "where": {"type": ["string", "null"], "description": "The filter's text."},
                    "current": {
                        "description": "The current value; null before the processor's first.",
                        "oneOf": [{"$ref": "#/components/schemas/MetricValue"}, {"type": "null"}],
                    },
                },
            },
            "MetricList": {
                "type": "object",
                "required": ["metrics"],
                "additionalProperties": False,
                "properties": {
                    "metrics": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/MetricDefinition"},
                    }
                },
            },
            "Point": {
                "type": "object",
                "required": ["t", "value", "status"],
                "additionalProperties": False,
                "properties": {
                    "t": {"type": "integer", "description": "Start of the point, epoch ms."},
                    "value": {"$ref": "#/components/schemas/Value"},
                    "status": {"type": "string", "enum": ["open", "final", "revised"]},
                },
            },
            "Series": {
                "type": "object",
                "required": [
                    "metric",
                    "agg",
                    "window_ms",
                    "step_ms",
                    "from",
                    "to",
                    "series",
                    "stale",
                ],
                "additionalProperties": False,
                "properties": {
                    "metric": {"type": "string"},
                    "agg": {"$ref": "#/components/schemas/Agg"},
                    "window_ms": {"type": "integer"},
                    "step_ms": {"type": "integer"},
                    "from": {
                        "type": "integer",
                        "description": "The range start as served (epoch ms, aligned to step).",
                    },
                    "to": {"type": "integer", "description": "The range end (epoch ms)."},
                    "series": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["labels", "points"],
                            "additionalProperties": False,
                            "properties": {
                                "labels": {"$ref": "#/components/schemas/Labels"},
                                "points": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Point"},
                                },
                            },
                        },
                    },
                    "stale": {"type": "boolean"},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "additionalProperties": False,
                "properties": {"status": {"type": "string", "const": "ok"}},
            },
            "Ready": {
                "type": "object",
                "required": ["ready", "checks"],
                "additionalProperties": False,
                "properties": {
                    "ready": {"type": "boolean"},
                    "checks": {
                        "description": (
                            "By name, `ok` or what is wrong. Embedded mode: `log`, `state`, "
                            "`processor`; distributed mode (`serve --role api|all` on Redis and "
                            "PostgreSQL): `redis`, `postgresql`, `processors`."
                        ),
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["log", "state", "processor"],
                                "additionalProperties": False,
                                "properties": {
                                    "log": {"type": "string"},
                                    "state": {"type": "string"},
                                    "processor": {"type": "string"},
                                },
                            },
                            {
                                "type": "object",
                                "required": ["redis", "postgresql", "processors"],
                                "additionalProperties": False,
                                "properties": {
                                    "redis": {"type": "string"},
                                    "postgresql": {"type": "string"},
                                    "processors": {"type": "string"},
                                },
                            },
                        ],
                    },
                },
            },
            "LiveSubscribe": {
                "description": (
                    "A client message on /v1/live. Subscriptions add up: each message adds "
                    "metrics to those already subscribed."
                ),
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["subscribe"],
                        "properties": {
                            "subscribe": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": (
                                    "Metric names; any `pipeline.<stat>` name subscribes to "
                                    "the `PipelineMessage` of every tick."
                                ),
                            }
                        },
                    },
                    {
                        "type": "object",
                        "required": ["dashboard"],
                        "properties": {
                            "dashboard": {
                                "type": "string",
                                "description": (
                                    "A dashboard id (of the config or saved): subscribes to "
                                    "its panels' metrics."
                                ),
                            }
                        },
                    },
                ],
            },
            "Heartbeat": {
                "type": "object",
                "required": ["heartbeat"],
                "additionalProperties": False,
                "properties": {
                    "heartbeat": {"type": "integer", "description": "Server clock, epoch ms."}
                },
            },
            "LiveMessage": {
                "description": "A server message on /v1/live (and each SSE `data:` line).",
                "oneOf": [
                    {"$ref": "#/components/schemas/MetricValue"},
                    {"$ref": "#/components/schemas/PipelineMessage"},
                    {"$ref": "#/components/schemas/Heartbeat"},
                    {"$ref": "#/components/schemas/Error"},
                ],
            },
        },
    },
}

OPENAPI["tags"].insert(3, TAG)
OPENAPI["paths"].update(PATHS)
OPENAPI["components"]["schemas"].update(SCHEMAS)
OPENAPI["components"]["parameters"].update(PARAMETERS)
OPENAPI["components"]["schemas"]["PipelineMessage"] = {
    "type": "object",
    "description": "Pushed every tick to subscribers of any `pipeline.<stat>`.",
    "required": ["pipeline", "metrics"],
    "properties": {
        "pipeline": {"$ref": "#/components/schemas/PipelineSample"},
        "metrics": {"type": "array", "items": {"$ref": "#/components/schemas/MetricFootprint"}},
    },
}
