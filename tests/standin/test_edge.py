"""The connection's limits on a real gateway: huge heads, slow clients, too many connections,
and a taken port. Raw sockets, so that a test sends exactly the bytes an attacker would."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import (
    CHAT,
    REPO,
    GatewayProcess,
    assert_error,
    assert_valid,
    free_port,
    running_gateway,
    standin,
    wait_until,
)

HEADER_TIMEOUT = BODY_TIMEOUT = 1.5
MAX_CONNECTIONS = 32
CONFIG = {
    "server": {
        "header_timeout": HEADER_TIMEOUT,
        "body_timeout": BODY_TIMEOUT,
        "max_connections": MAX_CONNECTIONS,
    },
    "models": [standin("m")],
}
MiB = 1 << 20


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("edge"))


def connect(gateway: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes, and when its first byte came."""
    sock.settimeout(timeout)
    started, first, data = time.monotonic(), 0.0, b""
    with contextlib.suppress(ConnectionResetError):  # closed with input unread: a reset
        while chunk := sock.recv(65536):
            first = first or time.monotonic() - started
            data += chunk
    return data, first


def answer(data: bytes) -> tuple[int, dict[str, str], Any]:
    """An HTTP answer's status, headers (lower-case names) and JSON body."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def assert_refused(data: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = answer(data)
    assert got == status, data[:300]
    assert headers["connection"] == "close"
    assert_valid("ErrorResponse", body)
    assert body["error"]["code"] == code and set(body["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    error: dict[str, Any] = body["error"]
    return error


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the gateway closed the connection: what it should do
        sock.sendall(data)


class HealthProbe(threading.Thread):
    """GET /health on fresh connections, again and again, until stopped: how long each took."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url, self.stop = url, threading.Event()
        self.results: list[tuple[int, float]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = httpx.get(self.url + "/health", timeout=5).status_code
            except httpx.HTTPError:
                status = 0
            self.results.append((status, time.monotonic() - started))
            time.sleep(0.02)


HUGE_HEADER = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Junk: "
# httptools buffers a chunked body's trailers as it does headers: quadratically.
HUGE_TRAILER = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Junk: "
)


@pytest.mark.parametrize(
    ("start", "status"), [(HUGE_HEADER, 431), (HUGE_TRAILER, None)], ids=["header", "trailer"]
)
def test_a_64_mb_header_is_refused_at_once_while_health_answers(
    gateway: GatewayProcess, start: bytes, status: int | None
) -> None:
    attack = start + b"a" * (64 * MiB)
    probe = HealthProbe(gateway.url)
    probe.start()
    sock = connect(gateway)
    sender = threading.Thread(target=send_quietly, args=(sock, attack))
    started = time.monotonic()
    sender.start()
    try:
        data, first_byte = read_until_closed(sock)
        closed = time.monotonic() - started
        sender.join(10)
        time.sleep(0.3)  # a few probes after the attack too
    finally:
        probe.stop.set()
        probe.join(10)
        sock.close()
    if status is None:  # mid-request: the connection just ends
        assert data == b""
    else:
        error = assert_refused(data, 431, "headers_too_large")
        assert error["type"] == "invalid_request_error"
        assert first_byte < 1.0
    assert closed < 3.0  # a second of lingering at most, after the answer
    assert probe.results and all(code == 200 for code, _ in probe.results), probe.results
    assert max(took for _, took in probe.results) < 1.0, probe.results


def test_a_long_url_is_414_and_large_headers_431_to_an_ordinary_client(
    gateway: GatewayProcess,
) -> None:
    response = httpx.get(gateway.url + "/health?q=" + "a" * 10_000)
    assert_error(response, 414, "url_too_long")
    assert response.headers["connection"] == "close"
    response = httpx.get(gateway.url + "/health", headers={"X-Junk": "a" * 20_000})
    assert_error(response, 431, "headers_too_large")
    assert response.headers["x-request-id"]  # refused before the app: an id all the same
    assert httpx.get(gateway.url + "/health?q=" + "a" * 7000).status_code == 200


def slow_client(port: int, head: bytes, limit: float = 8.0) -> tuple[float, bytes]:
    """Send `head`, then a byte every 0.2 s until the gateway answers: when, and what."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head)
        while time.monotonic() - started < limit:
            if select.select([sock], [], [], 0.2)[0]:
                return time.monotonic() - started, read_until_closed(sock)[0]
            sock.sendall(b"a")
        return time.monotonic() - started, b""


def trickle_until_closed(port: int, head: bytes, limit: float = 8.0) -> tuple[float, bytes]:
    """Send `head`, then a byte every 0.2 s, reading all along, until the gateway closes the
    connection: when, and what it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started, data = time.monotonic(), b""
        sock.sendall(head)
        while time.monotonic() - started < limit:
            if select.select([sock], [], [], 0.2)[0]:
                chunk = b""
                with contextlib.suppress(ConnectionResetError):
                    chunk = sock.recv(65536)
                if not chunk:
                    return time.monotonic() - started, data
                data += chunk
            with contextlib.suppress(OSError):
                sock.sendall(b"a")
        return time.monotonic() - started, data


def test_slowloris_connections_get_408_after_header_timeout(gateway: GatewayProcess) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(lambda _: slow_client(gateway.port, head), range(24)))
    for took, data in results:
        assert_refused(data, 408, "request_timeout")
        assert HEADER_TIMEOUT - 0.1 < took < HEADER_TIMEOUT + 1.5, took
    assert httpx.get(gateway.url + "/health").status_code == 200


def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(
    gateway: GatewayProcess,
) -> None:
    with connect(gateway) as sock:
        started = time.monotonic()
        data, _ = read_until_closed(sock)
    assert data == b""
    assert HEADER_TIMEOUT - 0.1 < time.monotonic() - started < HEADER_TIMEOUT + 1.5


def test_a_request_answered_before_its_body_is_read_ends_its_connection(
    gateway: GatewayProcess,
) -> None:
    # 413 before a byte of the body is read; a client trickling that body must not hold on.
    head = post_head(100 * MiB)
    took, data = trickle_until_closed(gateway.port, head)
    assert data.startswith(b"HTTP/1.1 413"), data[:300]
    assert took < 3, took


def test_a_kept_alive_request_has_header_timeout_from_its_first_byte(
    gateway: GatewayProcess,
) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # idle between requests: uvicorn's keep-alive timeout, not this one
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        data, _ = read_until_closed(sock)
    assert_refused(data, 408, "request_timeout")
    assert HEADER_TIMEOUT - 0.1 < time.monotonic() - started < HEADER_TIMEOUT + 1.5


def test_a_busy_kept_alive_connection_outlives_header_timeout(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        statuses = []
        for _ in range(10):  # 2.5 s on one connection, longer than header_timeout
            statuses.append(client.get("/health").status_code)
            time.sleep(0.25)
        assert statuses == [200] * 10
        assert client.post("/v1/chat/completions", json={"model": "m", **CHAT}).status_code == 200


def post_head(length: int) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length
    )


def test_a_body_shorter_than_its_content_length_gets_408_after_body_timeout(
    gateway: GatewayProcess,
) -> None:
    with connect(gateway) as sock:
        sock.sendall(post_head(100) + b'{"model": "m"')
        started = time.monotonic()
        data, _ = read_until_closed(sock)
        took = time.monotonic() - started
    error = assert_refused(data, 408, "request_timeout")
    assert error["type"] == "invalid_request_error"
    assert BODY_TIMEOUT - 0.1 < took < BODY_TIMEOUT + 1.5, took


def test_a_body_sent_slowly_but_steadily_is_served(gateway: GatewayProcess) -> None:
    body = json.dumps({"model": "m", **CHAT}).encode()
    pieces = [body[i : i + 10] for i in range(0, 50, 10)] + [body[50:]]
    with connect(gateway) as sock:
        sock.sendall(post_head(len(body)))
        for piece in pieces:  # 2.5 s in all, longer than body_timeout, but never idle that long
            time.sleep(0.5)
            sock.sendall(piece)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_normal_request_with_a_1_mb_body_in_one_write_is_served(
    gateway: GatewayProcess,
) -> None:
    message = {"role": "user", "content": "a" * 1_000_000}  # one word: one token
    body = json.dumps({"model": "m", "messages": [message]}).encode()
    with connect(gateway) as sock:
        sock.sendall(post_head(len(body)) + body)
        sock.settimeout(10)
        data = b""
        while b"[DONE]" not in data and b'"finish_reason"' not in data:
            data += sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]


def test_past_max_connections_new_ones_get_503_and_health_answers_once_others_close(
    gateway: GatewayProcess,
) -> None:
    held: list[socket.socket] = []
    try:
        held.extend(connect(gateway) for _ in range(MAX_CONNECTIONS + 4))
        # Well within header_timeout, after which the accepted ones would be closed too.
        assert wait_until(lambda: len(select.select(held, [], [], 0)[0]) >= 4, 1.0)
        time.sleep(0.1)
        readable = set(select.select(held, [], [], 0)[0])
        refused = [sock in readable for sock in held]
        accepted = refused.index(True) if any(refused) else len(held)
        assert refused == [False] * accepted + [True] * (len(held) - accepted)
        assert MAX_CONNECTIONS - 2 <= accepted <= MAX_CONNECTIONS
        for sock in held[accepted:]:
            error = assert_refused(read_until_closed(sock)[0], 503, "too_many_connections")
            assert error["type"] == "service_unavailable"
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: httpx.get(gateway.url + "/health").status_code == 200, 3)


def test_a_taken_port_fails_at_once_with_exit_code_2_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": [standin("m", load_seconds=5)]}))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "info",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "started worker" not in run.stdout + run.stderr
    assert time.monotonic() - started < 10


def test_the_port_is_free_again_for_the_next_gateway(tmp_path: Path) -> None:
    # The gateway binds the socket itself now: a stopped one must leave the port reusable.
    port = free_port()
    for _ in range(2):
        gateway = GatewayProcess({"models": [standin("m")]}, tmp_path)
        gateway.port, gateway.url = port, f"http://127.0.0.1:{port}"
        gateway.start(ready_timeout=60)
        assert httpx.get(gateway.url + "/health").status_code == 200
        assert gateway.stop() == 0


# A second gateway: low caps, so that a few dozen sockets reach them, and 127.0.0.1 listed as
# a proxy whose X-Forwarded-For is believed.
CAPPED = {
    "server": {
        "max_connections": 24,
        "max_connections_per_client": 8,
        "header_timeout": 5,
        "forwarded_allow_ips": ["127.0.0.1"],
    },
    "models": [standin("m")],
}


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CAPPED, tmp_path_factory.mktemp("capped"))


def connect_from(gateway: GatewayProcess, address: str) -> socket.socket:
    """A connection from `address` (all of 127.0.0.0/8 is this machine's: one client each)."""
    sock = socket.socket()
    try:
        sock.settimeout(10)
        sock.bind((address, 0))
        sock.connect(("127.0.0.1", gateway.port))
    except BaseException:
        sock.close()
        raise
    return sock


def get_from(gateway: GatewayProcess, address: str, path: str) -> int:
    """GET `path` on a fresh connection from `address`: the status."""
    with connect_from(gateway, address) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        data, _ = read_until_closed(sock)
    return answer(data)[0]


@contextlib.contextmanager
def held_connections(
    gateway: GatewayProcess, addresses: list[str]
) -> Iterator[list[socket.socket]]:
    """Silent connections, one from each of `addresses`, in order."""
    held: list[socket.socket] = []
    try:
        held.extend(connect_from(gateway, address) for address in addresses)
        yield held
    finally:
        for sock in held:
            sock.close()


def test_one_address_cannot_take_every_connection(capped: GatewayProcess) -> None:
    # 40 silent sockets from one address, more than max_connections (24): it gets 8.
    with held_connections(capped, ["127.0.0.2"] * 40) as held:
        assert get_from(capped, "127.0.0.1", "/health") == 200
        chat = httpx.post(capped.url + "/v1/chat/completions", json={"model": "m", **CHAT})
        assert chat.status_code == 200
        assert wait_until(lambda: len(select.select(held, [], [], 0)[0]) == 32, 3)
        readable = select.select(held, [], [], 0)[0]
        assert [sock for sock in held if sock not in readable] == held[:8]  # the rest got 503
        error = assert_refused(read_until_closed(held[-1])[0], 503, "too_many_connections")
        assert error["type"] == "service_unavailable"


def test_health_and_ready_answer_when_every_connection_is_taken(capped: GatewayProcess) -> None:
    # Every seat taken (3 addresses x 8), then more silent sockets than the probes' reserve
    # holds, from one of those addresses: a probe from that same address is still answered.
    seated = [f"127.0.0.{2 + i // 8}" for i in range(24)]
    with held_connections(capped, seated + ["127.0.0.2"] * 40):
        assert get_from(capped, "127.0.0.2", "/health") == 200
        assert get_from(capped, "127.0.0.5", "/ready") == 200
        assert get_from(capped, "127.0.0.5", "/health?verbose=1") == 200
        assert get_from(capped, "127.0.0.5", "/v1/models") == 503  # anything else: 503
        with connect_from(capped, "127.0.0.5") as sock:  # no request line within 0.5 s: 503
            data, first_byte = read_until_closed(sock)
        assert_refused(data, 503, "too_many_connections")
        assert 0.4 < first_byte < 2.0, first_byte
    assert wait_until(lambda: get_from(capped, "127.0.0.2", "/v1/models") == 200, 3)


def test_x_forwarded_for_is_believed_from_no_proxy_unless_listed(
    gateway: GatewayProcess, capped: GatewayProcess
) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    # Keyless: admin routes answer loopback clients, and this one is 127.0.0.1, whatever it says.
    assert httpx.get(gateway.url + "/admin/workers", headers=spoofed).status_code == 200
    # From a listed proxy (server.forwarded_allow_ips), the client is the one it forwards for.
    assert_error(httpx.get(capped.url + "/admin/workers", headers=spoofed), 403, "forbidden")
    assert httpx.get(capped.url + "/admin/workers").status_code == 200
