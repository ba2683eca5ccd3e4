"""`python -m workers ...` (also `llm-gateway worker ...`): serve one model on loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
from typing import Any

from aiohttp import web

from workers.api.embedding_policy import EmbeddingPolicy
from workers.engines.base import Model
from workers.engines.standin import StandinEngine, StandinOptions
from workers.lifeline import tie_to_parent
from workers.logs import log, set_log_name
from workers.server import Worker, build_app
from workers.wire import SECRET_ENV

__all__ = ["EXIT_LOAD_FAILED", "build_parser", "main"]

EXIT_LOAD_FAILED = 3
# After a failed load, keep answering /status this long so a supervisor can read the reason.
FAILED_LINGER_SECONDS = 2.0
SHUTDOWN_TIMEOUT_SECONDS = 5.0


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def build_parser(prog: str = "python -m workers") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve one GGUF model (or a stand-in) over OpenAI's API."
    )
    parser.add_argument("--model-name", required=True, help="name reported as `model`")
    parser.add_argument(
        "--replica", type=int, default=0, help="which replica of the model (for log lines)"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--model-path", help="GGUF file (required for --engine llama)")
    parser.add_argument(
        "--llama-json", type=_json_object, default={}, help="kwargs for llama_cpp.Llama"
    )
    parser.add_argument("--engine", choices=("llama", "standin"), default="llama")
    parser.add_argument(
        "--standin-json", type=_json_object, default={}, help="stand-in engine options"
    )
    parser.add_argument("--parent-pid", type=int, help="exit as soon as this parent dies")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests served at once (llama: slots decoded in one batch over one model copy)",
    )
    parser.add_argument(
        "--matryoshka", action="store_true", help="embeddings may be shortened (dimensions)"
    )
    parser.add_argument(
        "--accept-token-ids",
        action="store_true",
        help="take token-id input to /v1/embeddings as this model's own ids (else 400)",
    )
    parser.add_argument(
        "--listen-fd",
        type=int,
        help="serve on this inherited listening socket (bound to --host:--port by the gateway, "
        "so no other process can take the port between its choice and the worker's start)",
    )
    parser.add_argument(
        "--phase-fd",
        type=int,
        help="write each lifecycle change (loading, warming_up, ready, "
        "failed REASON) as a line to this inherited file descriptor",
    )
    return parser


def _engine(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Model:
    if args.engine == "standin":
        try:
            return StandinEngine(StandinOptions.from_json(args.standin_json))
        except (TypeError, ValueError) as exc:
            parser.error(f"--standin-json: {exc}")
    if not args.model_path:
        parser.error("--model-path is required with --engine llama")
    if args.llama_json.get("embedding"):  # a plain Llama: the engine loop generates
        from workers.engines.llama import LlamaEngine

        return LlamaEngine(args.model_path, args.llama_json)
    from workers.engines.loop.model import LoopLlamaModel  # its slots batched over one copy

    return LoopLlamaModel(args.model_path, args.llama_json, args.concurrency)


async def serve(
    worker: Worker, host: str, port: int, secret: str | None = None, listen_fd: int | None = None
) -> int:
    runner = web.AppRunner(
        build_app(worker, secret),
        handler_cancellation=True,  # a client that goes away cancels its handler
        access_log=None,  # one line per request is logged by WorkerStatus instead
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
    )
    await runner.setup()
    if listen_fd is None:
        await web.TCPSite(runner, host, port).start()
    else:
        await web.SockSite(runner, socket.socket(fileno=listen_fd)).start()
    log(f"listening on http://{host}:{port}")
    loop = asyncio.get_running_loop()
    exit_code: asyncio.Future[int] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _finish, exit_code, 0)
    if not await worker.load():
        loop.call_later(FAILED_LINGER_SECONDS, _finish, exit_code, EXIT_LOAD_FAILED)
    code = await exit_code
    log(f"exiting with code {code}")
    await runner.cleanup()
    worker.thread.stop()
    return code


def _finish(exit_code: asyncio.Future[int], code: int) -> None:
    if not exit_code.done():
        exit_code.set_result(code)


def main(argv: list[str] | None = None, prog: str = "python -m workers") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        tie_to_parent(args.parent_pid)
    set_log_name(args.model_name, args.replica)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.concurrency > 1 and args.llama_json.get("embedding"):
        parser.error("--concurrency must be 1 for an embedding model (batching is for generation)")
    secret = os.environ.pop(SECRET_ENV, None)  # not inherited by anything this process starts
    engine = _engine(args, parser)
    path = args.model_path if args.engine == "llama" else None
    worker_holder: list[Worker] = []

    async def run() -> int:
        # Worker owns an asyncio.Lock: build it inside the running loop.
        policy = EmbeddingPolicy(args.matryoshka, args.accept_token_ids)
        worker_holder.append(
            Worker(args.model_name, engine, path, args.concurrency, args.phase_fd, policy)
        )
        return await serve(worker_holder[0], args.host, args.port, secret, args.listen_fd)

    return asyncio.run(run())
