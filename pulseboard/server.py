"""``pulseboard serve``: the API, ingest and live push in this process, the processor in a child."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from pulseboard.api import create_app
from pulseboard.config import Config, load_config, mask_url
from pulseboard.errors import ConfigError, PulseboardError
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


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``before_shutdown`` (in a thread) while it still serves."""

    def __init__(
        self,
        config: uvicorn.Config,
        service: Service,
        before_shutdown: Callable[[], None] | None,
    ) -> None:
        super().__init__(config)
        self._service = service
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await asyncio.to_thread(self._before_shutdown)
        # end live streams now, so the graceful shutdown does not wait for them to time out
        self._service.hub.close_all()
        await super().shutdown(sockets)


_EMBEDDED = {"log": "sqlite", "hot": "memory", "history": "sqlite"}


def check_storage(config: Config) -> None:
    """Refuse store settings this version cannot run: the log and history must be durable
    files, and the Redis and PostgreSQL adapters are not part of it yet."""
    problems = []
    for role, supported in _EMBEDDED.items():
        value = getattr(config.storage, role)
        if value != supported:
            problems.append(
                f"storage.{role}: {mask_url(value)!r} cannot be served by this version; "
                f"use {supported!r} (the embedded store)"
            )
    if problems:
        raise ConfigError(problems)


def serve(
    config: Config,
    *,
    host: str,
    port: int,
    require_keys: bool = False,
    verbose: bool = False,
    before_shutdown: Callable[[], None] | None = None,
) -> int:
    """Run until SIGINT or SIGTERM; every acknowledged event is in the log by then.

    ``before_shutdown`` runs once a stop was asked for, before the server stops accepting
    requests (the demo stops its simulator there, so it can deliver what it queued)."""
    check_storage(config)
    listening = _listen(host, port)  # before anything starts: a taken port fails at once
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
    server = _Server(
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
        ),
        service,
        before_shutdown,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler it found; a quiet one makes a clean stop exit 0 rather than die by the signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[listening])
    return 0 if server.started else 1


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PulseboardError(
            f"cannot listen on {host}:{port}: {exc.strerror}; "
            "is another server using that port? Choose another with --port"
        ) from exc
    return sock


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
