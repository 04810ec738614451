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
from pulseboard.service_port import ApiService

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
    """``config`` with ``storage.data_dir`` replaced when ``data_dir`` is given (``--data-dir``);
    ``PulseboardError`` for a config of the distributed mode, which keeps no data there."""
    if data_dir is None:
        return config
    if any("://" in url for url in (config.storage.log, config.storage.hot)):
        raise PulseboardError(
            "--data-dir names an embedded data directory, but this config keeps its data in "
            "Redis and PostgreSQL (storage.log, storage.history); leave --data-dir out"
        )
    return dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, data_dir=data_dir)
    )


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``before_shutdown`` (in a thread) while it still serves."""

    def __init__(
        self,
        config: uvicorn.Config,
        service: ApiService,
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
_REDIS_SCHEMES = ("redis://", "rediss://")

EMBEDDED = "embedded"
DISTRIBUTED = "distributed"


def check_storage(config: Config) -> str:
    """The mode the store settings describe, ``EMBEDDED`` or ``DISTRIBUTED``; ``ConfigError``
    for settings this version cannot run.

    Embedded: ``log: sqlite``, ``hot: memory``, ``history: sqlite`` (durable files in
    ``data_dir``). Distributed: the log and the hot store on one Redis (the same
    ``redis://``/``rediss://`` URL: the commit acknowledges log entries and applies their
    effect in one script, so they must live on one server) and history on PostgreSQL
    (``postgresql://``). Anything between the two is refused, naming what to change.
    """
    storage = config.storage
    values = {role: getattr(storage, role) for role in _EMBEDDED}
    if values == _EMBEDDED:
        return EMBEDDED
    if any("://" in v for v in values.values()):
        return _check_distributed(values)
    problems = [
        f"storage.{role}: {mask_url(value)!r} cannot be served by this version; "
        f"use {_EMBEDDED[role]!r} (the embedded store)"
        for role, value in values.items()
        if value != _EMBEDDED[role]
    ]
    raise ConfigError(problems)


def _check_distributed(values: dict[str, str]) -> str:
    problems = []
    example = (
        "storage: {log: redis://host:6379/0, hot: redis://host:6379/0, history: postgresql://…}"
    )
    log_url, hot_url, history_url = values["log"], values["hot"], values["history"]
    if not log_url.startswith(_REDIS_SCHEMES):
        problems.append(
            f"storage.log: {mask_url(log_url)!r}: the distributed mode (a server URL is set) "
            f"needs the log on Redis, the same URL as storage.hot; e.g. {example}"
        )
    if not hot_url.startswith(_REDIS_SCHEMES):
        problems.append(
            f"storage.hot: {mask_url(hot_url)!r}: the distributed mode (a server URL is set) "
            f"needs the hot store on Redis, the same URL as storage.log; e.g. {example}"
        )
    elif log_url.startswith(_REDIS_SCHEMES) and log_url != hot_url:
        problems.append(
            f"storage.hot: {mask_url(hot_url)!r} differs from storage.log "
            f"{mask_url(log_url)!r}; the log and the hot store must be one Redis (the same "
            "URL): a commit acknowledges log entries and applies them in one step"
        )
    else:
        from pulseboard.adapters.redis_conn import RedisSettings, RedisUrlError

        try:
            RedisSettings.from_url(log_url)  # its options and prefix
        except RedisUrlError as exc:
            problems.append(f"storage.log: {exc}")
    if not history_url.startswith("postgresql://"):
        problems.append(
            f"storage.history: {mask_url(history_url)!r}: the distributed mode (a server URL "
            f"is set) needs history on PostgreSQL; e.g. {example}"
        )
    if problems:
        raise ConfigError(problems)
    return DISTRIBUTED


ROLES = ("all", "api", "processor")


def serve(
    config: Config,
    *,
    host: str,
    port: int,
    require_keys: bool = False,
    verbose: bool = False,
    before_shutdown: Callable[[], None] | None = None,
    role: str = "all",
) -> int:
    """Run until SIGINT or SIGTERM; every acknowledged event is in the log by then.

    ``role``: ``all`` (default) serves the API and runs one processor in a child process;
    ``api`` and ``processor`` (distributed mode only) run one of the two, so each can be
    scaled on its own. ``before_shutdown`` runs once a stop was asked for, before the server
    stops accepting requests (the demo stops its simulator there, so it can deliver what it
    queued)."""
    if role not in ROLES:
        raise PulseboardError(f"--role {role!r} is not a role; expected one of {', '.join(ROLES)}")
    mode = check_storage(config)
    if mode == EMBEDDED and role != "all":
        raise PulseboardError(
            f"--role {role} needs the distributed stores (storage.log and storage.hot: one "
            "redis:// URL, storage.history: postgresql://); the embedded stores (SQLite files) "
            "are served by one process: use --role all"
        )
    if role == "processor":
        from pulseboard.dist_run import run_processor_until_signal

        return run_processor_until_signal(config)
    listening = _listen(host, port)  # before anything starts: a taken port fails at once
    required = require_keys or not is_loopback(host)
    service: ApiService
    if mode == EMBEDDED:
        where = f"data in {config.storage.data_dir}"
        service = Service(config, Path(config.storage.data_dir), verbose=verbose)
    else:
        from pulseboard.dist_service import DistributedService

        where = (
            f"{role} role; log and hot store {mask_url(config.storage.log)}, history "
            f"{mask_url(config.storage.history)}"
        )
        service = DistributedService(config, spawn_processor=role == "all", verbose=verbose)
    app = create_app(service, require_keys=required)
    log.info(
        "serving on http://%s:%d (%s; API keys %s)",
        host,
        port,
        where,
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
    role: str = "all",
) -> int:
    """``pulseboard serve``."""
    config = with_data_dir(load_config(config_path), data_dir)
    return serve(
        config, host=host, port=port, require_keys=require_keys, verbose=verbose, role=role
    )
