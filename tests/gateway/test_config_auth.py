"""The auth and redis sections: named keys held as hashes, their limits, safe defaults."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway.config.auth import check_exposure, hash_key, parse_auth, parse_redis
from gateway.config.file import ConfigError

KEY = "sk-team-a-0123456789abcdef"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


def key(**fields: Any) -> dict[str, Any]:
    return {"name": "team-a", "key_sha256": DIGEST, **fields}


def test_a_key_by_hash_with_its_models_and_limits() -> None:
    auth = parse_auth(
        {
            "keys": [
                key(
                    models=["smollm2", "gemma*"],
                    rpm=600,
                    tpm=200000,
                    max_concurrent=4,
                    weight=2,
                    admin=True,
                )
            ]
        }
    )
    (team,) = auth.keys
    assert team.digest == hash_key(KEY) and team.name == "team-a"
    assert (team.rpm, team.tpm, team.max_concurrent, team.weight, team.admin) == (
        600,
        200000,
        4,
        2.0,
        True,
    )
    assert team.allows(("gemma-3",)) and team.allows(("other", "smollm2"))  # aliases count
    assert not team.allows(("llama",)) and not auth.open


def test_defaults_allow_every_model_without_limits() -> None:
    (team,) = parse_auth({"keys": [key()]}).keys
    assert team.models is None and team.allows(("anything",)) and not team.limited
    assert (team.weight, team.admin) == (1.0, False)


def test_a_key_from_the_environment_is_hashed_and_never_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEAM_A_KEY", f"  {KEY}\n")
    (team,) = parse_auth({"keys": [{"name": "team-a", "key_env": "TEAM_A_KEY"}]}).keys
    assert team.digest == hash_key(KEY)  # whitespace trimmed
    assert KEY not in repr(team)


@pytest.mark.parametrize("value", ["", "   ", "short-key"])
def test_an_empty_or_short_key_in_the_environment_is_an_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TEAM_A_KEY", value)  # "" is what ${VAR:-} gives for an unset variable
    with pytest.raises(
        ConfigError,
        match=r"auth\.keys\[0\] \(team-a\)\.key_env: .* needs at "
        r"least 16",
    ) as caught:
        parse_auth({"keys": [{"name": "team-a", "key_env": "TEAM_A_KEY"}]})
    assert "short-key" not in str(caught.value)


def test_an_unset_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable NOPE_KEY is not set"):
        parse_auth({"keys": [{"name": "a", "key_env": "NOPE_KEY"}]})


def test_a_plain_key_in_the_file_is_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError, match=r"\(team-a\)\.key: a plain key .* refused") as caught:
        parse_auth({"keys": [{"name": "team-a", "key": KEY}]})
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"key_sha256": "abc"}, r"\.key_sha256: expected 64 hexadecimal"),
        ({"key_sha256": DIGEST, "key_env": "X"}, r"\.key_sha256: give exactly one of"),
        ({"key_sha256": None}, r"\.key_sha256: expected 64 hexadecimal"),
        ({"rpm": 0}, r"\.rpm: expected a positive integer"),
        ({"tpm": 1.5}, r"\.tpm: expected a positive integer"),
        ({"max_concurrent": -1}, r"\.max_concurrent: expected a positive integer"),
        ({"weight": 0}, r"\.weight: expected a number > 0"),
        ({"admin": "yes"}, r"\.admin: expected true or false"),
        ({"models": "smollm2"}, r"\.models: expected a list"),
        ({"colour": "red"}, r"\.colour: unknown key"),
    ],
)
def test_each_bad_field_is_named(fields: dict[str, Any], problem: str) -> None:
    entry = {"name": "team-a", **({"key_sha256": DIGEST} if "key_env" not in fields else {})}
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\] \(team-a\)" + problem):
        parse_auth({"keys": [{**entry, **fields}]})


@pytest.mark.parametrize("name", ["", "has space", "ünïcode", "x" * 65, "anonymous", 7])
def test_a_key_name_must_be_a_safe_label(name: Any) -> None:
    with pytest.raises(ConfigError, match=r"auth\.keys\[0\]\.name"):
        parse_auth({"keys": [key(name=name)]})


def test_names_and_keys_are_unique() -> None:
    other = hashlib.sha256(b"another-key-0123456789").hexdigest()
    with pytest.raises(ConfigError, match=r"auth\.keys\[1\]\.name: 'team-a' is already"):
        parse_auth({"keys": [key(), key(key_sha256=other)]})
    with pytest.raises(
        ConfigError, match=r"auth\.keys\[1\] \(b\): the same key as auth\.keys\[0\]"
    ):
        parse_auth({"keys": [key(), key(name="b")]})


def test_required_without_keys_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"auth\.required: true, but auth\.keys is empty"):
        parse_auth({"required": True})


def test_required_false_serves_anyone_keys_or_not() -> None:
    assert parse_auth({"required": False, "keys": [key()]}).open
    assert parse_auth({}).open  # no keys at all (loopback only: check_exposure)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "gateway.internal"])
def test_no_keys_on_a_public_address_refuses_to_start(host: str) -> None:
    with pytest.raises(ConfigError, match=rf"listens on {host} with no API keys"):
        check_exposure(parse_auth({}), host)
    check_exposure(parse_auth({"required": False}), host)  # said explicitly: allowed
    check_exposure(parse_auth({"keys": [key()]}), host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_no_keys_on_loopback_is_fine(host: str) -> None:
    check_exposure(parse_auth({}), host)


def test_redis_is_optional_and_checked() -> None:
    assert parse_redis({}).url is None and parse_redis({}).on_error == "allow"
    config = parse_redis({"url": "redis://127.0.0.1:6379/0", "on_error": "deny"})
    assert (config.url, config.on_error) == ("redis://127.0.0.1:6379/0", "deny")
    with pytest.raises(ConfigError, match=r"redis\.url: expected a redis://"):
        parse_redis({"url": "http://x:p4ssw0rd@host"})
    with pytest.raises(ConfigError, match=r"redis\.on_error: expected allow or deny"):
        parse_redis({"on_error": "maybe"})


def test_metrics_behind_keys_needs_keys(tmp_path: Any) -> None:
    from gateway.config.file import parse_config

    config = {"server": {"metrics_auth": True}, "models": [{"name": "m", "engine": "standin"}]}
    with pytest.raises(ConfigError, match=r"server\.metrics_auth: true, but auth\.keys is empty"):
        parse_config(config, base_dir=tmp_path)
