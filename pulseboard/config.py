"""The configuration: one YAML file parsed once, at the edge, into frozen typed objects.

The objects below are what every other module receives; nothing deeper reads the file or
the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

import yaml

from pulseboard.durations import format_duration_ms
from pulseboard.errors import ConfigError
from pulseboard.expr import Expr

FieldType = Literal["int", "float", "string", "bool"]
AggName = Literal["count", "sum", "avg", "min", "max", "distinct", "p50", "p90", "p95", "p99"]
PanelKind = Literal["stat", "timeseries", "bars", "table"]

NAME_PATTERN = r"[a-z][a-z0-9_]{0,62}"
"""Names of events, fields, metrics and dashboards: they end up in store keys and SQL."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an event type's ``data`` object.

    ``enum``, if set, lists the only values accepted; only string, int and bool fields have one.
    """

    name: str
    type: FieldType
    required: bool = False
    enum: tuple[str | int | bool, ...] | None = None


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
    which divides ``window_ms`` and is smaller than it (``every`` equal to ``window`` is
    parsed as a tumbling window). ``where`` filters events before aggregation.
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
        """The width of the fine buckets the engine keeps: ``every_ms`` if sliding, else window."""
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
    takeover_after_ms: int = 30_000
    """Distributed mode: how long a processor's unacknowledged log entries sit idle before a
    living processor takes them over (the owner is presumed dead)."""
    retention: RetentionSpec = field(default_factory=RetentionSpec)
    distinct_exact_threshold: int = 1_000


@dataclass(frozen=True, slots=True)
class StorageSpec:
    """Where data lives: ``sqlite``/``memory`` for the embedded adapters or a server URL."""

    data_dir: str = "./pulseboard-data"
    log: str = "sqlite"
    hot: str = "memory"
    history: str = "sqlite"

    def __repr__(self) -> str:
        # Written by hand so that a logged config never shows a password.
        return (
            f"StorageSpec(data_dir={self.data_dir!r}, log={mask_url(self.log)!r}, "
            f"hot={mask_url(self.hot)!r}, history={mask_url(self.history)!r})"
        )


@dataclass(frozen=True, slots=True)
class LimitsSpec:
    """Bounds that keep one client or a backlog from taking the service down."""

    max_request_bytes: int = 10 * 1024 * 1024
    """Largest ingest request body, compressed or not (a larger one gets 413)."""
    max_backlog_events: int = 2_000_000
    """Accepted events the processor may lag behind before ingest answers 503."""


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """One panel of a dashboard."""

    metric: str
    """A metric of the config, or a pipeline stat ``pipeline.<stat>``."""
    kind: PanelKind = "timeseries"
    title: str | None = None
    compare_ms: int | None = None
    """Show the metric this long ago too: a stat's change against it, else a split view."""
    divide_by: str | None = None
    """Another metric; the panel shows the ratio metric / divide_by (by labels and window)."""


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    """A dashboard defined in the config."""

    id: str
    title: str
    panels: tuple[PanelSpec, ...]
    range_ms: int = 5 * 60_000
    """The time range the dashboard opens with (history is fetched further only on demand)."""


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, valid configuration."""

    events: dict[str, EventSpec]
    metrics: tuple[MetricSpec, ...]
    storage: StorageSpec = field(default_factory=StorageSpec)
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)
    dashboards: tuple[DashboardSpec, ...] = ()
    limits: LimitsSpec = field(default_factory=LimitsSpec)

    def metric(self, name: str) -> MetricSpec | None:
        """The metric called ``name``, or None."""
        for spec in self.metrics:
            if spec.name == name:
                return spec
        return None


_PASSWORD_PARAM = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def mask_url(value: str) -> str:
    """``value`` with its password replaced by ``***``, for printing and logging.

    Masks the password of the userinfo (``redis://:secret@host`` -> ``redis://:***@host``) and a
    ``password=`` query parameter. Values that are not URLs (``sqlite``, ``memory``) come back
    unchanged; a URL too malformed to split is masked whole after its scheme.
    """
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value.split("://", 1)[0] + "://***"
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if password is None and query == parts.query:
        return value  # unchanged, rather than re-normalised by urlunsplit
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def parse_config(data: object, source: str = "<config>") -> Config:
    """Check already-loaded YAML data and build the :class:`Config` it describes.

    Raises :class:`~pulseboard.errors.ConfigError` listing every problem found, each as
    ``location: message`` (``metrics[2].field: event 'order' has no field 'amout' (did you
    mean 'amount'?)``); problems that concern the whole document are located at ``source``.
    """
    # Imported here because the checker builds the model classes defined in this module.
    from pulseboard.config_check import check_config

    return check_config(data, source)


class _Loader(yaml.SafeLoader):
    """The safe loader, also noting duplicate mapping keys (plain YAML keeps the last silently)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, int, str]] = []  # (line, column, message), 1-based

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first_line: dict[object, int] = {}
        for key_node, _value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            line, column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key_node.value in first_line:
                message = (
                    f"duplicate key {key_node.value!r} (first at line "
                    f"{first_line[key_node.value]}); YAML would keep only the last"
                )
                self.duplicates.append((line, column, message))
            else:
                first_line[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


def _read_text(source: str) -> str:
    try:
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([f"{source}: no such file"]) from exc
    except IsADirectoryError as exc:
        raise ConfigError([f"{source}: is a directory, expected a YAML file"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (byte {exc.start})"]) from exc
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc


def _load_yaml(text: str, source: str) -> tuple[object, list[str]]:
    """The document in ``text`` and the duplicate-key problems found while loading it."""
    loader = _Loader(text)
    try:
        data: object = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        what = exc.problem or exc.context or "unreadable"
        context = ""
        if exc.context and exc.problem and exc.context_mark is not None:
            start = exc.context_mark
            context = (
                f" ({exc.context} started at line {start.line + 1}, column {start.column + 1})"
            )
        raise ConfigError([f"{where}: YAML syntax error: {what}{context}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML error: {exc}"]) from exc
    finally:
        loader.dispose()
    # Outer mappings are built before inner ones: sort to report in reading order.
    return data, [f"{source}:{ln}:{col}: {msg}" for ln, col, msg in sorted(loader.duplicates)]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read the YAML file at ``path`` and parse it with :func:`parse_config`.

    Raises :class:`~pulseboard.errors.ConfigError` for a file that cannot be read, a YAML
    syntax error (located ``path:line:column``), duplicate keys, and every problem
    :func:`parse_config` finds.
    """
    source = os.fspath(path)
    data, duplicates = _load_yaml(_read_text(source), source)
    try:
        config = parse_config(data, source)
    except ConfigError as exc:
        raise ConfigError(duplicates + exc.problems) from exc
    if duplicates:
        raise ConfigError(duplicates)
    return config


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _describe_field(spec: FieldSpec) -> str:
    details: list[str] = [spec.type]
    if spec.enum is not None:
        details[0] += ": " + "|".join(str(value) for value in spec.enum)
    if spec.required:
        details.append("required")
    return f"{spec.name} ({', '.join(details)})"


def _describe_metric(spec: MetricSpec) -> str:
    what = f"{spec.agg}({spec.field})" if spec.field is not None else spec.agg
    text = f"{what} of {spec.event} per {format_duration_ms(spec.window_ms)} window"
    if spec.every_ms is not None:
        text += f" sliding every {format_duration_ms(spec.every_ms)}"
    if spec.where is not None:
        text += f", where {spec.where}"
    if spec.group_by:
        text += f", by {', '.join(spec.group_by)} (at most {spec.max_label_sets} label sets)"
    return text


def _describe_pipeline(spec: PipelineSpec) -> str:
    fmt = format_duration_ms
    retention = spec.retention
    return (
        f"pipeline: tick {fmt(spec.tick_ms)}, lateness {fmt(spec.lateness_ms)}, "
        f"max_future {fmt(spec.max_future_ms)}, reconcile_every {fmt(spec.reconcile_every_ms)}, "
        f"takeover_after {fmt(spec.takeover_after_ms)}, "
        f"distinct_exact_threshold {spec.distinct_exact_threshold}; retention hot "
        f"{fmt(retention.hot_ms)}, history {fmt(retention.history_ms)}, log {fmt(retention.log_ms)}"
    )


def summarize(config: Config) -> str:
    """A human summary of a valid config, as ``pulseboard check`` prints it (no final newline).

    Counts, storage (passwords masked), pipeline timing, then one line per event type, metric
    and dashboard.
    """
    panels = sum(len(dashboard.panels) for dashboard in config.dashboards)
    storage = config.storage
    lines = [
        f"{_plural(len(config.events), 'event type')}, {_plural(len(config.metrics), 'metric')}, "
        f"{_plural(len(config.dashboards), 'dashboard')} ({_plural(panels, 'panel')})",
        f"storage: data_dir {storage.data_dir}, log {mask_url(storage.log)}, "
        f"hot {mask_url(storage.hot)}, history {mask_url(storage.history)}",
        _describe_pipeline(config.pipeline),
        "event types:",
    ]
    for event in config.events.values():
        fields = ", ".join(_describe_field(spec) for spec in event.fields) or "no fields"
        lines.append(f"  {event.name}: {fields}")
    lines.append("metrics:")
    lines.extend(f"  {spec.name}: {_describe_metric(spec)}" for spec in config.metrics)
    if config.dashboards:
        lines.append("dashboards:")
    for dashboard in config.dashboards:
        metrics = ", ".join(panel.metric for panel in dashboard.panels)
        lines.append(f"  {dashboard.id} ({dashboard.title!r}): {metrics}")
    return "\n".join(lines)


def run_check(
    path: str, out: TextIO, err: TextIO, serving: Callable[[Config], object] | None = None
) -> int:
    """What ``pulseboard check FILE`` does; returns the exit code.

    A valid file: ``FILE: OK`` and :func:`summarize` on ``out``, exit 0. An invalid one: a
    header line, then every problem on its own line (indented, location first) on ``err``,
    exit 1. ``serving`` (``server.check_storage``) checks what only serving the file needs,
    raising ``ConfigError`` as the file's own checks do.
    """
    try:
        config = load_config(path)
        if serving is not None:
            serving(config)
    except ConfigError as exc:
        count = _plural(len(exc.problems), "problem")
        err.write(f"{path}: invalid configuration, {count}:\n")
        err.writelines(f"  {problem}\n" for problem in exc.problems)
        return 1
    out.write(f"{path}: OK\n{summarize(config)}\n")
    return 0
