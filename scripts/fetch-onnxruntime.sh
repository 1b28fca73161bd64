#!/usr/bin/env bash
# fetch-onnxruntime.sh — install the ONNX Runtime shared library patchline's
# analyze stage loads (via github.com/yalue/onnxruntime_go).
#
# It takes libonnxruntime.so.1 for linux/x64 out of the npm package
# onnxruntime-node@$ORT_VERSION (fetched with `npm pack`, so no install
# scripts run), checks its sha256, and installs it at
#   <repo>/.cache/onnxruntime/$ORT_VERSION/libonnxruntime.so.1
# Idempotent: if the file is already there with the right sha256 it does nothing.
# Point PATCHLINE_ORT_LIB at another copy to use that one instead.
set -euo pipefail

ORT_VERSION=1.24.3
ORT_SHA256=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
NPM_PKG="onnxruntime-node@${ORT_VERSION}"
MEMBER="package/bin/napi-v6/linux/x64/libonnxruntime.so.1"

die() { echo "fetch-onnxruntime: $*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${repo_root}/.cache/onnxruntime/${ORT_VERSION}"
dest="${dest_dir}/libonnxruntime.so.1"

sha_of() { sha256sum "$1" | awk '{print $1}'; }

if [[ -f "$dest" ]]; then
  have="$(sha_of "$dest")"
  if [[ "$have" == "$ORT_SHA256" ]]; then
    echo "fetch-onnxruntime: $dest is up to date"
    exit 0
  fi
  echo "fetch-onnxruntime: $dest has sha256 $have, want $ORT_SHA256; fetching again" >&2
fi

command -v npm >/dev/null || die "npm is required (it fetches ${NPM_PKG})"
command -v tar >/dev/null || die "tar is required"
command -v sha256sum >/dev/null || die "sha256sum is required"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-onnxruntime: npm pack ${NPM_PKG}"
tgz="$(cd "$tmp" && npm pack --ignore-scripts --silent "$NPM_PKG" | tail -n1)"
[[ -n "$tgz" && -f "$tmp/$tgz" ]] || die "npm pack ${NPM_PKG} produced no tarball"

tar -xzf "$tmp/$tgz" -C "$tmp" "$MEMBER" || die "${NPM_PKG} has no ${MEMBER}"
got="$(sha_of "$tmp/$MEMBER")"
if [[ "$got" != "$ORT_SHA256" ]]; then
  die "sha256 mismatch for ${MEMBER} from ${NPM_PKG}: got ${got}, want ${ORT_SHA256}"
fi

mkdir -p "$dest_dir"
install -m 0644 "$tmp/$MEMBER" "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "fetch-onnxruntime: installed $dest"
