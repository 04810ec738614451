"""The configuration: one YAML file parsed once, at the edge, into frozen typed objects.

The objects below are what every other module receives; nothing deeper reads the file or
the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pulseboard.expr import Expr

FieldType = Literal["int", "float", "string", "bool"]
AggName = Literal["count", "sum", "avg", "min", "max", "distinct", "p50", "p90", "p95", "p99"]

NAME_PATTERN = r"[a-z][a-z0-9_]{0,62}"
"""Names of events, fields, metrics and dashboards: they end up in store keys and SQL."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an event type's ``data`` object."""

    name: str
    type: FieldType
    required: bool = False
    enum: tuple[str | int | float | bool, ...] | None = None


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A registered event type and the fields its ``data`` must have."""

    name: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        """The field called ``name``, or None."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric: an aggregation of one event type's field over event-time windows.

    ``every_ms`` is None for a tumbling window; otherwise the window slides by ``every_ms``,
    which divides ``window_ms``. ``where`` filters events before aggregation.
    ``max_label_sets`` caps the distinct ``group_by`` label sets per metric; values beyond
    the cap are counted under the label set whose every label is ``__other__``.
    """

    name: str
    event: str
    agg: AggName
    window_ms: int
    field: str | None = None
    every_ms: int | None = None
    group_by: tuple[str, ...] = ()
    where: Expr | None = None
    max_label_sets: int = 1000

    @property
    def bucket_ms(self) -> int:
        """The width of the fine buckets the engine keeps: ``every_ms`` if sliding, else the window."""
        return self.every_ms if self.every_ms is not None else self.window_ms


@dataclass(frozen=True, slots=True)
class RetentionSpec:
    """How long each store keeps data, in milliseconds."""

    hot_ms: int = 3_600_000
    history_ms: int = 90 * 86_400_000
    log_ms: int = 86_400_000


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """Timing of the pipeline, in milliseconds."""

    tick_ms: int = 1_000
    lateness_ms: int = 30_000
    max_future_ms: int = 300_000
    reconcile_every_ms: int = 60_000
    retention: RetentionSpec = field(default_factory=RetentionSpec)
    distinct_exact_threshold: int = 1_000


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Where data lives: ``sqlite``/``memory`` for the embedded adapters or a server URL."""

    data_dir: str = "./pulseboard-data"
    log: str = "sqlite"
    hot: str = "memory"
    history: str = "sqlite"


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """One panel of a dashboard."""

    metric: str
    kind: Literal["stat", "timeseries", "bars", "table"] = "timeseries"
    title: str | None = None


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    """A dashboard defined in the config."""

    id: str
    title: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, valid configuration."""

    events: dict[str, EventSpec]
    metrics: tuple[MetricSpec, ...]
    storage: StorageSpec = field(default_factory=StorageSpec)
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)
    dashboards: tuple[DashboardSpec, ...] = ()

    def metric(self, name: str) -> MetricSpec | None:
        """The metric called ``name``, or None."""
        for spec in self.metrics:
            if spec.name == name:
                return spec
        return None
