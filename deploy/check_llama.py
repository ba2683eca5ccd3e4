"""Prove the installed llama-cpp-python works on this CPU: a multi-token generation on a real model.

    python deploy/check_llama.py MODEL.gguf

`import llama_cpp` and one-token prompts pass even on a build that crashes on every real prompt
(ggml's AMX path on Sapphire/Emerald Rapids Xeons dies on the first batch of more than one token),
so this generates from a prompt of several tokens, in a child process whose death it can name.
Exit 0 when it works; otherwise a message naming the cause and the switch, and exit 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

PROMPT = "Hello world, how are you today? Tell me about the weather"

_CHILD = """
import sys, llama_cpp
print(llama_cpp.llama_print_system_info().decode().strip(), flush=True)
llm = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
out = llm.create_completion(sys.argv[2], max_tokens=4, temperature=0)
print("generated:", repr(out["choices"][0]["text"]), flush=True)
"""

_ADVICE = """\
llama.cpp {how} on a multi-token prompt: the llama-cpp-python in this venv does not work on
this CPU ({cpu}).
  - On an Intel Xeon with AMX (amx_tile in /proc/cpuinfo) built with LLAMA_AMX=1, ggml's AMX
    backend crashes (llama.cpp issue 20824): rebuild without it, `make setup LLAMA_AMX=0`.
  - A build made on another CPU (-march=native) dies with SIGILL here: `make setup LLAMA_REBUILD=1`.
  - Other ggml flags: LLAMA_CMAKE_ARGS="..." make setup.
See docs/builds.md "CPU builds".
"""


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    models = [
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")
    ]
    return (models[0] if models else "unknown CPU") + (" with AMX" if "amx_tile" in text else "")


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"crashed ({signal.Signals(-returncode).name}, signal {-returncode})"
    return f"failed (exit code {returncode})"


def main(model: str) -> int:
    result = subprocess.run([sys.executable, "-c", _CHILD, model, PROMPT], check=False)
    if result.returncode == 0:
        print("llama-cpp-python build check passed: multi-token generation works on this CPU")
        return 0
    print(_ADVICE.format(how=describe(result.returncode), cpu=cpu_model()), file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
