#!/usr/bin/env bash
# End-to-end in real containers, without a cluster: the three images built from the Dockerfile, then
# every role run in them as Kubernetes would run it (tests/e2e/container_pods.py does the running):
# the device plugin against a fake kubelet (the real v1beta1 API), the operator against the
# Kubernetes API emulator of the operator tests, and the web service's pod the operator generated
# (init container, server, Secret and emptyDir volumes, securityContext, memory limit, the device
# plugin's Allocate answer), which must score a real photo over its TLS with its generated key.
#
#   bash tests/e2e/container_e2e.sh              # 3-10 minutes, most of it the first image build
#   bash tests/e2e/container_e2e.sh --preflight  # only say whether it can run here ("ok" or "SKIP: ...")
#
# Docker engine: a reachable one is reused. Otherwise, with E2E_INSTALL=1 (the default when CI=true)
# and as root, Debian's docker.io is installed (apt-get) if needed and dockerd started with loopback
# networking only (no bridge, no iptables); it keeps running for the next run. Builds and
# containers use --network host. Without an engine and no way to start one it prints "SKIP: ..."
# and exits 0, as the kind script does.
# Base image: python:3.11-slim when present or pullable; otherwise a local stand-in made with
# debootstrap (Debian bookworm, minbase, python3 and a venv on PATH), its root filesystem cached
# in $E2E_CACHE (default /var/cache/fpgaserve-e2e) and rebuilt whenever the cache is missing or bad.
# Environment: PYTHON (a Python with fpgaserve and its test extras; default python3),
# BUILD_CA_BUNDLE (a PEM bundle pip trusts while the images download wheels, for a TLS-inspecting
# proxy; default none), IMAGE / OPERATOR_IMAGE / SLIM_IMAGE (default fpgaserve/fpgaserve:e2e,
# fpgaserve/fpgaserve-operator:e2e and fpgaserve/fpgaserve-slim:e2e: the device plugin and the web
# service's pod run in the slim one, the full one is built and its kernels compiled in the build),
# E2E_INSTALL (1: may install and start an engine; default 1 when CI=true, else 0).
set -euo pipefail

here=${BASH_SOURCE[0]%/*}
[[ $here == "${BASH_SOURCE[0]}" ]] && here=.
ROOT=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python3}
IMAGE=${IMAGE:-fpgaserve/fpgaserve:e2e}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-fpgaserve/fpgaserve-operator:e2e}
SLIM_IMAGE=${SLIM_IMAGE:-fpgaserve/fpgaserve-slim:e2e}
E2E_CACHE=${E2E_CACHE:-/var/cache/fpgaserve-e2e}
BASE=python:3.11-slim
STANDIN=fpgaserve/base-standin:bookworm
# The stand-in's packages; the cache file is named after them so a change rebuilds it.
STANDIN_PACKAGES=python3,python3-venv,ca-certificates
STANDIN_TAR=$E2E_CACHE/base-bookworm-${STANDIN_PACKAGES//,/-}.tar
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUN_ID=fpgaserve-e2e-$$
E2E_INSTALL=${E2E_INSTALL:-$([[ ${CI:-} == true ]] && echo 1 || echo 0)}
export DOCKER_BUILDKIT=0 # the classic builder: no buildx plugin needed, --network host for RUN

log() { printf '\n== %s\n' "$*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

engine_up() { timeout 30 docker info >/dev/null 2>&1; }

# Whether an engine is there or can be had; prints the reason when not.
preflight() {
    if ((EUID != 0)); then
        # Secret volumes are owned by the pod's fsGroup and the plugin's sockets by root, as on a node.
        echo "SKIP: the container end-to-end run needs root (it lays out volumes as the kubelet does)"
        return 1
    fi
    if command -v docker >/dev/null 2>&1 && engine_up; then
        return 0
    fi
    if [[ $E2E_INSTALL != 1 ]]; then
        echo "SKIP: no reachable Docker engine (\`docker info\` failed); E2E_INSTALL=1 (default with CI=true) lets this script, as root, install and start one"
        return 1
    fi
    if ! command -v dockerd >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
        echo "SKIP: no reachable Docker engine, no dockerd and no apt-get to install docker.io"
        return 1
    fi
}

if [[ ${1:-} == --preflight ]]; then
    preflight && echo ok
    exit 0
fi
preflight || exit 0

"$PYTHON" -c 'import fpgaserve.sdk, kmock, grpc' 2>/dev/null ||
    fail "$PYTHON cannot import fpgaserve with its test extras: set PYTHON to the venv's interpreter"

CA_COPY=
cleanup() {
    local status=$?
    trap - EXIT
    set +e
    # Every container of this run, whatever happened (the driver removes its own; this is the net).
    local left
    left=$(docker ps -aq --filter "label=fpgaserve-e2e=$RUN_ID" 2>/dev/null)
    [[ -n $left ]] && docker rm -f $left >/dev/null
    [[ -n $CA_COPY ]] && rm -f "$CA_COPY"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    apt-get install -y -qq "$@" >/dev/null || fail "apt-get install $* failed"
}

start_engine() {
    engine_up && return 0
    log "starting a Docker engine (loopback networking only)"
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    mkdir -p "$E2E_CACHE"
    # Detached from this script: it outlives the run and is reused by the next one.
    setsid dockerd --bridge=none --iptables=false --ip-masq=false \
        >>"$E2E_CACHE/dockerd.log" 2>&1 </dev/null &
    local deadline=$((SECONDS + 90))
    until engine_up; do
        if ((SECONDS >= deadline)); then
            tail -n 30 "$E2E_CACHE/dockerd.log" >&2
            fail "dockerd did not answer within 90 s"
        fi
        sleep 1
    done
}

# A python:3.11-slim look-alike: Debian bookworm's python3 with a venv first on PATH, so that
# `python -m pip` installs where the official image's would.
build_standin() {
    if docker image inspect "$STANDIN" >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$E2E_CACHE"
    if [[ -s $STANDIN_TAR ]] && import_standin; then
        return 0
    fi
    log "building the base stand-in $STANDIN with debootstrap (python:3.11-slim cannot be pulled)"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local dir
    dir=$(mktemp -d "$E2E_CACHE/rootfs.XXXXXX")
    debootstrap --variant=minbase --include="$STANDIN_PACKAGES" bookworm "$dir" "$DEBIAN_MIRROR" \
        >"$E2E_CACHE/debootstrap.log" 2>&1 || {
        tail -n 30 "$E2E_CACHE/debootstrap.log" >&2
        rm -rf "$dir"
        fail "debootstrap failed"
    }
    chroot "$dir" python3 -m venv /opt/python || fail "python3 -m venv failed in the stand-in"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$STANDIN_TAR.part" . && mv "$STANDIN_TAR.part" "$STANDIN_TAR"
    rm -rf "$dir"
    import_standin || fail "docker import of the stand-in failed"
}

import_standin() {
    docker import \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$STANDIN_TAR" "$STANDIN" >/dev/null
}

pick_base() {
    if docker image inspect "$BASE" >/dev/null 2>&1 || timeout 120 docker pull -q "$BASE" >/dev/null 2>&1; then
        return 0
    fi
    build_standin
    BASE=$STANDIN
}

build() { # build TAG [docker build options...]
    local tag=$1
    shift
    local out=$E2E_CACHE/build-${tag//[\/:]/-}.log
    if ! docker build --network host --build-arg "BASE_IMAGE=$BASE" --tag "$tag" "$@" "$ROOT" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        fail "docker build of $tag failed (log: $out)"
    fi
    echo "$tag: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

start_engine
pick_base
if [[ -n ${BUILD_CA_BUNDLE:-} ]]; then
    [[ -r $BUILD_CA_BUNDLE ]] || fail "BUILD_CA_BUNDLE=$BUILD_CA_BUNDLE is not a readable file"
    CA_COPY=$ROOT/build-ca.pem # gitignored; removed on exit
    cp "$BUILD_CA_BUNDLE" "$CA_COPY"
fi
log "building $OPERATOR_IMAGE, $IMAGE and $SLIM_IMAGE on $BASE"
build "$OPERATOR_IMAGE" --target operator
build "$IMAGE"
# The classic builder built every stage above the default target, build-slim included: from cache.
build "$SLIM_IMAGE" --target serve-slim
[[ -n $CA_COPY ]] && rm -f "$CA_COPY" && CA_COPY=

log "running the roles in containers"
"$PYTHON" "$ROOT/tests/e2e/container_pods.py" --image "$SLIM_IMAGE" --operator-image "$OPERATOR_IMAGE" \
    --label "fpgaserve-e2e=$RUN_ID"

log "PASS"
