"""The status page's files (plain HTML, CSS and a script; no build step, no CDN), read once."""

from __future__ import annotations

from importlib import metadata, resources

__all__ = ["UI", "VERSION"]

UI: dict[str, bytes] = {
    name: resources.files(__name__).joinpath(name).read_bytes()
    for name in ("index.html", "app.js", "style.css")
}
VERSION = metadata.version("llm-gateway")
