"""The web UI's files: the built single-page app in ``pulseboard/static`` served at ``/``.

The app is built from ``web/`` by ``make`` (Vite writes ``index.html`` and ``assets/`` with
content-hashed names). Files are read and gzipped once, at start: assets are then served from
memory, compressed when the client accepts gzip, and cached by browsers for a year (a new
build has new names); ``index.html`` is revalidated on every load.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATIC_DIR = Path(__file__).with_name("static")

_NOT_BUILT = (
    "The web UI is not built: {dir} has no index.html. Build it with 'make ui' "
    "(needs Node.js and npm); the API under /v1 works without it.\n"
)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str


def _load(path: Path) -> _File:
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type in ("application/javascript", "image/svg+xml"):
        media_type += "; charset=utf-8" if "charset" not in media_type else ""
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    gzipped = packed if len(packed) < len(body) else None
    return _File(body, gzipped, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


class StaticApp:
    """Serves ``index.html`` at ``/`` and the files under ``assets/``; a missing build answers
    503 with what to do, so the API keeps working without Node.js."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.root = root
        self._files: dict[str, _File] = {}
        self._built_ns: int | None = None
        self._reload()

    def _reload(self) -> None:
        """Read the build again if ``index.html`` changed (a rebuild while the server runs
        deletes the old hashed assets; the new page names the new ones)."""
        try:
            built_ns = (self.root / "index.html").stat().st_mtime_ns
        except OSError:
            built_ns = None
        if built_ns == self._built_ns:
            return
        files = {}
        if built_ns is not None:
            for path in self.root.rglob("*"):
                if path.is_file():
                    files[path.relative_to(self.root).as_posix()] = _load(path)
        self._files, self._built_ns = files, built_ns

    @property
    def built(self) -> bool:
        return "index.html" in self._files

    async def index(self, request: Request) -> Response:
        self._reload()
        if not self.built:
            return Response(
                _NOT_BUILT.format(dir=self.root), status_code=503, media_type="text/plain"
            )
        return self._serve(request, "index.html", "no-cache")

    async def asset(self, request: Request) -> Response:
        name = "assets/" + request.path_params["path"]
        if name not in self._files:
            return Response(
                f"no file {request.url.path}\n", status_code=404, media_type="text/plain"
            )
        return self._serve(request, name, "public, max-age=31536000, immutable")

    def routes(self) -> list[Route]:
        """``/``, ``/assets/...`` and one route per other top-level file (favicon.svg, ...)."""

        def serve_top(name: str) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                return self._serve(request, name, "public, max-age=86400")

            return endpoint

        top = [n for n in self._files if "/" not in n and n != "index.html"]
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/assets/{path:path}", self.asset, methods=["GET"]),
            *(Route(f"/{name}", serve_top(name), methods=["GET"]) for name in top),
        ]

    def _serve(self, request: Request, name: str, cache: str) -> Response:
        file = self._files[name]
        headers = {"Cache-Control": cache, "ETag": file.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == file.etag:
            return Response(status_code=304, headers=headers)
        accepts = request.headers.get("accept-encoding", "")
        if file.gzipped is not None and "gzip" in accepts:
            headers["Content-Encoding"] = "gzip"
            return Response(file.gzipped, media_type=file.media_type, headers=headers)
        return Response(file.body, media_type=file.media_type, headers=headers)
