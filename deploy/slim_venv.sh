#!/usr/bin/env bash
# Takes out of the image's venv what the gateway never loads (the image's size: issue 24).
#
#   deploy/slim_venv.sh VENV
#
# - faker (25 MB) and polyfactory: litestar requires them for the examples of its OpenAPI
#   schema, which the gateway turns off (openapi_config=None), so neither is ever imported
#   (tests/test_deploy.py checks that an app serving a request has not imported them).
# - llama.cpp's CMake install beside the package (site-packages/lib, site-packages/include):
#   llama_cpp loads its libraries from llama_cpp/lib, which has its own copies.
# - In llama_cpp/lib, the copies a wheel makes of each library's symlinks (libX.so and
#   libX.so.0 beside libX.so.0.Y.Z, each a full copy): symlinks again. A CUDA build's
#   libggml-cuda is hundreds of MB, three times over.
set -euo pipefail

VENV=${1:?usage: slim_venv.sh VENV}
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')

"$VENV/bin/pip" uninstall --yes --quiet faker polyfactory
rm -rf "$site/lib" "$site/include"

cd "$site/llama_cpp/lib"
for real in lib*.so.*.*; do
  [[ -f "$real" && ! -L "$real" ]] || continue
  base=${real%%.so.*}.so                    # libggml.so.0.25.3 -> libggml.so
  version=${real#"$base".}                  # -> 0.25.3
  soname=$base.${version%%.*}               # -> libggml.so.0
  for copy in "$base" "$soname"; do
    if [[ -f "$copy" && ! -L "$copy" ]] && cmp -s "$copy" "$real"; then
      ln -sf "$real" "$copy"
    fi
  done
done
# Each name still resolves (loading them is check_llama.py's job: a CUDA build loads only
# where a GPU driver is).
for name in lib*.so*; do [[ -e "$name" ]] || { echo "broken: $name" >&2; exit 1; }; done
