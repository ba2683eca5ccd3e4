"""API keys compared as bytes; admin routes kept to loopback when no key is configured."""

from __future__ import annotations

import pytest

from gateway.auth import bearer_matches, is_loopback

KEY = "sk-0123456789abcdef"


def header(text: str) -> str:
    """A header value as the server hands it over: the bytes sent, decoded as latin-1."""
    return text.encode().decode("latin-1")


@pytest.mark.parametrize(
    "value",
    [f"Bearer {KEY}", f"bearer {KEY}", f"Bearer {KEY}  ", f"  Bearer   {KEY}", f"Bearer {KEY}\t"],
)
def test_the_key_is_accepted_whatever_the_case_of_the_scheme_and_the_spaces(value: str) -> None:
    assert bearer_matches(header(value), (KEY,))


@pytest.mark.parametrize(
    "value",
    ["", "Bearer", "Bearer ", f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}",
     "Bearer café", "Bearer \udcff", f"{KEY}"],
)  # fmt: skip
def test_anything_else_is_refused_without_raising(value: str) -> None:
    assert not bearer_matches(header(value) if "\udcff" not in value else value, (KEY,))


def test_a_non_ascii_key_matches_the_utf8_bytes_a_client_sends() -> None:
    key = "ключ-0123456789abcdef"
    assert bearer_matches(header(f"Bearer {key}"), (key,))
    assert not bearer_matches(header("Bearer ключ-0123456789abcdeX"), (key,))


def test_no_key_configured_matches_nothing() -> None:
    assert not bearer_matches(header("Bearer "), ())


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.5", False), ("192.168.1.2", False), ("::ffff:10.0.0.5", False),
     ("2001:db8::1", False), ("", False), (None, False), ("localhost", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_local(host: str | None, local: bool) -> None:
    assert is_loopback(host) is local
