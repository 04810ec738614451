"""The command line, run in-process as a user would call it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulseboard.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_check_valid_and_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(ROOT / "examples" / "shop.yaml")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check", str(ROOT / "examples" / "invalid.yaml")]) == 1
    err = capsys.readouterr().err
    assert "metrics[1].field: event 'order' has no field 'amout' (did you mean 'amount'?)" in err


@pytest.mark.parametrize("workers", [1, 2])
def test_engine_bench_reports_json(workers: int, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--events", "4000", "--workers", str(workers), "--repeat", "2", "--json"]
    assert main(["bench", "engine", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["name"] == "engine"
    assert report["events"] == 4000
    assert report["workers"] == workers
    assert report["metrics"] == 10
    assert report["baseline"]["name"] == "decode"
    assert report["events_per_s"] > 0
    assert len(report["rounds"]) == 2
    best = max(r["events_per_s"] for r in report["rounds"])
    assert report["events_per_s"] == best
    assert report["baseline"]["events_per_s"] == max(r["baseline"] for r in report["rounds"])
    assert report["ratio"] == pytest.approx(best / report["baseline"]["events_per_s"], rel=0.01)
    assert set(report["stage_ns_per_event"]) == {"check", "decode_columns", "aggregate"}
