"""The status page (/ui) in a real browser: Debian's Chromium driven by Playwright, against the real
gateway with stand-in workers."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.support import CHAT, GatewayProcess, api_key, running_gateway, standin

ADMIN, TEAM = "sk-admin-status-page-0123456789", "sk-team-status-page-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "auth": {"keys": [api_key("ops", ADMIN, admin=True), api_key("team", TEAM)]},
        "models": [
            standin("slow", token_delay=0.2, tokens=20),
            {**standin("lazy"), "replicas": {"min": 0, "max": 1}},
        ],
    }
    yield from running_gateway(config, tmp_path_factory.mktemp("ui"), api_key=ADMIN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, gateway: GatewayProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(gateway.url + "/ui")
    yield page
    context.close()


def sign_in(page: Page, key: str) -> None:
    page.fill("#key", key)
    page.click("#login button[type=submit]")


def ask(gateway: GatewayProcess, key: str = TEAM) -> None:
    with gateway.client() as client:
        client.post(
            "/v1/chat/completions",
            json={"model": "slow", **CHAT},
            headers={"Authorization": f"Bearer {key}"},
        )


def test_without_the_admin_key_the_page_shows_nothing_and_says_why(page: Page) -> None:
    expect(page.locator("#problem")).to_contain_text("401")
    expect(page.locator("#replicas tbody tr")).to_have_count(0)
    sign_in(page, TEAM)  # a key, but not an admin's
    expect(page.locator("#problem")).to_contain_text("403")
    assert page.evaluate("sessionStorage.getItem('llm-gateway-admin-key')") == TEAM
    assert TEAM not in page.url


def test_the_page_shows_replicas_and_a_request_moving_through(
    page: Page, gateway: GatewayProcess
) -> None:
    sign_in(page, ADMIN)
    slow = page.locator("#replicas tr[data-replica='slow[0]']")
    expect(slow).to_contain_text("ready")
    expect(page.locator("#models tbody")).to_contain_text("unloaded")  # lazy, on demand
    asking = threading.Thread(target=ask, args=(gateway,))
    asking.start()
    expect(slow.locator("td").nth(5)).to_have_text("1", timeout=10_000)  # in flight
    expect(slow).to_contain_text("busy")
    asking.join()
    row = page.locator("#requests tbody tr").first
    expect(row).to_contain_text("team", timeout=10_000)
    row.click()
    expect(page.locator("#request-detail")).to_contain_text("done after")
    assert page.locator("#chart-requests").is_visible()


def test_a_config_reload_from_the_page_shows_its_result(page: Page) -> None:
    sign_in(page, ADMIN)
    page.click("#reload")
    expect(page.locator("#reload-result")).to_contain_text('"changes"')
    expect(page.locator("#reload-result")).to_contain_text("no changes")


def test_admin_actions_are_refused_without_the_admin_key(page: Page) -> None:
    sign_in(page, ADMIN)
    restart = page.locator("#replicas tr[data-replica='slow[0]'] button")
    expect(restart).to_have_text("Restart")
    page.click("#forget")  # the page still shows the last data, but actions need the key
    page.click("#reload")
    expect(page.locator("#reload-result")).to_contain_text("401")
    restart.click()
    expect(page.locator("#reload-result")).to_contain_text("401")


def test_the_page_and_its_files_forbid_framing_and_foreign_scripts(
    page: Page, gateway: GatewayProcess
) -> None:
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Security Policy" in m.text else None)
    page.reload()
    sign_in(page, ADMIN)  # the page runs under its policy: its own script, style and calls
    expect(page.locator("#replicas tr[data-replica='slow[0]']")).to_contain_text("ready")
    assert violations == []
    for path in ("/ui", "/ui/app.js", "/ui/style.css"):
        headers = httpx.get(gateway.url + path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "default-src 'self'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
