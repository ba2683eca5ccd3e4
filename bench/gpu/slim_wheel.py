"""Make a llama-cpp-python CUDA wheel built by build_llama_cuda.sh small and loadable elsewhere.

    python bench/gpu/slim_wheel.py IN.whl OUT_DIR [--patchelf PATH]

- Wheels cannot hold symlinks, so each shared library is in it three times (libX.so, libX.so.0,
  libX.so.0.V): keep only the names that are loaded (libllama.so and libggml.so by
  llama_cpp's ctypes, the libX.so.0 sonames by the dynamic linker). The CUDA one is ~34 MB.
  llama.cpp's own install also puts lib/ and include/ at the wheel's top level (site-packages/lib,
  three more copies of every library): nothing loads them, drop them.
- Built against a stub libcuda (build_llama_cuda.sh), libggml-cuda lacks its NEEDED entry for
  libcuda.so.1 (the linker drops a library that supplied no symbol), so its cu* driver calls
  would stay unresolved and ctypes' RTLD_NOW load would fail: add it back with patchelf, and
  reset its RUNPATH to $ORIGIN (the build's temporary folders are meaningless elsewhere).
- RECORD is rewritten to match.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

KEEP = {
    "libllama.so",
    "libggml.so",
    "libggml.so.0",
    "libggml-base.so.0",
    "libggml-cpu.so.0",
    "libggml-cuda.so.0",
}


def main() -> None:
    src, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    argv = sys.argv
    patchelf = argv[argv.index("--patchelf") + 1] if "--patchelf" in argv else "patchelf"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(src) as zin:
            zin.extractall(root)
        for top in root.iterdir():
            if top.name != "llama_cpp" and not top.name.endswith(".dist-info"):
                shutil.rmtree(top) if top.is_dir() else top.unlink()
        lib = root / "llama_cpp" / "lib"
        for path in lib.iterdir():
            if path.name not in KEEP:
                path.unlink()
        cuda = lib / "libggml-cuda.so.0"
        subprocess.run([patchelf, "--add-needed", "libcuda.so.1", str(cuda)], check=True)
        subprocess.run([patchelf, "--set-rpath", "$ORIGIN", str(cuda)], check=True)
        (record,) = root.glob("*.dist-info/RECORD")
        rows = []
        files = sorted(p for p in root.rglob("*") if p.is_file() and p != record)
        for path in files:
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{path.relative_to(root).as_posix()},sha256={digest},{len(data)}")
        rows.append(f"{record.relative_to(root).as_posix()},,")
        record.write_text("\n".join(rows) + "\n")
        out = out_dir / src.name
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
            for path in [*files, record]:
                zout.write(path, path.relative_to(root).as_posix())
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
