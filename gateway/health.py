"""`llm-gateway health`: asks a running gateway's /health (or /ready) where its config says it
listens, for a container's health check. Docker runs it every few seconds: it imports nothing
of the serving stack (aiohttp, litestar, llama.cpp), only the config and urllib."""

from __future__ import annotations

import urllib.error
import urllib.request

from .config.file import ServerConfig

__all__ = ["health_url", "probe"]

# A gateway bound to every address answers on loopback (and a probe must not leave the host).
_EVERY_ADDRESS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def health_url(
    server: ServerConfig, host: str | None = None, port: int | None = None, ready: bool = False
) -> str:
    """The probe's URL for a gateway serving `server` (host and port as `serve` overrides)."""
    address = host or server.host
    address = _EVERY_ADDRESS.get(address, address)
    if ":" in address:
        address = f"[{address}]"
    path = "/ready" if ready else "/health"
    return f"http://{address}:{server.port if port is None else port}{path}"


def probe(url: str, timeout: float) -> str | None:
    """None when `url` answers 200; else what came back, in a few words."""
    # No proxy: an HTTP_PROXY in the container's environment must not take a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"
    return None if status == 200 else f"{url}: {status}"
