"""Drive a running gateway for the GPU pinning check (stdlib only: the device has no curl promise).

    python bench/gpu/drive.py http://127.0.0.1:8400 OUT_DIR [--ready-timeout S] [--pid GATEWAY_PID]

Waits for /ready, sends one chat and one legacy completion to each of tiny-gpu and tiny-cpu,
then saves /admin/workers, each worker's own /status and the answers into OUT_DIR
(admin_workers.json, status.json, completions.json) and prints `WORKER <model> <pid>` lines.
Exits 1 if the gateway never became ready.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MODELS = ("tiny-gpu", "tiny-cpu")


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def main() -> int:
    base, out = sys.argv[1].rstrip("/"), Path(sys.argv[2])
    ready_timeout = (
        float(sys.argv[sys.argv.index("--ready-timeout") + 1])
        if ("--ready-timeout" in sys.argv)
        else 180.0
    )
    gateway_pid = int(sys.argv[sys.argv.index("--pid") + 1]) if "--pid" in sys.argv else None
    start = time.monotonic()
    ready: Any = None
    while time.monotonic() - start < ready_timeout:
        if gateway_pid is not None and not Path(f"/proc/{gateway_pid}").exists():
            print(f"the gateway (pid {gateway_pid}) exited before it was ready")
            return 1
        try:
            code, ready = call(base + "/ready", timeout=5)
            if code == 200:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        print(f"NOT READY after {ready_timeout:g} s: {ready}")
        return 1
    print(f"READY after {time.monotonic() - start:.1f} s: {json.dumps(ready)}")

    answers: dict[str, Any] = {}
    for model in MODELS:
        for kind, path, body in (
            (
                "chat",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8},
            ),
            ("completion", "/v1/completions", {"prompt": "The GPU is", "max_tokens": 8}),
        ):
            t = time.monotonic()
            code, answer = call(base + path, {"model": model, **body})
            answers[f"{model} {kind}"] = answer
            print(
                f"{model} {kind}: HTTP {code} in {time.monotonic() - t:.3f} s: {json.dumps(answer)}"
            )
    (out / "completions.json").write_text(json.dumps(answers, indent=1))

    _, admin = call(base + "/admin/workers")
    (out / "admin_workers.json").write_text(json.dumps(admin, indent=1))
    print("admin/workers:", json.dumps(admin))
    statuses: dict[str, Any] = {}
    for worker in admin["data"]:
        _, status = call(worker["url"] + "/status")
        status.pop("recent", None)
        statuses[worker["model"]] = status
        print(f"WORKER {worker['model']} {worker['pid']}")
        print(f"{worker['model']} /status: {json.dumps(status)}")
    (out / "status.json").write_text(json.dumps(statuses, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
