"""Serving the built web UI: gzip when accepted, long caching of hashed assets, revalidation of
index.html, and a clear answer when the UI was never built."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from pulseboard.web import StaticApp

INDEX = "<!doctype html><title>Pulseboard</title>" + "<p>x</p>" * 200
SCRIPT = "console.log('pulseboard');\n" * 100


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "app-1a2b.js").write_text(SCRIPT)
    (tmp_path / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return tmp_path


def get(root: Path, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    app = Starlette(routes=StaticApp(root).routes())

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers or {"accept-encoding": "identity"})

    return asyncio.run(fetch())


def test_index_is_revalidated_and_gzipped_when_accepted(built: Path) -> None:
    plain = get(built, "/")
    assert plain.status_code == 200
    assert plain.text == INDEX
    assert plain.headers["cache-control"] == "no-cache"
    assert plain.headers["content-type"] == "text/html; charset=utf-8"
    assert "content-encoding" not in plain.headers

    packed = get(built, "/", {"accept-encoding": "gzip, br"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) == len(gzip.compress(INDEX.encode(), 9, mtime=0))
    assert packed.text == INDEX  # httpx inflates it

    again = get(built, "/", {"if-none-match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_hashed_assets_are_cached_for_a_year_and_unknown_ones_are_404(built: Path) -> None:
    script = get(built, "/assets/app-1a2b.js")
    assert script.text == SCRIPT
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert script.headers["content-type"].startswith("text/javascript")
    assert (get(built, "/favicon.svg")).status_code == 200
    missing = get(built, "/assets/app-0000.js")
    assert missing.status_code == 404 and "no file /assets/app-0000.js" in missing.text
    assert (get(built, "/assets/../index.html")).status_code == 404


def test_an_unbuilt_ui_answers_503_with_what_to_do(tmp_path: Path) -> None:
    response = get(tmp_path, "/")
    assert response.status_code == 503
    assert "The web UI is not built" in response.text and "make ui" in response.text


def test_a_rebuild_is_served_without_a_restart(built: Path) -> None:
    app = StaticApp(built)
    (built / "assets" / "app-1a2b.js").unlink()
    (built / "assets" / "app-3c4d.js").write_text("console.log('new');")
    (built / "index.html").write_text("<!doctype html><script src=/assets/app-3c4d.js></script>")
    routes = Starlette(routes=app.routes())

    async def fetch(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=routes)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    assert "app-3c4d.js" in asyncio.run(fetch("/")).text
    assert asyncio.run(fetch("/assets/app-3c4d.js")).text == "console.log('new');"
    assert asyncio.run(fetch("/assets/app-1a2b.js")).status_code == 404
