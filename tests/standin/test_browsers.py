"""Web pages against real gateways, in Debian's Chromium (driven by Playwright): a page on another
origin must not drive a keyless gateway, nor reach it by DNS rebinding, nor frame the status
page; a page on an origin listed in server.cors calls the gateway and reads its answers.

The other origins are a tiny http.server on its own port (http://127.0.0.1:PORT, and the same
server as http://localhost:PORT: another origin, not listed), and evil.example, which Chromium
resolves to 127.0.0.1 (--host-resolver-rules), as a rebinding attacker's DNS would.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support import CHAT, GatewayProcess, api_key, assert_error, running_gateway, standin

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KEY, ADMIN = "sk-browser-app-0123456789", "sk-browser-admin-0123456789"
RPM = 1000


class Site:
    """Another origin: an empty page served by http.server on a port of its own."""

    def __init__(self, folder: Path) -> None:
        (folder / "index.html").write_text("<!doctype html><title>another site</title>")
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    served = Site(tmp_path_factory.mktemp("site"))
    yield served
    served.close()


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """What the shipped config.yaml runs: no keys, on loopback."""
    config = {"models": [standin("m")]}
    yield from running_gateway(config, tmp_path_factory.mktemp("keyless"))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[GatewayProcess]:
    """A gateway with a key, which a browser app on `site`'s origin may call (server.cors)."""
    keys = [api_key("ops", ADMIN, admin=True), api_key("app", KEY, rpm=RPM)]
    config = {"server": {"cors": [site.origin]}, "auth": {"keys": keys}, "models": [standin("m")]}
    yield from running_gateway(config, tmp_path_factory.mktemp("keyed"), api_key=ADMIN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    args = ["--host-resolver-rules=MAP evil.example 127.0.0.1", "--disable-features=HttpsUpgrades"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


# What the attacker page did: `no-cors` text/plain POSTs, which need no preflight.
ATTACK = """async (gateway) => {
  const post = (path, body) => fetch(gateway + path, {
    method: "POST", mode: "no-cors", headers: {"content-type": "text/plain"}, body});
  await post("/admin/workers/m/0/restart", "");
  await post("/admin/reload", "");
  await post("/v1/chat/completions", JSON.stringify({model: "m", messages: [
    {role: "user", content: "from another site"}]}));
  return "sent";
}"""


def seen_by(gateway: GatewayProcess) -> tuple[Any, ...]:
    """The worker's pid, the last reload and the requests answered, as the admin routes say."""
    with gateway.client() as client:
        return (
            gateway.workers()[0]["pid"],
            client.get("/admin/config").json()["last_reload"],
            client.get("/admin/requests").json()["data"],
        )


LINK = """(url) => { const a = document.createElement("a"); a.href = url; a.textContent = "status";
                     document.body.appendChild(a); }"""


def test_a_page_on_another_origin_cannot_drive_a_keyless_gateway_but_link_to_it(
    page: Page, keyless: GatewayProcess, site: Site
) -> None:
    before = seen_by(keyless)
    page.goto(site.origin + "/")
    assert page.evaluate(ATTACK, keyless.url) == "sent"  # opaque answers: the page reads none
    assert seen_by(keyless) == before  # no restart, no reload, no chat answered
    assert "refused a browser's request (origin_not_allowed)" in keyless.log()
    page.evaluate(LINK, keyless.url + "/ui")  # a link followed from that page opens /ui
    page.click("text=status")
    expect(page).to_have_title("llm-gateway")
    expect(page.locator("#replicas tr[data-replica='m[0]']")).to_contain_text("ready")


def test_dns_rebinding_is_refused_while_clients_without_browser_headers_are_served(
    page: Page, keyless: GatewayProcess
) -> None:
    response = page.goto(f"http://evil.example:{keyless.port}/ui")
    assert response is not None and response.status == 403
    assert response.json()["error"]["code"] == "host_not_allowed"
    evil = httpx.get(keyless.url + "/admin/workers", headers={"Host": "evil.example"})
    assert_error(evil, 403, "host_not_allowed")
    local = httpx.get(keyless.url + "/health", headers={"Host": f"localhost:{keyless.port}"})
    assert local.status_code == 200
    with keyless.client() as client:  # curl and SDKs: no Origin, no Sec-Fetch-*
        assert client.post("/v1/chat/completions", json={"model": "m", **CHAT}).status_code == 200
        assert client.post("/admin/reload").status_code == 200


CALL = """async ([gateway, key, body]) => {
  const response = await fetch(gateway + "/v1/chat/completions", {method: "POST",
    headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json",
              "X-Stainless-Lang": "js"}, body: JSON.stringify(body)});
  return {status: response.status, id: response.headers.get("x-request-id"),
          rpm: response.headers.get("x-ratelimit-limit-requests"), text: await response.text()};
}"""


def call(page: Page, gateway: GatewayProcess, key: str, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = page.evaluate(CALL, [gateway.url, key, {"model": "m", **CHAT, **body}])
    return answer


def test_a_page_on_a_listed_origin_calls_the_gateway_and_reads_its_answers_others_cannot(
    page: Page, keyed: GatewayProcess, site: Site
) -> None:
    page.goto(site.origin + "/")
    answer = call(page, keyed, KEY)
    assert answer["status"] == 200, answer
    assert answer["id"] and answer["rpm"] == str(RPM)  # exposed headers
    assert '"chat.completion"' in answer["text"]
    streamed = call(page, keyed, KEY, stream=True)  # the relay's raw ASGI answer
    assert streamed["status"] == 200 and streamed["id"] and "data: [DONE]" in streamed["text"]
    refused = call(page, keyed, "sk-not-a-key-0123456789")  # the gateway's own error
    assert refused["status"] == 401 and refused["id"] and "invalid_api_key" in refused["text"]
    page.goto(f"http://localhost:{site.port}/")  # the same site by another name: not listed
    with pytest.raises(Exception, match="Failed to fetch"):
        call(page, keyed, KEY)


def test_a_preflight_from_a_listed_origin_is_answered(keyed: GatewayProcess, site: Site) -> None:
    asked = "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    headers = {
        "Origin": site.origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": asked,
    }
    response = httpx.options(keyed.url + "/v1/chat/completions", headers=headers)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == site.origin
    assert response.headers["access-control-allow-headers"] == asked
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["vary"] == "Origin"
    other = httpx.options(
        keyed.url + "/v1/chat/completions", headers={**headers, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_another_origin_cannot_frame_the_status_page(
    page: Page, keyed: GatewayProcess, site: Site
) -> None:
    page.goto(site.origin + "/")
    with page.expect_event("console", lambda m: "frame-ancestors" in m.text, timeout=10_000):
        page.evaluate(
            """(url) => { const frame = document.createElement("iframe");
                         frame.src = url; document.body.appendChild(frame); }""",
            keyed.url + "/ui",
        )
    framed = page.frame_locator("iframe")
    expect(framed.locator("#login")).to_have_count(0)
