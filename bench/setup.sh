#!/usr/bin/env bash
# Installs what the benchmarks need beyond node_modules: websockify (the single-hop TCP->WebSocket baseline).
set -euo pipefail
if ! command -v websockify >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq websockify
fi
websockify --help >/dev/null 2>&1 || true
