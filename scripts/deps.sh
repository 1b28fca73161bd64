#!/usr/bin/env bash
# Installs what patchline's build and tests need on Debian bookworm, only
# what is missing; safe to run again. Usage: scripts/deps.sh [extra apt packages...]
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc, g++, libc6-dev: cgo (gocv and decode are C++). chromium: the
# console's browser test (headless, with a fake camera).
pkgs=(gcc g++ libc6-dev libopencv-dev libavutil-dev ffmpeg pkg-config ca-certificates chromium "$@")
# npm fetches ONNX Runtime; any npm will do (the machine may have its own Node.js).
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v go >/dev/null || { echo "deps: Go 1.26 is required (https://go.dev/doc/install)" >&2; exit 1; }
scripts/fetch-onnxruntime.sh
