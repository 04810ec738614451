"""Reading single config values: the small readers the config checker is built from.

Each reader takes one value of loaded YAML and the location it was found at, and returns it
as what it should be (a mapping, a duration in milliseconds, a name, a store backend...).
A value of the wrong shape is reported to a :class:`Problems` list, saying what was expected
and what arrived, and the reader returns None: the caller carries on, so one run reports
every mistake. Which keys a section has, their defaults and the references between sections
are checked in :mod:`pulseboard.config_check`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, get_args
from urllib.parse import urlsplit

from pulseboard.config import NAME_PATTERN, AggName, FieldSpec, FieldType, PanelKind, mask_url
from pulseboard.durations import parse_duration_ms

T = TypeVar("T")
Choice = TypeVar("Choice", bound=str)

_NAME = re.compile(NAME_PATTERN)
_FIELD_TYPES: tuple[FieldType, ...] = get_args(FieldType)
_AGGS: tuple[AggName, ...] = get_args(AggName)
_PANEL_KINDS: tuple[PanelKind, ...] = get_args(PanelKind)

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

# How a value of each field type is named in messages.
_TYPE_WORDS: dict[FieldType, str] = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
}

# The event decoder matches an enum with a msgspec Literal, which takes str, int and bool only.
_ENUM_TYPES: tuple[FieldType, ...] = ("string", "int", "bool")

# Embedded adapter names and server URL schemes each store accepts (docs/CONFIG.md, storage).
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


@dataclass
class Problems:
    """The problems found so far, each ``location: message``.

    An empty location means the whole document, which is then named by ``source``.
    """

    source: str
    items: list[str] = field(default_factory=list)

    def add(self, loc: str, message: str) -> None:
        """Record ``message`` at ``loc``."""
        self.items.append(f"{loc or self.source}: {message}")

    def __len__(self) -> int:
        return len(self.items)


# --- locations and wording -----------------------------------------------------------------


def at(loc: str, key: object) -> str:
    """The location of ``key`` inside ``loc`` (``metrics[0]``, ``name``: ``metrics[0].name``)."""
    return f"{loc}.{key}" if loc else str(key)


def hint(word: object, choices: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for an alias or a near miss, else `` (expected one of: ...)``.

    Empty when there are no ``choices`` to offer.
    """
    text = str(word)
    if aliases and text.lower() in aliases:
        return f" (did you mean {aliases[text.lower()]!r}?)"
    close = difflib.get_close_matches(text, choices, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(choices)})" if choices else ""


def describe(value: object) -> str:
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
        if not value.strip():
            return f"a blank string ({value!r})" if value else "an empty string"
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


# --- shapes --------------------------------------------------------------------------------


def read_mapping(p: Problems, value: object, loc: str, what: str) -> dict[object, object] | None:
    """``value`` if it is a mapping; ``what`` describes the mapping expected."""
    if isinstance(value, dict):
        return value
    p.add(loc, f"expected {what}, got {describe(value)}")
    return None


def read_list(p: Problems, value: object, loc: str, what: str) -> list[object] | None:
    """``value`` if it is a list; ``what`` describes the list expected."""
    if isinstance(value, list):
        return value
    p.add(loc, f"expected {what}, got {describe(value)}")
    return None


def check_keys(
    p: Problems,
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
        p.add(at(loc, key), "unknown key" + hint(key, allowed))
    for key in required:
        if key not in mapping and key not in suggested:
            p.add(loc, f"missing required key {key!r}")


def read_key(
    p: Problems,
    mapping: Mapping[object, object],
    loc: str,
    key: str,
    read: Callable[[Problems, object, str], T | None],
    default: T | None = None,
) -> T | None:
    """``read`` applied to ``mapping[key]`` (located at ``loc.key``), or ``default`` if absent."""
    return read(p, mapping[key], at(loc, key)) if key in mapping else default


def read_string(
    p: Problems, value: object, loc: str, what: str = "a non-blank string"
) -> str | None:
    """``value`` if it is a string that is not empty or only whitespace."""
    if isinstance(value, str) and value.strip():
        return value
    p.add(loc, f"expected {what}, got {describe(value)}")
    return None


def read_bool(p: Problems, value: object, loc: str) -> bool | None:
    """``value`` if it is a YAML boolean (not 0/1, not a string)."""
    if isinstance(value, bool):
        return value
    p.add(loc, f"expected true or false, got {describe(value)}")
    return None


def read_positive_int(p: Problems, value: object, loc: str) -> int | None:
    """``value`` if it is an integer above zero (booleans are not integers here)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    p.add(loc, f"expected a positive whole number, got {describe(value)}")
    return None


def read_duration(p: Problems, value: object, loc: str) -> int | None:
    """Milliseconds, or None after reporting why ``value`` is not a positive duration."""
    if isinstance(value, int) and not isinstance(value, bool):
        p.add(loc, f"expected a duration such as 30s or 1m, got {describe(value)}; add a unit")
        return None
    if not isinstance(value, str):
        p.add(loc, f"expected a duration such as 30s or 1m, got {describe(value)}")
        return None
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        p.add(loc, str(exc))
        return None


def valid_names(names: Iterable[str]) -> list[str]:
    """The valid names among ``names``, in order: the only ones worth suggesting."""
    return [name for name in names if _NAME.fullmatch(name)]


def read_name(p: Problems, value: object, loc: str, what: str) -> str | None:
    """``value`` if it is a string (reported, but still returned, when not a valid name).

    Returning an invalid name lets references to it be checked without follow-up problems.
    """
    if not isinstance(value, str):
        article = "an" if what[0] in "aeiou" else "a"
        p.add(loc, f"expected {article} {what} name, got {describe(value)}")
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


def _read_choice(
    p: Problems,
    value: object,
    loc: str,
    choices: tuple[Choice, ...],
    what: str,
    aliases: Mapping[str, str] | None = None,
) -> Choice | None:
    """The member of ``choices`` equal to ``value``; an unknown word is reported as ``what``."""
    for choice in choices:
        if value == choice:
            return choice
    if isinstance(value, str):
        p.add(loc, f"unknown {what} {value!r}" + hint(value, choices, aliases))
    else:
        p.add(loc, f"expected one of {', '.join(choices)}, got {describe(value)}")
    return None


# --- words ---------------------------------------------------------------------------------


def read_field_type(p: Problems, value: object, loc: str) -> FieldType | None:
    """A field type: ``int``, ``float``, ``string`` or ``bool`` (``integer`` gets a hint)."""
    return _read_choice(p, value, loc, _FIELD_TYPES, "type", _TYPE_ALIASES)


def read_agg(p: Problems, value: object, loc: str) -> AggName | None:
    """An aggregation name such as ``sum`` or ``p95`` (``mean`` gets a hint)."""
    return _read_choice(p, value, loc, _AGGS, "aggregation", _AGG_ALIASES)


def read_panel_kind(p: Problems, value: object, loc: str) -> PanelKind | None:
    """A dashboard panel kind: ``stat``, ``timeseries``, ``bars`` or ``table``."""
    for kind in _PANEL_KINDS:
        if value == kind:
            return kind
    p.add(loc, f"unknown panel kind {value!r}" + hint(value, _PANEL_KINDS))
    return None


# --- values of fields ----------------------------------------------------------------------


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


def read_enum(
    p: Problems, value: object, ftype: FieldType | None, loc: str
) -> tuple[str | int | bool, ...] | None:
    """The allowed values of a field of type ``ftype``: None if refused or not a list.

    Only string, int and bool fields take an ``enum``. With ``ftype`` None (the type itself
    is wrong) only the list is checked, not its values.
    """
    if ftype is not None and ftype not in _ENUM_TYPES:
        p.add(
            loc,
            f"enum is not supported on a {ftype} field; enum works on string, int and bool "
            "fields (use type int for whole numbers, or remove the enum)",
        )
        return None
    items = read_list(p, value, loc, "a list of allowed values")
    if items is None:
        return None
    if not items:
        p.add(loc, "an enum needs at least one value")
    values: list[str | int | bool] = []
    for index, item in enumerate(items):
        item_loc = f"{loc}[{index}]"
        if ftype is None:
            continue
        if not _fits(ftype, item) or not isinstance(item, str | int):
            p.add(
                item_loc,
                f"expected {_TYPE_WORDS[ftype]}, got {describe(item)}{_quote(ftype, item)}",
            )
        elif item in values:
            p.add(item_loc, f"{item!r} is listed twice")
        else:
            values.append(item)
    return tuple(values)


def comparison_problem(spec: FieldSpec, literal: object) -> str | None:
    """What is wrong with comparing the field ``spec`` to ``literal``, if anything."""
    if literal is None:
        return None
    # Ints and floats compare numerically (pulseboard.expr): any number fits a numeric field.
    number = isinstance(literal, int | float) and not isinstance(literal, bool)
    if not (number and spec.type in ("int", "float")) and not _fits(spec.type, literal):
        return (
            f"field {spec.name!r} is {spec.type} but is compared with {describe(literal)}; "
            f"expected {_TYPE_WORDS[spec.type]}"
        )
    if spec.enum is not None and literal not in spec.enum:
        choices = [str(value) for value in spec.enum]
        return f"{literal!r} is not a value of field {spec.name!r}" + hint(literal, choices)
    return None


def bare_name_problem(spec: FieldSpec) -> str:
    """Why a field ``spec`` that is not bool cannot be a bare condition (``where: "amount"``)."""
    if spec.enum:
        example = f"{spec.name} == {spec.enum[0]!r}"
    elif spec.type in ("int", "float"):
        example = f"{spec.name} > 0"
    else:
        example = f"{spec.name} != null"
    article = "an" if spec.type == "int" else "a"
    return (
        f"a bare name is a test of a bool field; {spec.name!r} is {article} {spec.type} field "
        f"\N{EM DASH} compare it, e.g. {example}"
    )


# --- store backends ------------------------------------------------------------------------


def read_backend(p: Problems, value: object, loc: str, role: str) -> str | None:
    """An embedded adapter name or a server URL that the ``role`` store (log, hot, history) accepts.

    Messages show URLs with their password masked.
    """
    names, schemes = _BACKENDS[role]
    accepted = [*names, *(f"{scheme}://..." for scheme in schemes)]
    if not isinstance(value, str):
        p.add(loc, f"expected one of {', '.join(accepted)}, got {describe(value)}")
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
        did_you_mean = f" (did you mean {fix}://?)" if fix in schemes else ""
    else:
        close = difflib.get_close_matches(value, names, n=1)
        did_you_mean = f" (did you mean {close[0]!r}?)" if close else ""
    p.add(
        loc,
        f"{mask_url(value)!r} is not accepted for the {role} store{did_you_mean}; "
        f"expected one of: {', '.join(accepted)}",
    )
    return None


def _url_ok(p: Problems, value: str, loc: str) -> bool:
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
