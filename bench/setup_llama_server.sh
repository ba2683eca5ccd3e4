#!/usr/bin/env bash
# llama.cpp's own llama-server, the batching peer of scenario 9: the same build the gateway's
# `engine: llama-server` uses (`make llama-server`, deploy/build_llama_server.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec deploy/build_llama_server.sh .llama-server
