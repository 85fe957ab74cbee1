#!/usr/bin/env bash
# The edge image on arm64 (a Raspberry Pi's architecture), built and run under qemu on
# this x86 machine: not part of .ci/run (it takes many minutes); run it before a release
# or after changing the dependencies or the Dockerfiles. Root, a running Docker engine and
# the project's .venv (./dev) are needed.
#
#   .ci/arm64-edge-check.sh [MODEL]        # a zoo model, default mobilenetv2
#
# 1. the arm64 base (.ci/make-base-image.sh --arch arm64; reused when there),
# 2. neukonfig-edge:arm64 from the unchanged edge_service/Dockerfile (--platform linux/arm64),
# 3. in one arm64 container, the real services at a middle cut: the cloud partition (tail)
#    and the edge partition (head) calling it, with no local fallback; one request from this
#    machine to the edge partition's /v1/infer, whose answer (arm64 head, wire, arm64 tail)
#    must match this machine's onnxruntime on the full model (same seeded input).
# Prints each step's time and the largest absolute difference; exits non-zero on a mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-mobilenetv2}"
IMAGE=neukonfig-edge:arm64
# Generous bounds: everything inside the container runs about 300x slower under qemu.
READY_TIMEOUT_S=600
ATOL=1e-3
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || { echo "no $PYTHON: run ./dev first (the host side needs the project)" >&2; exit 1; }
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0 # the classic builder honours --platform with an arm64 base
fi

WORK=$(mktemp -d)
chmod 755 "$WORK" # the image's user (uid 10001) reads the partitions
CONTAINER=""
cleanup() {
    if [ -n "$CONTAINER" ]; then docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

echo "== 1/3 arm64 base image" >&2
t=$(now)
BASE=$(.ci/make-base-image.sh --arch arm64)
base_s=$(since "$t")
echo "base $BASE: ${base_s} s" >&2

echo "== 2/3 $IMAGE from edge_service/Dockerfile" >&2
t=$(now)
docker build --platform linux/arm64 --build-arg BASE_IMAGE="$BASE" \
    -f edge_service/Dockerfile -t "$IMAGE" . >&2
image_s=$(since "$t")
arch=$(docker image inspect "$IMAGE" --format '{{.Os}}/{{.Architecture}}')
echo "image $IMAGE ($arch): ${image_s} s" >&2
[ "$arch" = linux/arm64 ] || { echo "$IMAGE is $arch, not linux/arm64" >&2; exit 1; }

echo "== 3/3 one inference through the arm64 edge and cloud partitions ($MODEL)" >&2
t=$(now)
.venv/bin/neukonfig zoo build "$MODEL" --out "$WORK/$MODEL.onnx" >&2
.venv/bin/neukonfig partition "$WORK/$MODEL.onnx" --out "$WORK/partitions" --name "$MODEL" 2>&1 \
    | tail -1 >&2
CUT=$("$PYTHON" -c '
import sys
from pathlib import Path
from neukonfig.manifest import CutKind, read_manifest
manifest = read_manifest(Path(sys.argv[1]))
splits = [cut.index for cut in manifest.cuts if cut.kind is CutKind.SPLIT]
print(splits[len(splits) // 2])
' "$WORK/partitions")

# qemu 7.2 trap: onnxruntime (pytorch/cpuinfo) segfaults at import while parsing the
# host's x86 /proc/cpuinfo. Show it a Cortex-A72's (a Pi 4) and make qemu emulate that
# CPU. Only under emulation: a real Pi has its own /proc/cpuinfo.
for ((i = 0; i < $(nproc --all); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
    printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done >"$WORK/cpuinfo"
printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n' >>"$WORK/cpuinfo"

CONTAINER="neukonfig-arm64-check-$$"
docker run -d --name "$CONTAINER" --platform linux/arm64 \
    -v "$WORK:/data:ro" -v "$WORK/cpuinfo:/proc/cpuinfo:ro" -e QEMU_CPU=cortex-a72 \
    -e NEUKONFIG_CLOUD_PARTITION_DIR=/data/partitions -e NEUKONFIG_CLOUD_CUT="$CUT" \
    -e NEUKONFIG_CLOUD_HOST=0.0.0.0 -e NEUKONFIG_CLOUD_PORT=8200 \
    -e NEUKONFIG_EDGE_PARTITION_DIR=/data/partitions -e NEUKONFIG_EDGE_CUT="$CUT" \
    -e NEUKONFIG_EDGE_CLOUD_URL=http://127.0.0.1:8200 \
    -e NEUKONFIG_EDGE_FALLBACK_LOCAL_TAIL=false -e NEUKONFIG_EDGE_CLOUD_TIMEOUT_S=300 \
    -e NEUKONFIG_EDGE_MAX_QUEUE_WAIT_S=300 -e NEUKONFIG_CLOUD_MAX_QUEUE_WAIT_S=300 \
    "$IMAGE" sh -c 'python -m cloud_service & exec python -m edge_service partition' >/dev/null
ADDRESS=$(docker inspect "$CONTAINER" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')
echo "container $CONTAINER at $ADDRESS, cut $CUT (head and tail on arm64)" >&2

if ! "$PYTHON" - "$WORK/partitions" "$ADDRESS" "$CUT" "$ATOL" "$READY_TIMEOUT_S" <<'EOF'; then
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from models.runtime import sample_input
from neukonfig import wire
from neukonfig.manifest import read_manifest
from neukonfig.protocol import FALLBACK_HEADER, INFER_PATH, TRANSFER_BYTES_HEADER

parts, address, cut = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
atol, timeout_s = float(sys.argv[4]), float(sys.argv[5])
manifest = read_manifest(parts)
feeds = {t.name: sample_input(t, batch=1, seed=0) for t in manifest.model.inputs}
session = ort.InferenceSession(str(parts / manifest.full), providers=["CPUExecutionProvider"])
names = [output.name for output in session.get_outputs()]
expected = dict(zip(names, session.run(names, feeds), strict=True))

started = time.monotonic()
for port in (8200, 8100):  # cloud, then edge: each loads and warms its partition
    while True:
        try:
            if httpx.get(f"http://{address}:{port}/health/ready", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout_s:
            sys.exit(f"port {port} not ready after {timeout_s:.0f} s")
        time.sleep(2)
print(f"both partitions ready after {time.monotonic() - started:.1f} s", file=sys.stderr)

sent = time.monotonic()
response = httpx.post(
    f"http://{address}:8100{INFER_PATH}",
    content=wire.encode(feeds),
    headers={"content-type": wire.CONTENT_TYPE},
    timeout=timeout_s,
)
infer_s = time.monotonic() - sent
if response.status_code != 200:
    sys.exit(f"/v1/infer answered {response.status_code}: {response.text[:500]}")
if FALLBACK_HEADER in response.headers or TRANSFER_BYTES_HEADER not in response.headers:
    sys.exit(f"the answer did not come through the cloud partition: {dict(response.headers)}")
outputs = wire.decode(response.content)
worst = 0.0
for name, want in expected.items():
    got = np.asarray(outputs[name])
    if got.shape != want.shape:
        sys.exit(f"{name}: shape {got.shape} on arm64, {want.shape} on x86")
    worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))))
same_top1 = all(
    np.array_equal(np.argmax(outputs[n], axis=-1), np.argmax(w, axis=-1))
    for n, w in expected.items()
)
print(
    f"inference (cut {cut}, {response.headers[TRANSFER_BYTES_HEADER]} bytes crossed): "
    f"{infer_s:.1f} s; max abs diff arm64 vs x86: {worst:.3g} (tolerance {atol:g}); "
    f"same top-1: {same_top1}"
)
sys.exit(0 if worst <= atol and same_top1 else 1)
EOF
    echo "arm64 check FAILED; the container's last lines:" >&2
    docker logs --tail 40 "$CONTAINER" >&2 || true
    exit 1
fi
echo "base: ${base_s} s; image: ${image_s} s; inference check: $(since "$t") s; $IMAGE is $arch"
