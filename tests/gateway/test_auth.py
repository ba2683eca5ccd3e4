"""Who is calling: the presented key, matched by hash; loopback addresses."""

from __future__ import annotations

import pytest

from gateway.config.auth import AuthConfig, KeyConfig, hash_key
from gateway.http.auth import ANONYMOUS, identify, is_loopback, presented_key

KEY = "sk-0123456789abcdef"
TEAM = KeyConfig(name="team", digest=hash_key(KEY))
OTHER = KeyConfig(name="other", digest=hash_key("sk-other-0123456789"))
KEYED = AuthConfig(keys=(OTHER, TEAM))


def header(text: str) -> str:
    """A header value as the server hands it over: the bytes sent, decoded as latin-1."""
    return text.encode().decode("latin-1")


def caller(auth: AuthConfig, authorization: str = "", api_key: str = "") -> KeyConfig | None:
    return identify(auth, presented_key(header(authorization), header(api_key)))


@pytest.mark.parametrize(
    "value",
    [f"Bearer {KEY}", f"bearer {KEY}", f"Bearer {KEY}  ", f"  Bearer   {KEY}", f"Bearer {KEY}\t"],
)
def test_the_key_is_known_whatever_the_case_of_the_scheme_and_the_spaces(value: str) -> None:
    assert caller(KEYED, value) is TEAM


def test_azure_clients_api_key_header_is_a_key_too() -> None:
    assert caller(KEYED, api_key=KEY) is TEAM
    assert caller(KEYED, "Bearer sk-other-0123456789", api_key=KEY) is OTHER  # Bearer first


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        f"Basic {KEY}",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        "Bearer café",
        f"{KEY}",
    ],
)
def test_anything_else_is_refused_without_raising(value: str) -> None:
    assert caller(KEYED, value) is None


def test_a_header_that_is_not_latin1_is_refused_without_raising() -> None:
    assert identify(KEYED, presented_key("Bearer \udcff", "")) is None


def test_a_non_ascii_key_matches_the_utf8_bytes_a_client_sends() -> None:
    key = "ключ-0123456789abcdef"
    auth = AuthConfig(keys=(KeyConfig(name="k", digest=hash_key(key)),))
    assert caller(auth, f"Bearer {key}") is auth.keys[0]
    assert caller(auth, "Bearer ключ-0123456789abcdeX") is None


def test_an_open_gateway_serves_anyone_as_anonymous() -> None:
    assert caller(AuthConfig(), "") is ANONYMOUS
    assert caller(AuthConfig(), "Bearer sk-no-key-needed") is ANONYMOUS
    relaxed = AuthConfig(required=False, keys=(TEAM,))
    assert caller(relaxed, f"Bearer {KEY}") is TEAM  # a known key is still that key
    assert caller(relaxed, "Bearer sk-unknown") is ANONYMOUS


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.5", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("localhost", False),
    ],
)
def test_only_loopback_addresses_count_as_local(host: str | None, local: bool) -> None:
    assert is_loopback(host) is local
