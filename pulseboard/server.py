"""``pulseboard serve``: the API, ingest and live push in this process, the processor in a child."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from pathlib import Path

import uvicorn

from pulseboard.api import create_app
from pulseboard.config import Config, load_config
from pulseboard.service import Service

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def with_data_dir(config: Config, data_dir: str | None) -> Config:
    """``config`` with ``storage.data_dir`` replaced when ``data_dir`` is given."""
    if data_dir is None:
        return config
    return dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, data_dir=data_dir)
    )


def serve(
    config: Config,
    *,
    host: str,
    port: int,
    require_keys: bool = False,
    verbose: bool = False,
) -> int:
    """Run until SIGINT or SIGTERM; every acknowledged event is in the log by then."""
    data_dir = Path(config.storage.data_dir)
    required = require_keys or not is_loopback(host)
    service = Service(config, data_dir, verbose=verbose)
    app = create_app(service, require_keys=required)
    log.info(
        "serving on http://%s:%d (data in %s; API keys %s)",
        host,
        port,
        data_dir,
        "required" if required else "not required on loopback",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            lifespan="on",
            access_log=verbose,
            log_level="info",
            timeout_graceful_shutdown=5,
            ws_ping_interval=20,
        )
    )
    server.run()
    return 0 if server.started else 1


def run_serve(
    config_path: str,
    *,
    host: str,
    port: int,
    data_dir: str | None,
    require_keys: bool,
    verbose: bool,
) -> int:
    """``pulseboard serve``."""
    config = with_data_dir(load_config(config_path), data_dir)
    return serve(config, host=host, port=port, require_keys=require_keys, verbose=verbose)
