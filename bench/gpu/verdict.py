"""Judge the evidence that bench/gpu/run_check.sh collected: is the GPU replica on the GPU and the
CPU replica not? Prints one line per check and exits 1 if any failed.

    python bench/gpu/verdict.py OUT_DIR [--no-gpu]

OUT_DIR holds admin_workers.json, status.json ({model: worker /status}), evidence.txt (the
nvidia-smi compute-apps CSV between the "## nvidia-smi compute-apps" marker and the next "##"
line, and each worker's CUDA_VISIBLE_DEVICES from /proc), completions.json and gateway.log.
--no-gpu (a dry run on a machine without a GPU) skips the checks that need nvidia-smi.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def smi_pids(evidence: str) -> set[int]:
    match = re.search(r"## nvidia-smi compute-apps\n(.*?)(?:\n##|\Z)", evidence, re.S)
    pids: set[int] = set()
    for line in (match[1] if match else "").splitlines():
        first = line.split(",")[0].strip()
        if first.isdigit():
            pids.add(int(first))
    return pids


def main() -> int:
    out = Path(sys.argv[1])
    gpu = "--no-gpu" not in sys.argv
    results: list[tuple[bool, str]] = []

    def check(ok: bool, what: str) -> None:
        results.append((bool(ok), what))

    admin = json.loads((out / "admin_workers.json").read_text())
    workers = admin["data"]
    by_model = {w["model"]: w for w in workers}
    status = json.loads((out / "status.json").read_text())
    completions = json.loads((out / "completions.json").read_text())
    log = (out / "gateway.log").read_text(errors="replace")
    evidence = (out / "evidence.txt").read_text(errors="replace") if gpu else ""

    g, c = by_model.get("tiny-gpu", {}), by_model.get("tiny-cpu", {})
    check(
        g.get("device") == "0", f"/admin/workers tiny-gpu device == '0' (got {g.get('device')!r})"
    )
    check(
        c.get("device") == "cpu",
        f"/admin/workers tiny-cpu device == 'cpu' (got {c.get('device')!r})",
    )
    sg, sc = status.get("tiny-gpu", {}), status.get("tiny-cpu", {})
    check(
        sg.get("device") == "0" and sg.get("n_gpu_layers") == -1,
        f"tiny-gpu /status device/n_gpu_layers = {sg.get('device')!r}/{sg.get('n_gpu_layers')!r}"
        " (want '0'/-1)",
    )
    check(
        sc.get("device") == "cpu" and sc.get("n_gpu_layers") == 0,
        f"tiny-cpu /status device/n_gpu_layers = {sc.get('device')!r}/{sc.get('n_gpu_layers')!r}"
        " (want 'cpu'/0)",
    )
    check(
        sg.get("pid") == g.get("pid") and sc.get("pid") == c.get("pid"),
        "worker /status pids match /admin/workers pids",
    )
    for model in ("tiny-gpu", "tiny-cpu"):
        for kind in ("chat", "completion"):
            body = completions.get(f"{model} {kind}", {})
            choices = body.get("choices") if isinstance(body, dict) else None
            check(
                bool(choices) and body.get("model") == model,
                f"{model} answered a {kind} request (usage {body.get('usage')})",
            )
    offload = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", log)
    layers = re.findall(r"load_tensors: layer +\d+ assigned to device (\S+),", log)
    on_cuda, on_cpu = layers.count("CUDA0"), layers.count("CPU")
    if gpu:
        full = [o for o in offload if o[0] == o[1] != "0"]
        check(
            len(full) == 1 and all(o in full or o[0] == "0" for o in offload),
            f"llama log: all layers offloaded to GPU in one worker, none in the other ({offload})",
        )
        check(
            on_cuda > 0 and on_cuda == on_cpu,
            f"llama log: {on_cuda} layers assigned to CUDA0 (GPU worker), {on_cpu} to CPU"
            " (CPU worker)",
        )
        cuda_buffers = re.findall(r"CUDA0 model buffer size\s*=\s*([\d.]+ MiB)", log)
        check(len(cuda_buffers) == 1, f"llama log: one CUDA0 model buffer ({cuda_buffers})")
        pids = smi_pids(evidence)
        check(g.get("pid") in pids, f"nvidia-smi lists the GPU worker pid {g.get('pid')} ({pids})")
        check(
            c.get("pid") not in pids, f"nvidia-smi does not list the CPU worker pid {c.get('pid')}"
        )
        env_lines = re.findall(r"pid (\d+) env: (CUDA_VISIBLE_DEVICES=\S*)", evidence)
        check(
            (str(g.get("pid")), "CUDA_VISIBLE_DEVICES=0") in env_lines
            and (str(c.get("pid")), "CUDA_VISIBLE_DEVICES=") in env_lines,
            f"/proc/PID/environ: {env_lines}",
        )
    else:
        check(on_cpu > 0 and on_cuda == 0, f"llama log: {on_cpu} layers on CPU, none on CUDA0")
    for ok, what in results:
        print(("PASS " if ok else "FAIL ") + what)
    failed = sum(not ok for ok, _ in results)
    print(f"VERDICT: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
