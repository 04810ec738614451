"""Checking loaded config data: every problem in one pass, each with its location.

One function per section; each reads what it knows, reports what is wrong to a shared
:class:`_Problems` list, and carries on, so one run lists every mistake. Cross-references
(metric -> event, field; panel -> metric) are only checked against sections that were
readable, so one mistake does not cascade into a page of follow-up problems.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args
from urllib.parse import urlsplit

from pulseboard import expr
from pulseboard.config import (
    NAME_PATTERN,
    AggName,
    Config,
    DashboardSpec,
    EventSpec,
    FieldSpec,
    FieldType,
    MetricSpec,
    PanelKind,
    PanelSpec,
    PipelineSpec,
    RetentionSpec,
    StorageSpec,
    mask_url,
)
from pulseboard.durations import format_duration_ms, parse_duration_ms
from pulseboard.errors import ConfigError, ExprError

_NAME = re.compile(NAME_PATTERN)
_FIELD_TYPES: tuple[FieldType, ...] = get_args(FieldType)
_AGGS: tuple[AggName, ...] = get_args(AggName)
_PANEL_KINDS: tuple[PanelKind, ...] = get_args(PanelKind)
_NUMERIC_AGGS = frozenset(("sum", "avg", "min", "max", "p50", "p90", "p95", "p99"))
_GROUPABLE_TYPES = ("string", "int", "bool")

# Words people reach for, mapped to ours; the suggestion is made, the word is still refused.
_TYPE_ALIASES = {
    "str": "string",
    "text": "string",
    "integer": "int",
    "long": "int",
    "boolean": "bool",
    "double": "float",
    "number": "float",
    "decimal": "float",
}
_AGG_ALIASES = {
    "mean": "avg",
    "average": "avg",
    "total": "sum",
    "median": "p50",
    "unique": "distinct",
    "count_distinct": "distinct",
    "minimum": "min",
    "maximum": "max",
}

_TOP_KEYS = ("storage", "pipeline", "events", "metrics", "dashboards")
_STORAGE_KEYS = ("data_dir", "log", "hot", "history")
_PIPELINE_KEYS = (
    "tick",
    "lateness",
    "max_future",
    "reconcile_every",
    "distinct_exact_threshold",
    "retention",
)
_RETENTION_KEYS = ("hot", "history", "log")
_EVENT_KEYS = ("fields",)
_FIELD_KEYS = ("type", "required", "enum")
_METRIC_KEYS = (
    "name",
    "event",
    "agg",
    "field",
    "window",
    "every",
    "group_by",
    "where",
    "max_label_sets",
)
_DASHBOARD_KEYS = ("id", "title", "panels")
_PANEL_KEYS = ("metric", "kind", "title")

# Embedded adapter names and server URL schemes each store accepts (DESIGN.md, Data flow).
_BACKENDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": (("sqlite", "memory"), ("redis", "rediss")),
    "hot": (("memory",), ("redis", "rediss")),
    "history": (("sqlite", "memory"), ("postgresql",)),
}
_SCHEME_ALIASES = {"postgres": "postgresql", "psql": "postgresql", "pg": "postgresql"}
_URL_EXAMPLES = {
    "redis": "redis://localhost:6379/0",
    "rediss": "rediss://localhost:6380/0",
    "postgresql": "postgresql://pulseboard@localhost:5432/pulseboard",
}

# Steps offered when `every` does not divide the window.
_NICE_STEPS_MS = (
    *(n * 1_000 for n in (1, 2, 5, 10, 15, 30)),
    *(n * 60_000 for n in (1, 2, 5, 10, 15, 30)),
    3_600_000,
)

_DEFAULT_STORAGE = StorageSpec()
_DEFAULT_PIPELINE = PipelineSpec()
_DEFAULT_RETENTION = RetentionSpec()
_DEFAULT_MAX_LABEL_SETS = MetricSpec(name="m", event="e", agg="count", window_ms=1).max_label_sets


@dataclass
class _Problems:
    """The problems found so far; an empty location means the whole document (``source``)."""

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, loc: str, message: str) -> None:
        self.items.append(f"{loc or self.source}: {message}")

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class _Event:
    """An event type as far as it could be read; ``fields`` is None when unreadable.

    A field mapped to None exists but its spec has problems: references to it are accepted
    without type checks.
    """

    name: str
    fields: dict[str, FieldSpec | None] | None


# --- small readers -------------------------------------------------------------------------


def _at(loc: str, key: object) -> str:
    return f"{loc}.{key}" if loc else str(key)


def _hint(word: object, choices: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else `` (expected one of: ...)``."""
    text = str(word)
    if aliases and text.lower() in aliases:
        return f" (did you mean {aliases[text.lower()]!r}?)"
    close = difflib.get_close_matches(text, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(choices)})" if choices else ""


def _kind(value: object) -> str:
    """How a YAML value is named in messages: its type, and the value when short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _mapping(p: _Problems, value: object, loc: str, what: str) -> dict[object, object] | None:
    if isinstance(value, dict):
        return value
    p.add(loc, f"expected {what}, got {_kind(value)}")
    return None


def _list(p: _Problems, value: object, loc: str, what: str) -> list[object] | None:
    if isinstance(value, list):
        return value
    p.add(loc, f"expected {what}, got {_kind(value)}")
    return None


def _keys(
    p: _Problems,
    mapping: Mapping[object, object],
    loc: str,
    allowed: Sequence[str],
    required: Sequence[str] = (),
) -> None:
    """Report unknown keys, and required keys that are missing and not just misspelt."""
    suggested: set[str] = set()
    for key in mapping:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        suggested.update(close)
        p.add(_at(loc, key), "unknown key" + _hint(key, allowed))
    for key in required:
        if key not in mapping and key not in suggested:
            p.add(loc, f"missing required key {key!r}")


def _string(p: _Problems, value: object, loc: str, what: str = "a string") -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    p.add(loc, f"expected {what}, got {_kind(value)}")
    return None


def _boolean(p: _Problems, value: object, loc: str) -> bool | None:
    if isinstance(value, bool):
        return value
    p.add(loc, f"expected true or false, got {_kind(value)}")
    return None


def _positive_int(p: _Problems, value: object, loc: str) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    p.add(loc, f"expected a positive whole number, got {_kind(value)}")
    return None


def _duration(p: _Problems, value: object, loc: str) -> int | None:
    """Milliseconds, or None after reporting why ``value`` is not a positive duration."""
    if isinstance(value, int) and not isinstance(value, bool):
        p.add(loc, f"expected a duration such as 30s or 1m, got {_kind(value)}; add a unit")
        return None
    if not isinstance(value, str):
        p.add(loc, f"expected a duration such as 30s or 1m, got {_kind(value)}")
        return None
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        p.add(loc, str(exc))
        return None


def _optional_duration(
    p: _Problems, mapping: Mapping[object, object], key: str, loc: str, default: int
) -> int | None:
    return _duration(p, mapping[key], _at(loc, key)) if key in mapping else default


def _name(p: _Problems, value: object, loc: str, what: str) -> str | None:
    """``value`` if it is a string (reported, but still returned, when not a valid name)."""
    if not isinstance(value, str):
        article = "an" if what[0] in "aeiou" else "a"
        p.add(loc, f"expected {article} {what} name, got {_kind(value)}")
        return None
    if not _NAME.fullmatch(value):
        fixed = re.sub(r"[^a-z0-9_]+", "_", value.lower()).strip("_").lstrip("0123456789_")[:63]
        example = f" (e.g. {fixed!r})" if fixed and fixed != value else ""
        p.add(
            loc,
            f"invalid {what} name {value!r}: use 1 to 63 lowercase letters, digits and _, "
            f"starting with a letter{example}",
        )
    return value


def _fits(ftype: FieldType, value: object) -> bool:
    """Whether a literal ``value`` is a value of a field of type ``ftype``."""
    if isinstance(value, bool):
        return ftype == "bool"
    if isinstance(value, int):
        return ftype in ("int", "float")
    if isinstance(value, float):
        return ftype == "float"
    return isinstance(value, str) and ftype == "string"


def _quote(ftype: FieldType, value: object) -> str:
    """Advice for a YAML scalar that was meant as a string."""
    if ftype != "string" or value is None:
        return ""
    if isinstance(value, bool):
        return "; quote it, as YAML reads yes/no/on/off/true/false unquoted as booleans"
    return "; quote it"


_TYPE_WORDS: dict[FieldType, str] = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
}


# --- storage and pipeline ------------------------------------------------------------------


def _backend(p: _Problems, value: object, loc: str, role: str) -> str | None:
    names, schemes = _BACKENDS[role]
    accepted = [*names, *(f"{scheme}://..." for scheme in schemes)]
    if not isinstance(value, str):
        p.add(loc, f"expected one of {', '.join(accepted)}, got {_kind(value)}")
        return None
    if value in names:
        return value
    scheme, sep, _rest = value.partition("://")
    if not sep and value in schemes:
        p.add(loc, f"{value!r} needs a server URL, e.g. {_URL_EXAMPLES[value]}")
        return None
    if sep and scheme in schemes:
        return value if _url_ok(p, value, loc) else None
    if sep:
        fix = _SCHEME_ALIASES.get(scheme.lower())
        hint = f" (did you mean {fix}://?)" if fix in schemes else ""
    else:
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    p.add(
        loc,
        f"{mask_url(value)!r} is not accepted for the {role} store{hint}; "
        f"expected one of: {', '.join(accepted)}",
    )
    return None


def _url_ok(p: _Problems, value: str, loc: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- reading it is what validates the port
    except ValueError as exc:
        p.add(loc, f"{mask_url(value)!r} is not a valid URL: {exc}")
        return False
    if not parts.hostname:
        p.add(loc, f"{mask_url(value)!r} has no host, expected e.g. {parts.scheme}://localhost")
        return False
    return True


def _check_storage(p: _Problems, value: object) -> StorageSpec | None:
    if value is None:
        return _DEFAULT_STORAGE
    mapping = _mapping(p, value, "storage", "a mapping of data_dir, log, hot and history")
    if mapping is None:
        return None
    _keys(p, mapping, "storage", _STORAGE_KEYS)
    default = _DEFAULT_STORAGE
    data_dir: str | None = default.data_dir
    if "data_dir" in mapping:
        data_dir = _string(p, mapping["data_dir"], "storage.data_dir", "a directory path")

    def backend(role: str, fallback: str) -> str | None:
        return _backend(p, mapping[role], f"storage.{role}", role) if role in mapping else fallback

    log = backend("log", default.log)
    hot = backend("hot", default.hot)
    history = backend("history", default.history)
    if data_dir is None or log is None or hot is None or history is None:
        return None
    return StorageSpec(data_dir=data_dir, log=log, hot=hot, history=history)


def _check_retention(p: _Problems, value: object) -> RetentionSpec | None:
    loc = "pipeline.retention"
    mapping = _mapping(p, value, loc, "a mapping of hot, history and log durations")
    if mapping is None:
        return None
    _keys(p, mapping, loc, _RETENTION_KEYS)
    default = _DEFAULT_RETENTION
    hot = _optional_duration(p, mapping, "hot", loc, default.hot_ms)
    history = _optional_duration(p, mapping, "history", loc, default.history_ms)
    log = _optional_duration(p, mapping, "log", loc, default.log_ms)
    if hot is None or history is None or log is None:
        return None
    return RetentionSpec(hot_ms=hot, history_ms=history, log_ms=log)


def _check_pipeline(p: _Problems, value: object) -> PipelineSpec | None:
    if value is None:
        return _DEFAULT_PIPELINE
    loc = "pipeline"
    mapping = _mapping(p, value, loc, "a mapping of pipeline settings")
    if mapping is None:
        return None
    _keys(p, mapping, loc, _PIPELINE_KEYS)
    default = _DEFAULT_PIPELINE
    tick = _optional_duration(p, mapping, "tick", loc, default.tick_ms)
    lateness = _optional_duration(p, mapping, "lateness", loc, default.lateness_ms)
    max_future = _optional_duration(p, mapping, "max_future", loc, default.max_future_ms)
    reconcile = _optional_duration(p, mapping, "reconcile_every", loc, default.reconcile_every_ms)
    threshold: int | None = default.distinct_exact_threshold
    if "distinct_exact_threshold" in mapping:
        threshold = _positive_int(
            p, mapping["distinct_exact_threshold"], "pipeline.distinct_exact_threshold"
        )
    retention = (
        _check_retention(p, mapping["retention"]) if "retention" in mapping else default.retention
    )
    if tick is None or lateness is None or max_future is None or reconcile is None:
        return None
    if threshold is None or retention is None:
        return None
    return PipelineSpec(
        tick_ms=tick,
        lateness_ms=lateness,
        max_future_ms=max_future,
        reconcile_every_ms=reconcile,
        retention=retention,
        distinct_exact_threshold=threshold,
    )


# --- events --------------------------------------------------------------------------------


def _field_type(p: _Problems, value: object, loc: str) -> FieldType | None:
    for ftype in _FIELD_TYPES:
        if value == ftype:
            return ftype
    if isinstance(value, str):
        p.add(loc, f"unknown type {value!r}" + _hint(value, _FIELD_TYPES, _TYPE_ALIASES))
    else:
        p.add(loc, f"expected one of {', '.join(_FIELD_TYPES)}, got {_kind(value)}")
    return None


def _enum(
    p: _Problems, value: object, ftype: FieldType | None, loc: str
) -> tuple[str | int | float | bool, ...] | None:
    items = _list(p, value, loc, "a list of allowed values")
    if items is None:
        return None
    if not items:
        p.add(loc, "an enum needs at least one value")
    values: list[str | int | float | bool] = []
    for index, item in enumerate(items):
        item_loc = f"{loc}[{index}]"
        if ftype is None:
            continue
        if not _fits(ftype, item) or not isinstance(item, str | int | float):
            p.add(
                item_loc, f"expected {_TYPE_WORDS[ftype]}, got {_kind(item)}{_quote(ftype, item)}"
            )
        elif item in values:
            p.add(item_loc, f"{item!r} is listed twice")
        else:
            values.append(float(item) if ftype == "float" else item)
    return tuple(values)


def _check_field(p: _Problems, name: str, value: object, loc: str) -> FieldSpec | None:
    mapping = _mapping(p, value, loc, "a mapping like {type: string}")
    if mapping is None:
        return None
    mark = len(p)
    _keys(p, mapping, loc, _FIELD_KEYS, required=("type",))
    ftype = _field_type(p, mapping["type"], _at(loc, "type")) if "type" in mapping else None
    required = (
        _boolean(p, mapping["required"], _at(loc, "required")) if "required" in mapping else False
    )
    enum = _enum(p, mapping["enum"], ftype, _at(loc, "enum")) if "enum" in mapping else None
    if len(p) > mark or ftype is None or required is None:
        return None
    return FieldSpec(name=name, type=ftype, required=required, enum=enum)


def _check_event(p: _Problems, name: str, value: object, loc: str) -> _Event:
    mapping = _mapping(p, value, loc, "a mapping like {fields: {...}}")
    if mapping is None:
        return _Event(name, None)
    _keys(p, mapping, loc, _EVENT_KEYS)
    fields_loc = _at(loc, "fields")
    raw = _mapping(p, mapping.get("fields", {}), fields_loc, "a mapping of field names to specs")
    if raw is None:
        return _Event(name, None)
    fields: dict[str, FieldSpec | None] = {}
    for key, spec in raw.items():
        field_loc = _at(fields_loc, key)
        field_name = _name(p, key, field_loc, "field")
        if field_name is not None:
            fields[field_name] = _check_field(p, field_name, spec, field_loc)
    return _Event(name, fields)


def _check_events(p: _Problems, value: object) -> dict[str, _Event] | None:
    """The event types by name, or None when the section is unreadable (skip references)."""
    mapping = _mapping(p, value, "events", "a mapping of event type names to {fields: ...}")
    if mapping is None:
        return None
    if not mapping:
        p.add("events", "no event types defined; add at least one")
        return None
    events: dict[str, _Event] = {}
    for key, spec in mapping.items():
        name = _name(p, key, _at("events", key), "event")
        if name is not None:
            events[name] = _check_event(p, name, spec, _at("events", name))
    return events


# --- metrics -------------------------------------------------------------------------------


@dataclass
class _MetricContext:
    """What a metric is checked against: None marks a section that could not be read."""

    events: dict[str, _Event] | None
    pipeline: PipelineSpec | None


def _lookup_field(
    p: _Problems, event: _Event | None, name: str, loc: str
) -> tuple[bool, FieldSpec | None]:
    """(known, spec): unknown names are reported; spec is None when its type is unknowable."""
    if event is None or event.fields is None:
        return True, None
    if name in event.fields:
        return True, event.fields[name]
    if event.fields:
        p.add(loc, f"event {event.name!r} has no field {name!r}" + _hint(name, list(event.fields)))
    else:
        p.add(loc, f"event {event.name!r} has no fields, so no field {name!r}")
    return False, None


def _metric_event(
    p: _Problems, mapping: Mapping[object, object], loc: str, events: dict[str, _Event] | None
) -> tuple[str | None, _Event | None]:
    if "event" not in mapping:
        return None, None
    name = _string(p, mapping["event"], _at(loc, "event"), "an event type name")
    if name is None or events is None:
        return name, None
    if name not in events:
        p.add(_at(loc, "event"), f"unknown event type {name!r}" + _hint(name, list(events)))
        return name, None
    return name, events[name]


def _metric_agg(p: _Problems, mapping: Mapping[object, object], loc: str) -> AggName | None:
    if "agg" not in mapping:
        return None
    value = mapping["agg"]
    for agg in _AGGS:
        if value == agg:
            return agg
    if isinstance(value, str):
        p.add(_at(loc, "agg"), f"unknown aggregation {value!r}" + _hint(value, _AGGS, _AGG_ALIASES))
    else:
        p.add(_at(loc, "agg"), f"expected one of {', '.join(_AGGS)}, got {_kind(value)}")
    return None


def _numeric_fields(event: _Event | None) -> str:
    if event is None or event.fields is None:
        return ""
    numeric = [n for n, s in event.fields.items() if s is not None and s.type in ("int", "float")]
    if not numeric:
        return f"; event {event.name!r} has no int or float field"
    return f", e.g. {', '.join(numeric)}"


def _metric_field(
    p: _Problems,
    mapping: Mapping[object, object],
    loc: str,
    agg: AggName | None,
    event: _Event | None,
) -> str | None:
    if "field" not in mapping:
        if agg in _NUMERIC_AGGS:
            p.add(loc, f"agg {agg!r} needs a 'field', an int or float one{_numeric_fields(event)}")
        elif agg == "distinct":
            p.add(loc, "agg 'distinct' needs a 'field' whose distinct values to count")
        return None
    floc = _at(loc, "field")
    name = _string(p, mapping["field"], floc, "a field name")
    if name is None:
        return None
    _known, spec = _lookup_field(p, event, name, floc)
    if spec is not None and agg in _NUMERIC_AGGS and spec.type not in ("int", "float"):
        p.add(floc, f"agg {agg!r} needs an int or float field; {name!r} is a {spec.type} field")
    return name


def _divisor_hint(window_ms: int, every_ms: int) -> str:
    fitting = [step for step in _NICE_STEPS_MS if step <= every_ms and window_ms % step == 0]
    return f"; e.g. every: {format_duration_ms(fitting[-1])}" if fitting else ""


def _metric_window(
    p: _Problems, mapping: Mapping[object, object], loc: str, pipeline: PipelineSpec | None
) -> tuple[int | None, int | None]:
    """(window_ms, every_ms); every_ms is None for a tumbling window."""
    window = _duration(p, mapping["window"], _at(loc, "window")) if "window" in mapping else None
    every = _duration(p, mapping["every"], _at(loc, "every")) if "every" in mapping else None
    if window is not None and pipeline is not None and window > pipeline.retention.hot_ms:
        p.add(
            _at(loc, "window"),
            f"{format_duration_ms(window)} is longer than pipeline.retention.hot "
            f"({format_duration_ms(pipeline.retention.hot_ms)}), so the hot store cannot hold "
            "one window; raise pipeline.retention.hot or shorten the window",
        )
    if window is None or every is None:
        return window, every
    shown = format_duration_ms(every), format_duration_ms(window)
    if every > window:
        p.add(_at(loc, "every"), f"{shown[0]} is longer than the window ({shown[1]})")
    elif window % every:
        p.add(
            _at(loc, "every"),
            f"{shown[0]} does not divide the window ({shown[1]}) evenly"
            + _divisor_hint(window, every),
        )
    return window, (every if every < window else None)


def _metric_group_by(
    p: _Problems, mapping: Mapping[object, object], loc: str, event: _Event | None
) -> tuple[str, ...]:
    if "group_by" not in mapping:
        return ()
    gloc = _at(loc, "group_by")
    items = _list(p, mapping["group_by"], gloc, "a list of field names like [region]")
    names: list[str] = []
    for index, item in enumerate(items or ()):
        iloc = f"{gloc}[{index}]"
        name = _string(p, item, iloc, "a field name")
        if name is None:
            continue
        if name in names:
            p.add(iloc, f"{name!r} is listed twice")
            continue
        names.append(name)
        _known, spec = _lookup_field(p, event, name, iloc)
        if spec is not None and spec.type not in _GROUPABLE_TYPES:
            p.add(
                iloc,
                f"cannot group by {name!r}, a {spec.type} field: every distinct number would "
                "become its own label set; group by a string, int or bool field",
            )
    return tuple(names)


def _comparison_problem(spec: FieldSpec, literal: object) -> str | None:
    """What is wrong with comparing the field ``spec`` to ``literal``, if anything."""
    if literal is None:
        return None
    # Ints and floats compare numerically (pulseboard.expr): any number fits a numeric field.
    number = isinstance(literal, int | float) and not isinstance(literal, bool)
    if not (number and spec.type in ("int", "float")) and not _fits(spec.type, literal):
        return (
            f"field {spec.name!r} is {spec.type} but is compared with {_kind(literal)}; "
            f"expected {_TYPE_WORDS[spec.type]}"
        )
    if spec.enum is not None and literal not in spec.enum:
        choices = [str(value) for value in spec.enum]
        return f"{literal!r} is not a value of field {spec.name!r}" + _hint(literal, choices)
    return None


def _metric_where(
    p: _Problems, mapping: Mapping[object, object], loc: str, event: _Event | None
) -> expr.Expr | None:
    if "where" not in mapping:
        return None
    wloc = _at(loc, "where")
    text = _string(p, mapping["where"], wloc, 'an expression such as "amount >= 100"')
    if text is None:
        return None
    try:
        parsed = expr.parse(text)
    except ExprError as exc:
        p.add(wloc, f"{exc.message} (column {exc.column})")
        return None
    specs: dict[str, FieldSpec | None] = {}
    for name in sorted(parsed.names()):
        _known, specs[name] = _lookup_field(p, event, name, wloc)
    reported: set[str] = set()
    for name, literal in parsed.comparisons():
        spec = specs.get(name)
        problem = _comparison_problem(spec, literal) if spec is not None else None
        if problem is not None and problem not in reported:
            reported.add(problem)
            p.add(wloc, problem)
    return parsed


def _check_metric(
    p: _Problems, value: object, loc: str, ctx: _MetricContext
) -> tuple[MetricSpec | None, str | None]:
    """The metric (None if it has problems) and its name, as far as it could be read."""
    mapping = _mapping(p, value, loc, "a mapping like {name: ..., event: ..., agg: ...}")
    if mapping is None:
        return None, None
    mark = len(p)
    _keys(p, mapping, loc, _METRIC_KEYS, required=("name", "event", "agg", "window"))
    name = _name(p, mapping["name"], _at(loc, "name"), "metric") if "name" in mapping else None
    event_name, event = _metric_event(p, mapping, loc, ctx.events)
    agg = _metric_agg(p, mapping, loc)
    field_name = _metric_field(p, mapping, loc, agg, event)
    window, every = _metric_window(p, mapping, loc, ctx.pipeline)
    group_by = _metric_group_by(p, mapping, loc, event)
    where = _metric_where(p, mapping, loc, event)
    max_label_sets: int | None = _DEFAULT_MAX_LABEL_SETS
    if "max_label_sets" in mapping:
        max_label_sets = _positive_int(p, mapping["max_label_sets"], _at(loc, "max_label_sets"))
    if len(p) > mark or name is None or event_name is None or agg is None or window is None:
        return None, name
    if max_label_sets is None:
        return None, name
    spec = MetricSpec(
        name=name,
        event=event_name,
        agg=agg,
        window_ms=window,
        field=field_name,
        every_ms=every,
        group_by=group_by,
        where=where,
        max_label_sets=max_label_sets,
    )
    return spec, name


def _check_metrics(
    p: _Problems, value: object, ctx: _MetricContext
) -> tuple[list[MetricSpec], set[str] | None]:
    """The valid metrics, and every metric name seen (None when the section is unreadable)."""
    items = _list(p, value, "metrics", "a list of metrics")
    if items is None:
        return [], None
    if not items:
        p.add("metrics", "no metrics defined: nothing to compute; add at least one")
    specs: list[MetricSpec] = []
    first: dict[str, str] = {}
    for index, item in enumerate(items):
        loc = f"metrics[{index}]"
        spec, name = _check_metric(p, item, loc, ctx)
        if spec is not None:
            specs.append(spec)
        if name is None:
            continue
        if name in first:
            p.add(_at(loc, "name"), f"duplicate metric name {name!r} (first at {first[name]})")
        else:
            first[name] = loc
    return specs, set(first)


# --- dashboards ----------------------------------------------------------------------------


def _panel_kind(p: _Problems, value: object, loc: str) -> PanelKind | None:
    for kind in _PANEL_KINDS:
        if value == kind:
            return kind
    p.add(loc, f"unknown panel kind {value!r}" + _hint(value, _PANEL_KINDS))
    return None


def _check_panel(
    p: _Problems, value: object, loc: str, metrics: set[str] | None
) -> PanelSpec | None:
    mapping = _mapping(p, value, loc, "a mapping like {metric: ..., kind: timeseries}")
    if mapping is None:
        return None
    mark = len(p)
    _keys(p, mapping, loc, _PANEL_KEYS, required=("metric",))
    metric = None
    if "metric" in mapping:
        metric = _string(p, mapping["metric"], _at(loc, "metric"), "a metric name")
    if metric is not None and metrics is not None and metric not in metrics:
        p.add(_at(loc, "metric"), f"unknown metric {metric!r}" + _hint(metric, sorted(metrics)))
    kind: PanelKind | None = "timeseries"
    if "kind" in mapping:
        kind = _panel_kind(p, mapping["kind"], _at(loc, "kind"))
    title = _string(p, mapping["title"], _at(loc, "title")) if "title" in mapping else None
    if len(p) > mark or metric is None or kind is None:
        return None
    return PanelSpec(metric=metric, kind=kind, title=title)


def _check_dashboard(
    p: _Problems, value: object, loc: str, metrics: set[str] | None
) -> tuple[DashboardSpec | None, str | None]:
    mapping = _mapping(p, value, loc, "a mapping like {id: ..., title: ..., panels: [...]}")
    if mapping is None:
        return None, None
    mark = len(p)
    _keys(p, mapping, loc, _DASHBOARD_KEYS, required=("id", "title", "panels"))
    ident = _name(p, mapping["id"], _at(loc, "id"), "dashboard") if "id" in mapping else None
    title = _string(p, mapping["title"], _at(loc, "title")) if "title" in mapping else None
    panels: list[PanelSpec | None] = []
    if "panels" in mapping:
        ploc = _at(loc, "panels")
        items = _list(p, mapping["panels"], ploc, "a list of panels")
        if items == []:
            p.add(ploc, "a dashboard needs at least one panel")
        for index, item in enumerate(items or ()):
            panels.append(_check_panel(p, item, f"{ploc}[{index}]", metrics))
    if len(p) > mark or ident is None or title is None:
        return None, ident
    return DashboardSpec(id=ident, title=title, panels=tuple(filter(None, panels))), ident


def _check_dashboards(p: _Problems, value: object, metrics: set[str] | None) -> list[DashboardSpec]:
    if value is None:
        return []
    items = _list(p, value, "dashboards", "a list of dashboards")
    specs: list[DashboardSpec] = []
    first: dict[str, str] = {}
    for index, item in enumerate(items or ()):
        loc = f"dashboards[{index}]"
        spec, ident = _check_dashboard(p, item, loc, metrics)
        if spec is not None:
            specs.append(spec)
        if ident is None:
            continue
        if ident in first:
            p.add(_at(loc, "id"), f"duplicate dashboard id {ident!r} (first at {first[ident]})")
        else:
            first[ident] = loc
    return specs


# --- the whole document --------------------------------------------------------------------


def check_config(data: object, source: str) -> Config:
    """Check ``data`` (loaded YAML) and build its :class:`Config`; see ``parse_config``."""
    top = "a mapping with at least 'events' and 'metrics'"
    if data is None:
        raise ConfigError([f"{source}: the document is empty; expected {top}"])
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected {top} at the top level, got {_kind(data)}"])
    p = _Problems(source)
    _keys(p, data, "", _TOP_KEYS, required=("events", "metrics"))
    storage = _check_storage(p, data.get("storage"))
    pipeline = _check_pipeline(p, data.get("pipeline"))
    events = _check_events(p, data["events"]) if "events" in data else None
    ctx = _MetricContext(events, pipeline)
    metrics, names = _check_metrics(p, data["metrics"], ctx) if "metrics" in data else ([], None)
    dashboards = _check_dashboards(p, data.get("dashboards"), names)
    if p.items or storage is None or pipeline is None or events is None:
        raise ConfigError(p.items)
    return Config(
        events={
            name: EventSpec(name, tuple(s for s in (event.fields or {}).values() if s is not None))
            for name, event in events.items()
        },
        metrics=tuple(metrics),
        storage=storage,
        pipeline=pipeline,
        dashboards=tuple(dashboards),
    )
