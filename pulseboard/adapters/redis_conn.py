"""How Pulseboard reaches Redis: ``RedisSettings`` parsed from one URL, a client factory, and
``RedisStore``, the client and error translation every Redis adapter shares.

The URL::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                       (TLS)

``user`` and ``password`` are percent-decoded (``%40`` for ``@``); ``db`` defaults to 0 and
``port`` to 6379. Options (anything else is refused, so a typo cannot pass silently):

- ``prefix``: the key prefix (``redis_keys``), default ``pulseboard:``. It belongs in the URL
  because, like the database number, it says *where* a deployment's data is: one string names
  it completely, and two deployments sharing a server differ only by their URLs.
- ``socket_connect_timeout``, ``socket_timeout`` (seconds, > 0; defaults 5 and 10),
  ``health_check_interval`` (seconds, >= 0; default 15; 0 turns the check off).
- TLS only, with ``rediss://`` (as redis-py names them): ``ssl_cert_reqs`` (``none``,
  ``optional``, ``required``; default ``required``), ``ssl_ca_certs``, ``ssl_certfile``,
  ``ssl_keyfile`` (file paths), ``ssl_check_hostname`` (``true``/``false``; default true).

A password in the query (``?password=``) is refused: it goes in the userinfo, where
``masked()`` hides it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.redis_keys import DEFAULT_PREFIX, RedisKeys, check_prefix
from pulseboard.config import mask_url
from pulseboard.errors import PulseboardError

DEFAULT_PORT = 6379
EXPECTED = "redis://[[user]:password@]host[:port][/db] or rediss://… for TLS"
CertReqs = Literal["none", "optional", "required"]
_CERT_REQS: tuple[CertReqs, ...] = ("none", "optional", "required")
_TLS_PATHS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_TIMEOUTS = ("socket_connect_timeout", "socket_timeout", "health_check_interval")
_OPTIONS = ("prefix", *_TIMEOUTS, "ssl_cert_reqs", *_TLS_PATHS, "ssl_check_hostname")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class RedisUrlError(PulseboardError, ValueError):
    """A Redis URL that cannot be used; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where and how to reach Redis. Build it with ``from_url``; ``password`` never appears in
    ``repr`` and ``masked()`` is the URL to print."""

    url: str = field(repr=False)
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    prefix: str = DEFAULT_PREFIX
    socket_connect_timeout_s: float = 5.0
    """Seconds to establish a connection (TCP and TLS handshake) before giving up."""
    socket_timeout_s: float = 10.0
    """Seconds to wait for any reply; must exceed the longest blocking read (``block_ms``)."""
    health_check_interval_s: int = 15
    """A connection idle this long is PINGed before use, so a connection broken by a server
    restart fails at the PING instead of in the middle of a command (0: never)."""
    ssl_cert_reqs: CertReqs = "required"
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        """Parse ``url`` (see the module's docstring); ``RedisUrlError`` says what is wrong
        and what was expected, with the password masked."""
        shown = mask_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise RedisUrlError(
                f"invalid Redis URL {shown}: {_port_problem(exc)} (expected {EXPECTED}, the port "
                "a number from 1 to 65535)"
            ) from None
        if parts.scheme not in ("redis", "rediss"):
            got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise RedisUrlError(f"invalid Redis URL {shown}: {got} (expected {EXPECTED})")
        if not parts.hostname:
            raise RedisUrlError(f"invalid Redis URL {shown}: no host (expected {EXPECTED})")
        if port == 0:
            raise RedisUrlError(
                f"invalid Redis URL {shown}: port 0 (expected a port from 1 to 65535)"
            )
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if username and not password:
            raise RedisUrlError(
                f"invalid Redis URL {shown}: user {username!r} without a password "
                "(expected redis://user:password@host)"
            )
        settings = cls(
            url=url,
            host=parts.hostname,
            port=port or DEFAULT_PORT,
            db=_db(parts.path, shown),
            username=username,
            password=password or None,
            tls=parts.scheme == "rediss",
        )
        return _with_options(settings, parts.query, shown)

    def masked(self) -> str:
        """The URL with its password replaced by ``***``: the form for messages and logs."""
        return mask_url(self.url)

    @property
    def keys(self) -> RedisKeys:
        """The key names under this URL's prefix."""
        return RedisKeys(self.prefix)

    def client(self, *, name: str | None = None) -> redis.Redis:
        """A redis-py client (bytes replies, a connection pool, thread-safe) with these settings.

        Nothing is retried (``Retry(NoBackoff(), 0)``, where redis-py would retry 3 times): a
        command that fails raises at once and the caller decides, since only it knows whether
        the command may run twice (an XADD retried after a lost reply appends the entry
        again). ``name`` is sent as ``CLIENT SETNAME`` for ``CLIENT LIST``. No connection is
        made until the first command.
        """
        tls: dict[str, object] = {}
        if self.tls:
            tls = {
                "ssl": True,
                "ssl_cert_reqs": self.ssl_cert_reqs,
                "ssl_ca_certs": self.ssl_ca_certs,
                "ssl_certfile": self.ssl_certfile,
                "ssl_keyfile": self.ssl_keyfile,
                "ssl_check_hostname": self.ssl_check_hostname,
            }
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=self.db,
            username=self.username,
            password=self.password,
            socket_connect_timeout=self.socket_connect_timeout_s,
            socket_timeout=self.socket_timeout_s,
            socket_keepalive=True,
            health_check_interval=self.health_check_interval_s,
            retry=Retry(NoBackoff(), 0),
            client_name=name,
            decode_responses=False,
            **tls,  # type: ignore[arg-type]
        )


# --- what every Redis adapter shares ----------------------------------------------------------


def parse_id(stream_id: bytes | str) -> tuple[int, int]:
    """(milliseconds, sequence) of a stream id ``"<ms>-<seq>"``."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def next_id(stream_id: bytes | str) -> str:
    """The smallest stream id after ``stream_id``."""
    ms, seq = parse_id(stream_id)
    return f"{ms + 1}-0" if seq >= 2**64 - 1 else f"{ms}-{seq + 1}"


def text(value: bytes | str) -> str:
    """A reply (bytes) or an argument (str) as str."""
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    """A client and the error translation shared by the log and the dead letters."""

    what = "Redis store"

    def __init__(self, settings: RedisSettings, *, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = settings.keys
        self._own_client = client is None
        self.client: redis.Redis = client or settings.client(name="pulseboard")

    def close(self) -> None:
        """Close the client's connections if this store made the client."""
        if self._own_client:
            self.client.close()

    @contextlib.contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """redis-py errors → ``StoreUnavailable`` saying where, what, and what to do."""
        try:
            yield
        except redis.RedisError as exc:
            detail = str(exc).strip() or type(exc).__name__
            password = self.settings.password
            if password:
                detail = detail.replace(password, "***")
            raise StoreUnavailable(
                f"{doing} the {self.what} at {self.settings.masked()}: {detail} ({_hint(exc)})"
            ) from exc


def _hint(exc: redis.RedisError) -> str:
    """What an operator can do about ``exc``."""
    text = str(exc)
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return "check the user and password in the URL"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "check that Redis is running and reachable at this address, and its timeouts"
    if text.startswith("NOGROUP"):
        return "the consumer group is missing: Redis lost its data or the stream was deleted"
    if text.startswith("OOM"):
        return "Redis reached maxmemory: trim the log or give Redis more memory"
    if text.startswith("READONLY"):
        return "this is a read-only replica: point the URL at the primary"
    return "see the Redis server's log"


# --- parsing ---------------------------------------------------------------------------------


def _seconds(name: str, value: str, bad: Callable[[str], RedisUrlError]) -> float | int:
    """A timeout option: seconds > 0, or whole seconds >= 0 for the health check."""
    if name == "health_check_interval":
        if not value.isdigit():
            raise bad("a whole number of seconds, 0 or more")
        return int(value)
    try:
        seconds = float(value)
    except ValueError:
        raise bad("a number of seconds greater than 0") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise bad("a number of seconds greater than 0")
    return seconds


def _port_problem(exc: ValueError) -> str:
    """urllib's port complaint in our words ('Port could not be cast…' says little)."""
    text = str(exc)
    if "out of range" in text:
        return "port out of range"
    if "Port" in text or "port" in text:
        return "the port is not a number"
    return text


def _db(path: str, shown: str) -> int:
    """The database number of a URL path: '' or '/' is 0, '/N' is N (a non-negative integer)."""
    text = path[1:] if path.startswith("/") else path
    if not text:
        return 0
    if not text.isdigit() or not text.isascii():
        raise RedisUrlError(
            f"invalid Redis URL {shown}: database {text!r} (expected a number such as /0)"
        )
    return int(text)


def _with_options(settings: RedisSettings, query: str, shown: str) -> RedisSettings:
    """``settings`` with the URL's query options applied, each checked."""
    changes: dict[str, object] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name == "password":
            raise RedisUrlError(
                f"invalid Redis URL {shown}: a password goes in the userinfo "
                "(redis://:password@host), not in the query"
            )
        if name not in _OPTIONS:
            raise RedisUrlError(
                f"invalid Redis URL {shown}: unknown option {name!r} "
                f"(expected one of {', '.join(_OPTIONS)})"
            )
        if name.startswith("ssl_") and not settings.tls:
            raise RedisUrlError(
                f"invalid Redis URL {shown}: option {name!r} needs TLS (use rediss://)"
            )
        if name in changes:
            raise RedisUrlError(f"invalid Redis URL {shown}: option {name!r} given twice")
        changes[name] = _option(name, value, shown)
    renamed = {f"{k}_s" if k in _TIMEOUTS else k: v for k, v in changes.items()}
    return replace(settings, **renamed)  # type: ignore[arg-type]


def _option(name: str, value: str, shown: str) -> object:
    """One option's value, checked and converted."""

    def bad(expected: str) -> RedisUrlError:
        return RedisUrlError(f"invalid Redis URL {shown}: {name}={value!r} (expected {expected})")

    if name == "prefix":
        try:
            return check_prefix(value)
        except ValueError as exc:
            raise RedisUrlError(f"invalid Redis URL {shown}: {exc}") from None
    if name in _TIMEOUTS:
        return _seconds(name, value, bad)
    if name == "ssl_cert_reqs":
        if value not in _CERT_REQS:
            raise bad(" or ".join(_CERT_REQS))
        return value
    if name == "ssl_check_hostname":
        if value.lower() not in _BOOLS:
            raise bad("true or false")
        return _BOOLS[value.lower()]
    if not value:  # a TLS file path
        raise bad("a file path")
    return value
