#!/usr/bin/env bash
# Make a local stand-in for python:3.11-slim where no container registry is reachable
# (this machine and CI): Debian bookworm by debootstrap with python3, venv and this
# machine's CA bundle (so pip inside image builds trusts the same proxy as the host).
# Prints the image name; BASE_IMAGE=$(.ci/make-base-image.sh) docker compose build
set -euo pipefail
NAME="${1:-neukonfig-base:bookworm}"
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "$NAME"
    exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >&2
# The mirror comes from this machine's apt sources, never from the repository.
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR="${MIRROR:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}"
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm from $MIRROR (about a minute) ..." >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >/dev/null
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$NAME" >&2
echo "$NAME"
