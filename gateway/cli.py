"""The `llm-gateway` command: serve, check-config, keygen, health, worker.

The plan's modules (the scaler, footprints: aiohttp, numpy, gguf) are imported where they are
used: `health` runs every few seconds in a container and starts without them.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import shlex
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .config.auth import check_exposure, hash_key
from .config.edge import check_allowed_hosts
from .config.file import (
    ConfigError,
    DnsUpstream,
    GatewayConfig,
    KeyConfig,
    ModelConfig,
    load_config,
)
from .config.scaling import show_size
from .config.upstreams import Upstream
from .health import health_url, probe
from .replicas.devices import budgets

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        from workers.cli import main as worker_main  # the worker needs no gateway import

        code: int = worker_main(args[1:], prog="llm-gateway worker")
        return code
    options = _parser().parse_args(args)
    if options.command == "keygen":
        print(keygen(options.name))
        return 0
    try:
        config = load_config(options.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 2
    if options.command == "health":
        return health(config, options.host, options.port, options.ready)
    from .pool.scaler import floor_plan

    device_budgets = budgets(config)
    placement = floor_plan(config, device_budgets)
    if options.command == "check-config":
        print(describe_plan(config, options.config, device_budgets, placement))
    unfit = [f"{label}: {where}" for label, where in placement if where.startswith("cannot")]
    if unfit:
        print(
            "invalid config: the min replicas do not fit the memory budgets:\n  "
            + "\n  ".join(unfit),
            file=sys.stderr,
        )
        return 2
    if options.command == "check-config":
        return 0
    return _serve(
        config,
        Path(options.config),
        options.host,
        options.port,
        options.log_level,
        options.log_format,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the gateway and its workers")
    serve.add_argument("--config", default="config.yaml")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text for a terminal, json (one object a line) for a collector",
    )
    check = commands.add_parser("check-config", help="validate a config file and print the plan")
    check.add_argument("config")
    keys = commands.add_parser("keygen", help="print a new API key and its config lines")
    keys.add_argument("--name", required=True, help="the key's name in logs, metrics and /admin")
    asks = commands.add_parser("health", help="exit 0 if the gateway this config runs answers")
    asks.add_argument("--config", default="config.yaml")
    asks.add_argument("--host", help="as given to serve: overrides server.host")
    asks.add_argument("--port", type=int, help="as given to serve: overrides server.port")
    asks.add_argument("--ready", action="store_true", help="ask /ready rather than /health")
    commands.add_parser("worker", help="run one worker by hand (see `llm-gateway worker --help`)")
    return parser


def health(config: GatewayConfig, host: str | None, port: int | None, ready: bool) -> int:
    """0 when the gateway serving `config` answers 200 on /health (/ready); else 1, with why."""
    failure = probe(health_url(config.server, host, port, ready), timeout=2.0)
    if failure is not None:
        print(f"unhealthy: {failure}", file=sys.stderr)
        return 1
    return 0


def keygen(name: str) -> str:
    """A new random key and the auth.keys entry that admits it (its hash, never the key)."""
    key = "sk-gw-" + secrets.token_urlsafe(32)
    return "\n".join(
        [
            f"# The API key for {name}; shown once: the gateway keeps only its SHA-256.",
            key,
            "# In config.yaml, under `auth: keys:` (add models, rpm, tpm, max_concurrent, weight):",
            f"  - name: {name}",
            f"    key_sha256: {hash_key(key).hex()}",
        ]
    )


def describe_plan(
    config: GatewayConfig,
    source: str,
    device_budgets: dict[str, int],
    placement: list[tuple[str, str]],
) -> str:
    """A human-readable plan: each model, its replicas, their devices and params; the memory
    budgets and where the `min` replicas go."""
    replicas = sum(m.replicas for m in config.models)
    lines = [
        f"{source}: valid; {len(config.models)} models, {replicas} replicas; "
        f"serving on {config.server.host}:{config.server.port}"
    ]
    for model in config.models:
        lines += _describe_model(model)
    lines += _describe_access(config)
    lines.append(
        "memory budgets: "
        + ", ".join(f"{device} {show_size(size)}" for device, size in device_budgets.items())
    )
    lines += [f"- {label} on {where}" for label, where in placement]
    return "\n".join(lines)


def _describe_access(config: GatewayConfig) -> list[str]:
    auth = config.auth
    if not auth.keys:
        how = "open (auth.required: false)" if auth.required is False else "open to loopback"
        lines = [f"auth: no keys; {how}"]
    else:
        lines = [
            f"auth: {len(auth.keys)} keys"
            + ("; anyone else served as anonymous" if auth.open else "")
        ]
        lines += [f"- key {key.name}: {_describe_key(key)}" for key in auth.keys]
    store = "in this process" if config.redis.url is None else "in Redis"
    return [*lines, f"limits and usage: {store}"]


def _describe_key(key: KeyConfig) -> str:
    limits = [
        f"{name} {value}"
        for name, value in (
            ("rpm", key.rpm),
            ("tpm", key.tpm),
            ("max_concurrent", key.max_concurrent),
        )
        if value is not None
    ]
    models = ", ".join(key.models) if key.models is not None else "all"
    return f"models {models}; {', '.join(limits) or 'no limits'}; weight {key.weight:g}" + (
        "; admin" if key.admin else ""
    )


def _describe_model(model: ModelConfig) -> list[str]:
    from .replicas.launch import llama_params

    aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
    params: dict[str, Any] = llama_params(model) if model.loads_gguf else dict(model.standin)
    lines = [
        f"- {model.name}{aliases}",
        f"    engine: {model.engine}; path: {model.path}",
        f"    queue: max {model.max_queue}, timeout {model.queue_timeout:g} s",
        f"    params: {json.dumps(params, sort_keys=True)}",
    ]
    if model.server_binary is not None:
        from .replicas.server_launch import server_command

        command = server_command(model, "PORT", model.device(0) or "cpu")
        lines.append(f"    command: {shlex.join(command)}")
    lines += [_describe_slot(model, i) for i in range(model.replicas)]
    if model.on_demand:
        ttl = "never" if model.idle_ttl is None else f"{model.idle_ttl:g} s"
        lines.append(
            f"    on demand: min {model.floor}, max {model.replicas}; idle stop after "
            f"{ttl}; another replica when {model.scale_up_queue} wait"
        )
    lines += [f"    upstream: {_describe_upstream(u)}" for u in model.upstreams]
    if model.routing != "least_busy":
        lines.append(f"    routing: {model.routing}")
    return lines


def _describe_slot(model: ModelConfig, index: int) -> str:
    from .replicas.footprint import needs

    device = "auto" if model.gpus_auto else model.device(index) or "cpu"
    need = needs(model, "GPU" if device == "auto" else device)  # auto: on whichever GPU
    memory = ", ".join(f"{d} {show_size(size)}" for d, size in need.items()) or "none counted"
    return f"    replica {index}: device {device}; memory estimate {memory}"


def _describe_upstream(upstream: Upstream) -> str:
    """An upstream as check-config shows it (its key's variable, never the key)."""
    if isinstance(upstream, DnsUpstream):
        where = f"every address of {upstream.host} on port {upstream.port}{upstream.path}"
        upstream = upstream.template
    else:
        where = upstream.url
    key, name = upstream.api_key_env, upstream.upstream_model
    return (
        f"{where}, capacity {upstream.capacity}"
        + (f", key from ${key}" if key else "")
        + (f", model {name}" if name else "")
    )


def _serve(
    config: GatewayConfig,
    source: Path,
    host: str | None,
    port: int | None,
    log_level: str,
    log_format: str,
) -> int:
    # SIGHUP (reload) would end the process by default: ignore it until the server handles it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    host = host or config.server.host
    try:  # --host may put a keyless gateway on a public address: the file's rule holds there too
        check_exposure(config.auth, host)
        check_allowed_hosts(config.auth, host, config.server.allowed_hosts)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 2
    # The port before anything else: on a taken one, fail before a worker loads a model.
    sock = _listen(host, config.server.port if port is None else port)
    if sock is None:
        return 2
    import uvicorn

    from .http.app import create_app
    from .http.browsers import Browsers
    from .http.edge import edge_protocol
    from .http.head import AnswerHead
    from .http.request_ids import RequestIds
    from .http.server import GatewayServer
    from .observe.logs import REQUEST_LOG, configure
    from .observe.metrics import MetricsMiddleware

    configure(log_level, log_format)
    logging.getLogger("gateway").info("listening on %s port %d", *sock.getsockname()[:2])
    app = create_app(config, source, port=sock.getsockname()[1])
    gateway = app.state.gateway
    # Metrics off and the request log silenced: nothing to record, so no middleware at all (and
    # /admin/requests and /admin/stats stay empty).
    recorded = config.server.metrics or REQUEST_LOG.isEnabledFor(logging.INFO)
    middleware = MetricsMiddleware(app, app.state.metrics, app.state.recent) if recorded else app
    server_config = uvicorn.Config(
        RequestIds(Browsers(AnswerHead(middleware), lambda: gateway.config)),
        http=edge_protocol(config, lambda: gateway.config.server),
        ws="none",  # no WebSocket route; an upgrade would leave the edge's connection count
        # X-Forwarded-For and -Proto from the listed proxies only (a restart applies a change).
        proxy_headers=bool(config.server.forwarded_allow_ips),
        forwarded_allow_ips=list(config.server.forwarded_allow_ips),
        log_level=log_level,
        log_config=None,  # uvicorn's lines through our handler, JSON included
        access_log=False,  # the request log (gateway.requests) says more
        timeout_graceful_shutdown=10,
    )
    GatewayServer(server_config, gateway, app.state.reloader).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket | None:
    """The gateway's listening socket; or None, once a one-line reason is printed."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart rebinds at once
        sock.bind((host, port))
        sock.listen(2048)  # now: a second gateway binding the port at the same time fails here
    except OSError as exc:
        sock.close()
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return None
    return sock
