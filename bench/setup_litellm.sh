#!/usr/bin/env bash
# Set up LiteLLM's proxy (the peer gateway of scenario 6) in its own bench-only venv.
# Never a runtime dependency of llm-gateway. Follows /work/shared/bench-notes.md:
# `litellm[proxy]==X` does not resolve (its extra pins litellm-proxy, litellm-proxy-extras and
# litellm-enterprise versions the registry does not serve), so install the `litellm` wheel, then
# the proxy extra's other requirements read from the wheel's METADATA, with litellm-proxy-extras
# and litellm-enterprise unpinned and litellm-proxy left out; add httptools and opentelemetry-sdk.
# 1.82.7 and 1.82.8 were compromised on PyPI: refuse them.
set -euo pipefail
cd "$(dirname "$0")"
VERSION="${LITELLM_VERSION:-1.110.2}"
VENV=".venv-litellm"
PYTHON="${PYTHON:-python3}"
case "$VERSION" in
  1.82.7|1.82.8) echo "litellm $VERSION was compromised on PyPI; refusing" >&2; exit 2 ;;
esac
if [ -f "$VENV/.installed-$VERSION" ]; then
  echo "LiteLLM $VERSION already set up in bench/$VENV"; exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
"$VENV/bin/python" -m pip download --quiet --no-deps --dest "$WHEELS" "litellm==$VERSION"
REQS="$WHEELS/proxy-requirements.txt"
"$VENV/bin/python" - "$WHEELS" "$REQS" <<'PY'
import re, sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("litellm-*.whl"))
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
reqs = []
for line in text.splitlines():
    if not line.startswith("Requires-Dist:") or not re.search(r"extra\s*==\s*['\"]proxy['\"]", line):
        continue
    req = line.split(":", 1)[1].split(";", 1)[0].strip()
    name = re.split(r"[\s<>=!~\[(]", req, maxsplit=1)[0].lower()
    if name == "litellm-proxy":
        continue  # not served by the registry; the proxy itself ships in the litellm wheel
    if name in ("litellm-proxy-extras", "litellm-enterprise"):
        req = name  # unpinned: the pinned versions are not served
    reqs.append(req)
pathlib.Path(sys.argv[2]).write_text("\n".join(reqs) + "\n")
print(f"{len(reqs)} proxy requirements from {wheel.name}")
PY
"$VENV/bin/python" -m pip install --quiet "litellm==$VERSION" -r "$REQS" httptools opentelemetry-sdk
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY_DISABLED=true \
  "$VENV/bin/python" -c "import litellm.proxy.proxy_server" >/dev/null
touch "$VENV/.installed-$VERSION"
echo "LiteLLM $VERSION set up in bench/$VENV"
