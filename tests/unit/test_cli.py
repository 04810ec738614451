"""The command line, run in-process as a user would call it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pulseboard import admin
from pulseboard.adapters.sqlite import LOG_FILE
from pulseboard.adapters.sqlite_log import Append, DeadLetter, SqliteLogWriter
from pulseboard.cli import main
from tests.conftest import SHOP_YAML

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


# --- operator commands: the stores a config names -------------------------------------------


def write_config(tmp_path: Path, storage: str) -> Path:
    path = tmp_path / "pulseboard.yaml"
    path.write_text(f"storage: {storage}\n{SHOP_YAML}")
    return path


DISTRIBUTED = (
    "{log: 'redis://127.0.0.1:6399/0', hot: 'redis://127.0.0.1:6399/0', "
    "history: 'postgresql://pb:secret@127.0.0.1:5499/pb'}"
)


def test_keys_on_a_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["keys", "create", "--data-dir", data, "--scope", "read", "--name", "ci"]) == 0
    key = capsys.readouterr().out.strip()
    key_id = key.split("_")[1]
    assert main(["keys", "list", "--data-dir", data]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{key_id} read active created ") and line.endswith(" ci")
    assert main(["keys", "revoke", "--data-dir", data, key_id]) == 0
    assert capsys.readouterr().out == f"revoked {key_id}\n"
    assert main(["keys", "revoke", "--data-dir", data, key_id]) == 1
    assert capsys.readouterr().err == f"no active key {key_id!r}\n"
    assert main(["keys", "list", "--data-dir", data]) == 0
    assert f"{key_id} read revoked " in capsys.readouterr().out


def test_only_keys_create_makes_the_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    for args in (["dlq", "list"], ["keys", "list"], ["keys", "revoke", "abc"]):
        assert main([*args, "--data-dir", str(missing)]) == 1
        assert capsys.readouterr().err == (
            f"pulseboard {args[0]}: no data directory at {missing}; "
            "name a server's with --data-dir or --config\n"
        )
    assert not missing.exists()
    assert main(["keys", "create", "--data-dir", str(missing), "--scope", "ingest"]) == 0
    assert missing.is_dir()
    capsys.readouterr()
    assert main(["dlq", "list", "--data-dir", str(missing)]) == 0
    assert capsys.readouterr().out == "0 shown, 0 not replayed\n"


def test_an_embedded_config_names_its_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "from-config"
    config = write_config(tmp_path, f"{{data_dir: '{data}'}}")
    assert main(["keys", "create", "--config", str(config), "--scope", "read"]) == 0
    assert (data / "meta.db").is_file()
    capsys.readouterr()
    assert main(["reconcile", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"nothing has been processed in {data} yet\n"
    other = tmp_path / "other"
    assert main(["reconcile", "--config", str(config), "--data-dir", str(other)]) == 0
    assert capsys.readouterr().out == f"nothing has been processed in {other} yet\n"


def test_the_config_chooses_the_operator_stores(tmp_path: Path) -> None:
    distributed = write_config(tmp_path, DISTRIBUTED)
    stores = admin.operator_stores(str(distributed), None)  # nothing is opened yet
    assert isinstance(stores, admin.DistributedStores)
    assert stores.config.storage.history.endswith("127.0.0.1:5499/pb")
    embedded = write_config(tmp_path, "{data_dir: here}")
    stores = admin.operator_stores(str(embedded), None)
    assert isinstance(stores, admin.EmbeddedStores) and stores.data_dir == Path("here")
    stores = admin.operator_stores(str(embedded), "there")
    assert isinstance(stores, admin.EmbeddedStores) and stores.data_dir == Path("there")
    stores = admin.operator_stores(None, None)
    assert isinstance(stores, admin.EmbeddedStores) and stores.data_dir == Path("pulseboard-data")


def test_operator_commands_refuse_what_the_config_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    distributed = write_config(tmp_path, DISTRIBUTED)
    assert main(["reconcile", "--config", str(distributed), "--data-dir", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pulseboard reconcile: --data-dir names an embedded data directory")
    assert "leave --data-dir out" in err
    mixed = write_config(tmp_path, "{history: 'postgresql://pb:secret@db/pb'}")
    assert main(["keys", "list", "--config", str(mixed)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pulseboard keys: invalid configuration:")
    assert "storage.log: 'sqlite'" in err and "secret" not in err


def test_output_cut_short_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    dead = [
        DeadLetter(1_000 + i, 0, f"e{i}", "events[0]: not an object", b"1") for i in range(3_000)
    ]

    async def write() -> None:
        writer = SqliteLogWriter(tmp_path / LOG_FILE)
        try:
            await writer.append(Append(1_000, 0, 0, 0, None, tuple(dead)))
        finally:
            writer.close()

    asyncio.run(write())
    args = ["dlq", "list", "--data-dir", str(tmp_path), "--limit", "3000", "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "pulseboard.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["event_id"] == "e0"
        proc.stdout.close()  # as `| head -1` does
        errors = proc.stderr.read().decode()
        proc.wait(60)
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
    assert proc.returncode == 1


def test_check_refuses_store_settings_that_serve_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "events: {e: {fields: {}}}\nmetrics: [{name: n, event: e, agg: count, window: 1m}]\n"
    for storage, problem in (
        (
            "{log: 'redis://h/0?prefx=a:', hot: 'redis://h/0?prefx=a:', history: 'postgresql://h/d'}",
            "storage.log: invalid Redis URL redis://h/0?prefx=a:: unknown option 'prefx'",
        ),
        (
            "{log: 'redis://h/0', hot: memory, history: 'postgresql://h/d'}",
            "storage.hot: 'memory': the distributed mode",
        ),
    ):
        path = tmp_path / "pulseboard.yaml"
        path.write_text(f"storage: {storage}\n{body}")
        assert main(["check", str(path)]) == 1
        assert problem in capsys.readouterr().err
    path.write_text(
        f"storage: {{log: 'redis://h/0', hot: 'redis://h/0', history: 'postgresql://h/d'}}\n{body}"
    )
    assert main(["check", str(path)]) == 0


def test_serve_refuses_a_data_dir_beside_a_distributed_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pulseboard.yaml"
    path.write_text(
        "storage: {log: 'redis://h/0', hot: 'redis://h/0', history: 'postgresql://h/d'}\n"
        "events: {e: {fields: {}}}\nmetrics: [{name: n, event: e, agg: count, window: 1m}]\n"
    )
    args = ["serve", "--config", str(path), "--role", "api", "--data-dir", str(tmp_path)]
    assert main(args) == 1
    assert (
        "pulseboard serve: --data-dir names an embedded data directory" in capsys.readouterr().err
    )
