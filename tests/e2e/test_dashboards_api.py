"""Dashboards and pipeline stats over HTTP against a real ``pulseboard serve``: saving, listing,
read-only templates, every refusal with its message, live pipeline samples, and the bodies held
against the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from pulseboard.adapters.sqlite import META_FILE, SqliteKeys
from pulseboard.auth import create_key
from tests.e2e.conftest import Server
from tests.e2e.test_api import (
    conforms,
    error_of,
    get,
    order,
    poll,
    post,
    recv_until,
    running,
    ws_url,
)

MINE = {
    "title": "Mine",
    "range": "1h",
    "panels": [
        {"metric": "orders", "kind": "bars", "title": "By region"},
        {"metric": "revenue_1m", "kind": "stat", "compare": "1d"},
        {"metric": "big_orders", "kind": "timeseries", "divide_by": "revenue"},
        {"metric": "pipeline.lag_ms", "kind": "stat"},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running(tmp_path_factory.mktemp("dashboards"))


def put(server: Server, ident: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.put(f"{server.url}/v1/dashboards/{ident}", content=content, timeout=10, **kwargs)


def delete(server: Server, ident: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(f"{server.url}/v1/dashboards/{ident}", timeout=10, **kwargs)


def test_a_saved_dashboard_reads_back_identically_and_can_be_replaced_and_deleted(
    server: Server,
) -> None:
    created = put(server, "mine", MINE)
    assert created.status_code == 201, created.text
    body = created.json()
    conforms("Dashboard", body)
    assert (body["id"], body["source"], body["problems"]) == ("mine", "user", [])
    assert body["panels"][0] == {
        "metric": "orders",
        "kind": "bars",
        "title": "By region",
        "compare": None,
        "divide_by": None,
    }
    assert body["panels"][1]["compare"] == "1d"
    assert get(server, "/v1/dashboards/mine").json() == body

    # what GET returns can be sent back as it is (server keys and nulls are ignored)
    body["title"] = "Mine, renamed"
    replaced = put(server, "mine", body)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["title"] == "Mine, renamed"
    assert replaced.json()["updated_ms"] >= body["updated_ms"]

    listed = get(server, "/v1/dashboards").json()
    conforms("DashboardList", listed)
    assert [(d["id"], d["source"]) for d in listed["dashboards"]] == [
        ("ops", "config"),
        ("mine", "user"),
    ]

    assert delete(server, "mine").status_code == 204
    assert "no dashboard 'mine'" in error_of(get(server, "/v1/dashboards/mine"), 404)
    assert "no dashboard 'mine'; known: ops" in error_of(delete(server, "mine"), 404)


def test_a_saved_dashboard_survives_a_restart(tmp_path: Path) -> None:
    for server in running(tmp_path):
        assert put(server, "kept", MINE).status_code == 201
        server.stop()
        server.start()
        assert get(server, "/v1/dashboards/kept").json()["panels"][2]["divide_by"] == "revenue"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{", "dashboard: the body is not valid JSON", id="not-json"),
        pytest.param([], "dashboard: expected a JSON object {title, panels, ...}", id="array"),
        pytest.param(
            {"title": "T", "panels": []},
            "panels: a dashboard needs at least one panel",
            id="no-panels",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "ordrs"}]},
            "panels[0].metric: unknown metric 'ordrs' (did you mean 'orders'?)",
            id="unknown-metric",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "pipeline.lagg"}]},
            "panels[0].metric: unknown pipeline stat 'pipeline.lagg'",
            id="unknown-stat",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "orders", "kind": "pie"}]},
            "panels[0].kind: ",
            id="unknown-kind",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "orders", "compare": "1x"}]},
            "panels[0].compare: '1x' is not a duration",
            id="bad-compare",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "pipeline.lag_ms", "compare": "1d"}]},
            "panels[0].compare: pipeline stats keep 15 minutes of history",
            id="compare-a-stat",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "orders", "divide_by": "pipeline.lag_ms"}]},
            "panels[0].divide_by: expected a metric of the config, not a pipeline stat",
            id="divide-by-a-stat",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "big_orders", "divide_by": "orders"}]},
            "panels[0].divide_by: 'orders' is grouped by region and 'big_orders' is not; divide "
            "by a metric without group_by or with the same group_by",
            id="ratio-groups-differ",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "orders_slide", "divide_by": "revenue"}]},
            "panels[0].divide_by: a ratio needs windows that match: 'orders_slide' has 4s every "
            "1s, 'revenue' has 2s",
            id="ratio-windows-differ",
        ),
        pytest.param(
            {"title": "T", "range": "400d", "panels": [{"metric": "orders"}]},
            "range: '400d' is longer than the longest range, 366d",
            id="range-too-long",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "orders"}], "colour": "red"},
            "colour: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            {"id": "other", "title": "T", "panels": [{"metric": "orders"}]},
            "id: 'other' in the body differs from 'bad' in the path",
            id="id-mismatch",
        ),
        pytest.param(
            {"title": "T", "panels": [{"metric": "orders"}] * 51},
            "panels: has 51 panels; at most 50 are allowed",
            id="too-many-panels",
        ),
    ],
)
def test_400_names_each_problem_of_a_dashboard(server: Server, body: Any, message: str) -> None:
    assert message in error_of(put(server, "bad", body), 400)
    assert get(server, "/v1/dashboards/bad").status_code == 404  # nothing was saved


def test_every_problem_of_a_body_is_listed_at_once(server: Server) -> None:
    body = {"title": "", "panels": [{"metric": "ordrs"}, {"metric": "orders", "kind": 3}]}
    assert error_of(put(server, "bad", body), 400).split("; ") == [
        "title: expected a non-blank string, got an empty string",
        "panels[0].metric: unknown metric 'ordrs' (did you mean 'orders'?)",
        "panels[1].kind: unknown panel kind 3 (expected one of: stat, timeseries, bars, table)",
    ]


def test_config_dashboards_are_read_only(server: Server) -> None:
    for response in (put(server, "ops", MINE), delete(server, "ops")):
        assert "'ops' is defined in the config file and is read-only" in error_of(response, 409)
    assert get(server, "/v1/dashboards/ops").json()["source"] == "config"


def test_ids_must_be_identifiers(server: Server) -> None:
    assert "dashboard" in error_of(put(server, "no-dash", MINE), 400)


def test_413_for_a_huge_body(server: Server) -> None:
    huge = json.dumps({"title": "x" * 300_000, "panels": []}).encode()
    assert "at most 262144" in error_of(put(server, "huge", huge), 413)


def test_saving_needs_the_dashboards_scope(tmp_path: Path) -> None:
    for server in running(tmp_path, "--require-keys"):
        store = SqliteKeys(server.data_dir / META_FILE)
        try:
            read, edit = create_key(store, ["read"]), create_key(store, ["dashboards"])
        finally:
            store.close()
        refused = put(server, "mine", MINE, headers={"authorization": f"Bearer {read}"})
        assert "this needs 'dashboards'" in error_of(refused, 403)
        saved = put(server, "mine", MINE, headers={"authorization": f"Bearer {edit}"})
        assert saved.status_code == 201
        assert error_of(get(server, "/v1/dashboards"), 401)


def test_a_dashboard_whose_metric_left_the_config_is_listed_with_its_problems(
    tmp_path: Path,
) -> None:
    for server in running(tmp_path):
        assert put(server, "old", MINE).status_code == 201
        server.stop()
        text = server.config_path.read_text().replace("big_orders", "large_orders")
        server.config_path.write_text(text)
        server.start()
        old = get(server, "/v1/dashboards/old").json()
        conforms("Dashboard", old)
        (problem,) = old["problems"]
        assert problem.startswith("panels[2].metric: unknown metric 'big_orders'")
        assert [p["metric"] for p in old["panels"]][2] == "big_orders"


def test_pipeline_samples_count_what_was_posted(server: Server) -> None:
    assert post(server, [order(1.0), order(2.0), {"id": "x", "type": "nope"}]).status_code == 202

    def counted() -> dict[str, Any] | None:
        body: dict[str, Any] = get(server, "/v1/pipeline?from=-1m").json()
        current = body["current"]
        return body if current and current["dead_letters"] >= 1 else None

    body = poll(counted, "a sample with the dead letter")
    conforms("PipelineStats", body)
    assert body["history"][-1] == body["current"]
    assert all(a["t"] < b["t"] for a, b in zip(body["history"], body["history"][1:], strict=False))
    assert sum(s["events_per_second"] for s in body["history"]) > 0
    assert body["current"]["processor_up"] is True
    names = [m["name"] for m in body["metrics"]]
    assert names == ["orders", "revenue", "orders_slide", "big_orders", "revenue_1m"]
    assert "from='soon' is not a time" in error_of(get(server, "/v1/pipeline?from=soon"), 400)


def test_pipeline_stats_are_pushed_live_with_metrics(server: Server) -> None:
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"subscribe": ["pipeline.events_per_second", "revenue_1m"]}))
        post(server, [order(5.0)])
        seen: dict[str, dict[str, Any]] = {}

        def wanted(m: dict[str, Any]) -> bool:
            # the answer to subscribing is the last sample, taken before this client came
            counted = "pipeline" in m and m["pipeline"]["live_clients"] >= 1
            return counted or m.get("metric") == "revenue_1m"

        while len(seen) < 2:  # both kinds, in whichever order they come
            message = recv_until(ws, wanted)
            seen["pipeline" if "pipeline" in message else "metric"] = message
        conforms("PipelineMessage", seen["pipeline"])
        ws.send(json.dumps({"subscribe": ["pipeline.nope"]}))
        assert recv_until(ws, lambda m: "error" in m) == {
            "error": "unknown metrics ['pipeline.nope']"
        }


def test_a_saved_dashboard_can_be_subscribed_to(server: Server) -> None:
    assert put(server, "live", MINE).status_code in (200, 201)
    with connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"dashboard": "live"}))
        post(server, [order(150.0, "us")])
        got = set()
        while not {"orders", "big_orders", "pipeline"} <= got:
            message = recv_until(ws, lambda m: "metric" in m or "pipeline" in m)
            got.add(message.get("metric", "pipeline"))
        assert "revenue" not in got


def test_if_none_match_star_only_creates(server: Server) -> None:
    create_only = {"if-none-match": "*"}
    assert put(server, "fresh", MINE, headers=create_only).status_code == 201
    other = {"title": "Other", "panels": [{"metric": "orders"}]}
    refused = put(server, "fresh", other, headers=create_only)
    assert error_of(refused, 412) == (
        "dashboard 'fresh' exists already; choose another id, or open it to edit it"
    )
    assert get(server, "/v1/dashboards/fresh").json()["title"] == "Mine"  # unchanged
    assert put(server, "fresh", other).status_code == 200  # without the header: replaced
    assert delete(server, "fresh").status_code == 204
