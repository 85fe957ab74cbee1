#!/usr/bin/env bash
# Make a local stand-in for python:3.11-slim where no container registry is reachable
# (this machine and CI): Debian bookworm by debootstrap with python3, venv and this
# machine's CA bundle (so pip inside image builds trusts the same proxy as the host).
# Prints the image name; BASE_IMAGE=$(.ci/make-base-image.sh) docker compose build
#
#   .ci/make-base-image.sh [--arch amd64|arm64] [NAME]
#
# --arch arm64 (default amd64) makes neukonfig-base:bookworm-arm64 for a Raspberry Pi's
# images, run here under qemu (binfmt set up if needed; debootstrap takes a few minutes).
# An existing image of that name is reused.
set -euo pipefail
ARCH=amd64
if [ "${1:-}" = "--arch" ]; then
    ARCH="${2:?--arch needs amd64 or arm64}"
    shift 2
fi
case "$ARCH" in
    amd64) NAME="${1:-neukonfig-base:bookworm}" ;;
    arm64) NAME="${1:-neukonfig-base:bookworm-arm64}" ;;
    *) echo "unsupported --arch $ARCH (amd64 or arm64)" >&2; exit 2 ;;
esac
if docker image inspect "$NAME" >/dev/null 2>&1; then
    echo "$NAME"
    exit 0
fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >&2
# The mirror comes from this machine's apt sources, never from the repository.
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR="${MIRROR:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}"
ROOTFS=$(mktemp -d)
cleanup() {
    # A failed debootstrap can leave /proc, /sys or /dev mounted inside the root file
    # system: unmount them, and never let rm cross into another file system.
    { grep -o " $ROOTFS/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do
        umount -l "$m" || true
    done
    rm -rf --one-file-system "$ROOTFS"
}
trap cleanup EXIT

if [ "$ARCH" = amd64 ]; then
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
    exit 0
fi

# arm64: the kernel runs aarch64 binaries through qemu-user-static. The F flag (Debian's
# default) opens the interpreter at registration, so chroots and containers need no qemu.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    echo "setting up qemu-aarch64 binfmt ..." >&2
    if ! command -v update-binfmts >/dev/null || [ ! -e /usr/bin/qemu-aarch64-static ]; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support >&2
    fi
    [ -e /proc/sys/fs/binfmt_misc/register ] \
        || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 >&2
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || { echo "qemu-aarch64 binfmt is not enabled" >&2; exit 1; }

echo "debootstrap arm64 bookworm from $MIRROR under qemu (a few minutes) ..." >&2
debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >/dev/null
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

# `docker import --platform linux/arm64` is accepted by engine 20.10 but still records the
# host's architecture, and the classic builder keeps a base image's architecture. So load
# a one-layer image archive instead, whose config says arm64.
ARCHIVE=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'cleanup; rm -rf "$ARCHIVE"' EXIT
tar -C "$ROOTFS" -cf "$ARCHIVE/layer.tar" .
DIFF_ID=$(sha256sum "$ARCHIVE/layer.tar" | cut -d' ' -f1)
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$ARCHIVE/config.json" <<EOF
{"architecture": "arm64", "variant": "v8", "os": "linux", "created": "$CREATED",
 "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", "LANG=C.UTF-8"],
            "Cmd": ["python3"]},
 "rootfs": {"type": "layers", "diff_ids": ["sha256:$DIFF_ID"]},
 "history": [{"created": "$CREATED", "created_by": ".ci/make-base-image.sh --arch arm64"}]}
EOF
cat >"$ARCHIVE/manifest.json" <<EOF
[{"Config": "config.json", "RepoTags": ["$NAME"], "Layers": ["layer.tar"]}]
EOF
tar -C "$ARCHIVE" -c manifest.json config.json layer.tar | docker load >&2
echo "$NAME"
