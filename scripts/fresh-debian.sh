#!/usr/bin/env bash
# fresh-debian.sh — check that `make test` (or another target) works on a
# fresh Debian bookworm that has only what the README asks for: Go 1.26,
# git and make. CI machines come with much more installed, so a green CI
# can hide a package scripts/deps.sh forgot; this is how to find one.
#
# It builds a minimal bookworm (debootstrap --variant=minbase) under DIR,
# installs git and make, copies this machine's Go, clones this checkout's
# HEAD into it (with ../shared beside it when this checkout has one), and
# runs `make TARGET` there. Needs root and Debian's mirror; takes about
# 12 minutes for `make test` on 2 cores, most of it apt and the first build.
#
# Usage: sudo scripts/fresh-debian.sh [DIR] [TARGET]   (default /tmp/patchline-fresh, test)
# DIR is reused when it is already a bootstrapped system: remove it to start
# from nothing again.
set -euo pipefail

dir="${1:-/tmp/patchline-fresh}"
target="${2:-test}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "fresh-debian: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (chroot and mounts)"
goroot="$(go env GOROOT 2>/dev/null)" || die "Go is required here (it is copied into the new system)"

if [ ! -x "$dir/bin/bash" ]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  debootstrap --variant=minbase bookworm "$dir" http://deb.debian.org/debian
fi

mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {
  mkdir -p "$dir$2"
  mountpoint -q "$dir$2" || { mount --bind "$1" "$dir$2"; mounts+=("$dir$2"); }
}
for d in /proc /sys /dev /dev/pts /dev/shm; do bind "$d" "$d"; done

cp /etc/resolv.conf "$dir/etc/"
# A machine whose egress goes through its own CA (a proxy) needs it inside
# too; a plain machine has none here.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$dir/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
fi
chroot "$dir" /bin/bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git make ca-certificates >/dev/null && update-ca-certificates >/dev/null'

rm -rf "$dir/usr/local/go" && mkdir -p "$dir/usr/local" && cp -a "$goroot" "$dir/usr/local/go"
rm -rf "$dir/work/main" && mkdir -p "$dir/work"
git clone -q "$repo" "$dir/work/main"
[ -d "$repo/../shared" ] && bind "$(cd "$repo/../shared" && pwd)" /work/shared

echo "fresh-debian: make $target in $dir/work/main ($(git -C "$repo" log --oneline -1))"
chroot "$dir" /usr/bin/env -i HOME=/root TERM=dumb \
  PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
  /bin/bash -c "cd /work/main && make $target"
