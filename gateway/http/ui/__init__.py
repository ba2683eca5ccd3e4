"""The status page's files (plain HTML, CSS and a script; no build step, no CDN), read once."""

from __future__ import annotations

from importlib import metadata, resources

__all__ = ["UI", "UI_HEADERS", "VERSION"]

UI: dict[str, bytes] = {
    name: resources.files(__name__).joinpath(name).read_bytes()
    for name in ("index.html", "app.js", "style.css")
}
VERSION = metadata.version("llm-gateway")

# The page holds the admin key while it is open, and a keyless gateway's page can reload and
# restart: no other site may frame it (clickjacking) or run anything in it. It loads only its own
# files, with no inline script or style, so 'self' is all it needs.
UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
