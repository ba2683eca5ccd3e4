"""Take docs/status-page.png: the status page of a gateway with stand-in workers under load.

.venv/bin/python -m bench.screenshot     (needs Debian's chromium and the dev extras)
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.support import CHAT, GatewayProcess, standin

OUT = Path(__file__).resolve().parents[1] / "docs" / "status-page.png"


def main() -> None:
    models = [
        standin("smollm2", replicas=2, token_delay=0.05, tokens=30),
        standin("gemma3-270m", token_delay=0.08, tokens=20),
        {**standin("qwen-7b"), "replicas": {"min": 0, "max": 1}},
    ]
    with tempfile.TemporaryDirectory() as folder:
        gateway = GatewayProcess({"models": models}, Path(folder)).start()
        stop = threading.Event()
        clients = [threading.Thread(target=_client, args=(gateway, stop)) for _ in range(5)]
        try:
            for client in clients:
                client.start()
            time.sleep(40)  # a few dozen seconds of charts
            _shoot(gateway.url)
        finally:
            stop.set()
            for client in clients:
                client.join()
            gateway.stop()


def _client(gateway: GatewayProcess, stop: threading.Event) -> None:
    with gateway.client() as client:
        while not stop.is_set():
            model = random.choice(["smollm2", "smollm2", "gemma3-270m"])
            client.post("/v1/chat/completions", json={"model": model, "stream": True, **CHAT})


def _shoot(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"))
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url + "/ui")
        page.wait_for_selector("#requests tbody tr")
        page.locator("#requests tbody tr").first.click()
        time.sleep(2.5)
        page.screenshot(path=str(OUT), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
