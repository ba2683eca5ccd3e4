"""The connection's limits, without a server: RequestMeter's counting, the settings, the caps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config.file import ConfigError, parse_config
from gateway.http.edge import (
    HEAD_COMPLETE,
    HEADERS_TOO_LARGE,
    PENDING,
    TOO_LARGE,
    URL_TOO_LONG,
    RequestMeter,
)
from gateway.http.seats import Seats, client_key, is_probe
from tests.support import REPO, standin

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 20\r\n\r\n"
BODY = b'{"a": "\r\n\r\n\r\n\r\n"}'  # a body that looks like the end of a head
MiB = 1 << 20


def meter(url: int = 8192, headers: int = 16384, rest: int = 8 * MiB) -> RequestMeter:
    return RequestMeter(url, headers, rest)


def feed_all(m: RequestMeter, *chunks: bytes) -> list[int]:
    return [m.feed(chunk) for chunk in chunks]


def test_a_head_and_a_big_body_in_one_chunk_complete_the_head() -> None:
    m = meter(headers=len(HEAD))
    assert m.feed(HEAD + BODY * 50_000) == HEAD_COMPLETE  # 1 MB: none of it is header bytes
    assert not m.in_head


@pytest.mark.parametrize("head", [HEAD, b"GET / HTTP/1.1\r\n\r\n"], ids=["headers", "no headers"])
def test_the_head_ends_in_the_chunk_that_holds_its_last_byte_wherever_the_split(
    head: bytes,
) -> None:
    request = head + BODY
    for split in range(1, len(request)):
        m = meter()
        verdicts = feed_all(m, request[:split], request[split:])
        expected = [HEAD_COMPLETE, PENDING] if split >= len(head) else [PENDING, HEAD_COMPLETE]
        assert verdicts == expected, split


def test_a_head_fed_byte_by_byte_completes_on_its_last_byte() -> None:
    m = meter()
    verdicts = feed_all(m, *(HEAD[i : i + 1] for i in range(len(HEAD))))
    assert verdicts == [PENDING] * (len(HEAD) - 1) + [HEAD_COMPLETE]


@pytest.mark.parametrize("chunk", [1, 1000, 1 << 16])
def test_a_request_line_over_max_url_bytes_is_414_however_it_arrives(chunk: int) -> None:
    line = b"GET /" + b"a" * (8192 - len(b"GET / HTTP/1.1\r\n")) + b" HTTP/1.1\r\n"
    assert len(line) == 8192
    fits = line + b"\r\n"
    assert feed_all(meter(), *_chunks(fits, chunk))[-1] == HEAD_COMPLETE
    too_long = b"GET /a" + line[5:] + b"\r\n"
    assert URL_TOO_LONG in feed_all(meter(), *_chunks(too_long, chunk))


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("chunk", [1, 1000, 1 << 16])
def test_headers_over_max_header_bytes_are_431_however_they_arrive(chunk: int) -> None:
    line = b"GET / HTTP/1.1\r\n"
    header = b"X-Junk: " + b"a" * (16384 - len(b"X-Junk: \r\n\r\n")) + b"\r\n"
    assert len(header + b"\r\n") == 16384  # header bytes: every byte after the request line
    assert feed_all(meter(), *_chunks(line + header + b"\r\n", chunk))[-1] == HEAD_COMPLETE
    verdicts = feed_all(meter(), *_chunks(line + b"a" + header + b"\r\n", chunk))
    assert verdicts[-1] == HEADERS_TOO_LARGE
    assert HEAD_COMPLETE not in verdicts


def test_a_huge_header_is_refused_within_its_first_bytes() -> None:
    m = meter()
    first = b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * (1 << 16)
    assert m.feed(first) == HEADERS_TOO_LARGE


def test_blank_lines_before_a_request_do_not_end_its_head() -> None:
    # The parser skips them; taken for the head's end, they would let a huge header through.
    m = meter()
    assert feed_all(m, b"\r\n", b"\r\n\r", b"\nGET / HTTP/1.1\r\nX: ") == [PENDING] * 3
    assert m.feed(b"a" * 20_000) == HEADERS_TOO_LARGE
    assert meter().feed(b"\r\n\r\n" + HEAD) == HEAD_COMPLETE


def test_the_rest_of_a_request_is_bounded() -> None:
    m = meter(rest=100)
    assert m.feed(HEAD + b"a" * 60) == HEAD_COMPLETE
    assert m.feed(b"a" * 40) == PENDING
    assert m.feed(b"a") == TOO_LARGE


def test_restart_counts_the_next_request_afresh() -> None:
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n"
    m = meter(headers=12_000)
    assert m.feed(big) == HEAD_COMPLETE
    m.restart()
    assert not m.started and m.in_head
    assert m.feed(big[:10]) == PENDING and m.started
    assert m.feed(big[10:]) == HEAD_COMPLETE


LIMIT_KEYS = {
    "header_timeout": 10.0,
    "body_timeout": 30.0,
    "max_connections": 2048,
    "max_header_bytes": 16384,
    "max_url_bytes": 8192,
}


def _parse(tmp_path: Path, **server: Any) -> Any:
    return parse_config({"server": server, "models": [standin("m")]}, base_dir=tmp_path)


def test_the_connection_limits_have_defaults(tmp_path: Path) -> None:
    server = _parse(tmp_path).server
    assert {key: getattr(server, key) for key in LIMIT_KEYS} == LIMIT_KEYS
    assert _parse(tmp_path, header_timeout=2, max_connections=5).server.header_timeout == 2.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("header_timeout", 0),
        ("body_timeout", -1),
        ("max_connections", 0),
        ("max_header_bytes", "16k"),
        ("max_url_bytes", 1.5),
        ("body_timeout", True),
    ],
)
def test_a_bad_limit_names_its_key(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^server\.{key}: expected"):
        _parse(tmp_path, **{key: value})


PROBE = """
import resource
from pathlib import Path
from gateway.config.file import parse_config
from gateway.http.edge import edge_protocol
from tests.support import standin
config = parse_config({"models": [standin("m", replicas=2)]}, base_dir=Path("."))
protocol = edge_protocol(config, lambda: config.server)
print(protocol.edge.fd_cap, *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def _probe(ulimits: str) -> list[int]:
    command = f"{ulimits}; exec {sys.executable} -c '{PROBE}'"
    run = subprocess.run(
        ["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return [int(word) for word in run.stdout.split()]


def test_start_up_raises_the_soft_open_files_limit_to_the_hard_one() -> None:
    _cap, soft, hard = _probe("ulimit -Sn 256")
    assert soft == hard and hard > 256


def test_the_connection_cap_leaves_open_files_for_workers_and_upstream() -> None:
    # 512 open files less 64 + 2 replicas x (1 + 8) kept: 430 client connections at most.
    assert _probe("ulimit -n 512") == [430, 512, 512]


def test_seats_cap_connections_in_all_and_per_client() -> None:
    seats: Seats[object] = Seats()
    assert [seats.take("a", 5, 2) for _ in range(3)] == [True, True, False]
    assert [seats.take(c, 5, 2) for c in "bbc"] == [True, True, True]
    assert not seats.take("d", 5, 2) and seats.taken == 5  # every seat taken
    seats.give_back("a")
    assert seats.take("d", 5, 2)
    for client in "abbcd":
        seats.give_back(client)
    assert seats.taken == 0 and [seats.take("a", 5, 2) for _ in range(3)] == [True, True, False]


def test_a_full_probes_reserve_makes_room_by_evicting_its_oldest() -> None:
    seats: Seats[int] = Seats(reserve=2)
    assert [seats.wait(n) for n in (1, 2)] == [None, None]
    assert seats.wait(3) == 1
    seats.leave(2)  # served or closed
    assert seats.wait(4) is None
    assert seats.wait(5) == 3


def test_the_per_client_cap_counts_an_ipv6_clients_whole_64() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"


@pytest.mark.parametrize(
    ("line", "probe"),
    [
        (b"GET /health HTTP/1.1\r\n", True),
        (b"HEAD /ready HTTP/1.0\n", True),
        (b"GET /ready?full=1 HTTP/1.1\r\n", True),
        (b"POST /health HTTP/1.1\r\n", False),
        (b"GET /healthz HTTP/1.1\r\n", False),
        (b"GET /v1/models HTTP/1.1\r\n", False),
        (b"GET /health", False),
    ],
)
def test_only_a_probes_request_line_is_served_from_the_reserve(line: bytes, probe: bool) -> None:
    assert is_probe(line) is probe
