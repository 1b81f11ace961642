"""The rule both demo processes apply to their control endpoints.

Toggles change how a process behaves, so only this machine may flip them, and a web page
open in a local browser must not be able to (no cross-origin requests).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from lifescope.demo.children import is_loopback_host


def control_refusal(request: web.Request) -> web.Response | None:
    """A 403 response for anyone but a loopback peer without a foreign Origin, else None."""
    if not is_loopback_host(request.remote or ""):
        return web.json_response({"error": "control is loopback only"}, status=403)
    origin = request.headers.get("Origin")
    if origin is not None:
        try:
            host = urlsplit(origin).hostname or ""
        except ValueError:
            host = ""
        if not is_loopback_host(host):
            return web.json_response({"error": f"refusing Origin {origin!r}"}, status=403)
    return None
