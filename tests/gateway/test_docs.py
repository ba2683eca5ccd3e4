"""The configuration reference (docs/configuration.md) against the config's dataclasses: every key a
section accepts is documented there, nothing else is, and every default it states is the one the
code applies. A new setting is a field with a default; this test says where it must be written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.auth import AuthConfig, KeyConfig, RedisConfig
from gateway.config.fields import defaults, keys
from gateway.config.file import (
    GatewayConfig,
    HealthConfig,
    ModelConfig,
    OutlierConfig,
    ServerConfig,
)
from gateway.config.llama_server import LlamaServerConfig
from gateway.config.scaling import ScalingConfig
from gateway.config.upstreams import DnsUpstream, UpstreamConfig

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# What the file says for a key, by its section's path in the YAML reference (models[0] as
# "models", an upstream as "models.upstreams").
SECTIONS: dict[str, tuple[type, ...]] = {
    "server": (ServerConfig,),
    "health": (HealthConfig,),
    "redis": (RedisConfig,),
    "scaling": (ScalingConfig,),
    "llama_server": (LlamaServerConfig,),
    "auth": (AuthConfig,),
    "auth.keys": (KeyConfig,),
    "models": (ModelConfig,),
    "models.outlier": (OutlierConfig,),
    "models.upstreams": (UpstreamConfig, DnsUpstream),
}
_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_DEFAULT = re.compile(r"default:? (-?\d+(?:\.\d+)?)(?![\d.])(?: (KiB|MiB|GiB))?")


def _block() -> str:
    text = REFERENCE.read_text()
    return text.split("```yaml\n", 1)[1].split("```", 1)[0]


def _first(value: Any) -> dict[str, Any]:
    return value[0] if isinstance(value, list) else value


def test_every_key_of_every_section_is_documented_and_nothing_else() -> None:
    doc = yaml.safe_load(_block())
    assert set(doc) == keys(GatewayConfig)
    model = doc["models"][0]
    assert set(model) == keys(
        ModelConfig, ("min_replicas", "gpus_auto", "server_binary", "unserved")
    )
    for path in ("server", "health", "redis", "scaling", "llama_server", "auth"):
        assert set(doc[path]) == keys(*SECTIONS[path]), path
    assert set(model["outlier"]) == keys(OutlierConfig)
    key_fields = keys(KeyConfig, ("digest",)) | {"key_sha256"}  # or key_env, or key
    assert set(_first(doc["auth"]["keys"])) == key_fields


def _documented_defaults() -> list[tuple[str, str, float]]:
    """(section path, key, default) for each key whose comment states a numeric default."""
    found: list[tuple[str, str, float]] = []
    path: list[tuple[int, str]] = []
    key = ""
    for line in _block().splitlines():
        entry = re.match(r"^(\s*)(?:- )?(\w+):", line)
        if entry and not line.strip().startswith("#"):
            indent = len(entry.group(1)) + (2 if "- " in line[: len(entry.group(1)) + 2] else 0)
            path = [(i, name) for i, name in path if i < indent]
            key = entry.group(2)
            path.append((indent, key))
        comment = line.split("#", 1)[1] if "#" in line else ""
        if (match := _DEFAULT.search(comment)) and key:
            section = ".".join(name for _, name in path[:-1])
            value = float(match.group(1)) * _UNITS.get(match.group(2) or "", 1)
            found.append((section, key, value))
    return found


@pytest.mark.parametrize(("section", "key", "value"), _documented_defaults())
def test_each_default_the_reference_states_is_the_code_s(
    section: str, key: str, value: float
) -> None:
    classes = SECTIONS.get(section)
    assert classes is not None, f"{section}.{key}: a default in a section this test cannot check"
    applied = [defaults(cls)[key] for cls in classes if key in defaults(cls)]
    assert applied, f"{section}.{key}: documented with a default, but has none in the code"
    assert applied[0] == value, f"{section}.{key}: documented {value:g}, the code's {applied[0]}"


def test_the_reference_states_defaults_at_all() -> None:
    assert len(_documented_defaults()) >= 15  # the parser above still finds them


@pytest.mark.parametrize("section", ["server", "health", "models", "models.outlier", "redis"])
def test_every_numeric_default_is_stated(section: str) -> None:
    stated = {key for where, key, _ in _documented_defaults() if where == section}
    (cls,) = SECTIONS[section]
    numeric = {
        key
        for key, value in defaults(cls).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    numeric.discard("capacity")  # its default is auto (4 for a llama model), said in words
    assert numeric <= stated, f"{section}: no '(default N)' for {sorted(numeric - stated)}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_in_the_readme_and_docs_resolves() -> None:
    root = REFERENCE.parents[1]
    pages = [
        root / "README.md",
        root / "tests" / "README.md",
        *sorted((root / "docs").glob("*.md")),
    ]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, fragment = target.partition("#")
            linked = page if not path else (page.parent / path).resolve()
            headings = (
                re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                if (linked.suffix == ".md" and linked.exists())
                else []
            )
            if not linked.exists() or (fragment and fragment not in map(_anchor, headings)):
                broken.append(f"{page.name}: {target}")
    assert not broken, broken
