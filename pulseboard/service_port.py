"""What the HTTP API (``api.py``) and ``/metrics`` (``telemetry.py``) need of a service: the
embedded ``service.Service`` and the distributed ``dist_service.DistributedService`` both
satisfy ``ApiService`` by shape (``typing.Protocol``), so the routes are written once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pulseboard.adapters.sqlite import StoredDashboard
from pulseboard.auth import KeyStore
from pulseboard.config import Config
from pulseboard.live import Hub
from pulseboard.pipeline_stats import Sampler
from pulseboard.series import WindowSource

if TYPE_CHECKING:
    from pulseboard.service import Counters, IngestResult


class DashboardStore(Protocol):
    """Dashboards saved through the API (``SqliteDashboards``, ``PostgresDashboards``)."""

    def all(self) -> list[StoredDashboard]:
        """Every saved dashboard, by id."""
        ...

    def get(self, ident: str) -> StoredDashboard | None: ...

    def put(self, dashboard: StoredDashboard, *, create_only: bool = False) -> bool | None:
        """Save, replacing one with its id; True if new; None (nothing saved) when
        ``create_only`` and it exists."""
        ...

    def delete(self, ident: str) -> bool:
        """Delete; False if there was none."""
        ...


class ApiService(Protocol):
    """The service behind the routes. Blocking methods (``readiness``, the stores' methods)
    are called from a worker thread; the others on the event loop."""

    @property
    def config(self) -> Config: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def sampler(self) -> Sampler: ...

    @property
    def stats(self) -> dict[str, Any]:
        """The processors' stats as of their last report (summed over processors)."""
        ...

    @property
    def counters(self) -> Counters: ...

    @property
    def keys(self) -> KeyStore: ...

    @property
    def dashboards(self) -> DashboardStore: ...

    @property
    def state(self) -> WindowSource:
        """Where series read history and open windows."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ingest(self, body: bytes, *, ndjson: bool) -> IngestResult:
        """Validate and make durable; ``DecodeError`` (400), ``Overloaded`` (503)."""
        ...

    def current_body(self, name: str) -> bytes | None:
        """The encoded current value of ``name`` (marked stale when it is), None if none."""
        ...

    def stale(self) -> bool:
        """True when the live values cannot be trusted to be current."""
        ...

    def readiness(self) -> dict[str, str]:
        """``/readyz``'s checks by name: ``"ok"`` or what is wrong (blocking)."""
        ...
