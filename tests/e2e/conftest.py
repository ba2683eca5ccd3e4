"""The llama gateway every end-to-end module shares: started once, real models, real workers."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.e2e.pool import CONFIG
from tests.support import GatewayProcess, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    yield from running_gateway(CONFIG, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="package")
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
