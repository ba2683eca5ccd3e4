"""The llama.cpp that set-up installs has no AMX backend unless opted in (docs/builds.md).

On a host without AMX (an AMD EPYC, say) a build left on plain -march=native lacks the AMX backend
too, and would still crash on a Sapphire Rapids Xeon. So the host's own library proves little:
the decisive check compiles for an AMX target (-march=sapphirerapids) with the flags set-up
recorded, in the order CMake passes them, and finds the macros that gate ggml's AMX code off.
"""

from __future__ import annotations

import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

# AMX is an x86-64 extension: elsewhere (an ARM Mac, Graviton) set-up passes no AMX switch,
# which the same tests check instead of compiling for an x86 target.
X86_64 = platform.machine() in ("x86_64", "AMD64")
BUILD_RECORD = Path(sys.prefix) / "llama-cpp-build.env"


def build_record() -> dict[str, str]:
    assert BUILD_RECORD.exists(), "llama-cpp-python was not installed by deploy/build_llama.sh"
    lines = BUILD_RECORD.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def opted_in() -> bool:
    return build_record()["LLAMA_AMX"] == "1"


def recorded_c_flags() -> list[str]:
    """The CMAKE_C_FLAGS set-up built llama.cpp with."""
    for arg in shlex.split(build_record()["CMAKE_ARGS"]):
        if arg.startswith("-DCMAKE_C_FLAGS="):
            return shlex.split(arg.removeprefix("-DCMAKE_C_FLAGS="))
    return []


def amx_macros(flags: list[str]) -> set[str]:
    """The __AMX_*__ macros a compile for Sapphire Rapids defines with `flags` (CMake's order:
    CMAKE_C_FLAGS first, then ggml's -march)."""
    command = ["cc", *flags, "-march=sapphirerapids", "-dM", "-E", "-x", "c", "/dev/null"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"#define (__AMX_\w+__)", out))


def switched_off() -> bool:
    return any(flag.startswith("-mno-amx") for flag in recorded_c_flags())


def test_without_the_switch_an_amx_target_turns_amx_on() -> None:
    # Shows that the next test can fail: the compiler does target AMX unless told not to.
    if not X86_64:
        assert not switched_off()  # no such target here, and no -mno-amx flag GCC would refuse
        return
    assert {"__AMX_TILE__", "__AMX_INT8__"} <= amx_macros([])


def test_the_recorded_build_flags_turn_amx_off_even_for_an_amx_cpu() -> None:
    if not X86_64 or opted_in():
        assert not switched_off()
    else:
        assert amx_macros(recorded_c_flags()) == set()


def test_the_installed_ggml_has_no_amx_backend_unless_opted_in() -> None:
    import llama_cpp

    libraries = list((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*"))
    assert libraries, "no libggml-cpu in the llama_cpp package"
    has_amx = any(b"ggml_backend_amx_buffer_type" in lib.read_bytes() for lib in libraries)
    info = llama_cpp.llama_print_system_info().decode()
    assert opted_in() or not (has_amx or "AMX_INT8" in info), info
