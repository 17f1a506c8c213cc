"""The dashboard's static files (``GET /``, ``GET /dashboard/{name}``) and the headers they go
out with.

Files are read from the package once and served from memory: a fixed set (whatever ships in
``dashboard/``), so no request path ever reaches the file system.  Every answer carries a
strict Content-Security-Policy: scripts and styles only from this origin, no inline script, no
eval, connections only back to this server; escaping in the page is the first defence, the
policy the second.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

DASHBOARD = Path(__file__).with_name("dashboard")
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
         ".svg": "image/svg+xml"}
_HOST = re.compile(r"[A-Za-z0-9.\-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")
"""A Host header fit to name in the policy's connect-src (anything else is left out)."""


def _load() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(DASHBOARD.iterdir())
            if path.suffix in TYPES and path.is_file()}


def policy(host: str) -> str:
    """``connect-src 'self'`` covers ws: only in newer browsers: the WebSocket origin is named."""
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


class Pages:
    def __init__(self) -> None:
        self.files = _load()

    def _answer(self, request: web.Request, name: str) -> web.Response:
        body = self.files.get(name)
        if body is None:
            raise web.HTTPNotFound(text="no such dashboard file")
        return web.Response(body=body, content_type=TYPES[Path(name).suffix], headers={
            "Content-Security-Policy": policy(request.host),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-cache"})

    async def index(self, request: web.Request) -> web.Response:
        return self._answer(request, "index.html")

    async def file(self, request: web.Request) -> web.Response:
        return self._answer(request, request.match_info["name"])

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/dashboard/{name}", self.file)
