#!/usr/bin/env bash
# End-to-end on a real cluster: a kind cluster, the project's image, the CRDs, the Helm chart with
# the emulated device plugin, then an FpgaModel and an FpgaWebservice that must become Ready and
# answer a scoring request with the key from their Secret; deleting them must clean up.
#
#   bash tests/e2e/kind_e2e.sh              # about 10-20 minutes, most of it the image build
#   bash tests/e2e/kind_e2e.sh --preflight  # only say whether it can run here ("ok" or "SKIP: ...")
#
# Needs docker (with a reachable daemon), kind, kubectl and helm; without them it prints
# "SKIP: ..." and exits 0. Also needs a Python with fpgaserve installed ($PYTHON, default python3),
# which builds the service package (SDK) and scores (CLI) from this machine.
# Environment: KIND_CLUSTER (default fpgaserve-e2e), IMAGE (the web services'; default
# fpgaserve/fpgaserve:e2e), OPERATOR_IMAGE (the Dockerfile's "operator" target; default
# fpgaserve/fpgaserve-operator:e2e), SLIM_IMAGE (its "serve-slim" target, the device plugin's;
# default fpgaserve/fpgaserve-slim:e2e),
# KEEP_CLUSTER=1 to keep the cluster for a look afterwards (kubeconfig path printed).
set -euo pipefail

# Only builtins until the preflight has passed: it must work with whatever PATH it is given.
here=${BASH_SOURCE[0]%/*}
[[ $here == "${BASH_SOURCE[0]}" ]] && here=.
ROOT=$(cd "$here/../.." && pwd)

preflight() {
    local tool missing=()
    for tool in docker kind kubectl helm; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        local list
        printf -v list '%s, ' "${missing[@]}"
        echo "SKIP: ${list%, } not found on PATH (the kind end-to-end run needs docker, kind, kubectl and helm)"
        return 1
    fi
    local probe=(docker info)
    # A remote DOCKER_HOST that does not answer would hang docker info for minutes.
    command -v timeout >/dev/null 2>&1 && probe=(timeout 30 docker info)
    if ! "${probe[@]}" >/dev/null 2>&1; then
        echo "SKIP: the Docker daemon is unreachable (\`docker info\` failed${DOCKER_HOST:+ for DOCKER_HOST=$DOCKER_HOST})"
        return 1
    fi
}

if [[ ${1:-} == --preflight ]]; then
    preflight && echo ok
    exit 0
fi
preflight || exit 0

CLUSTER=${KIND_CLUSTER:-fpgaserve-e2e}
IMAGE=${IMAGE:-fpgaserve/fpgaserve:e2e}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-fpgaserve/fpgaserve-operator:e2e}
SLIM_IMAGE=${SLIM_IMAGE:-fpgaserve/fpgaserve-slim:e2e}
PYTHON=${PYTHON:-python3}
NS=fpgaserve-e2e
OPERATOR_NS=fpgaserve-system
RELEASE=fpgaserve
NAME=effnet
# On the node: the FpgaModel's file:// source is mounted from here (hostPath) into storage-init.
PKG_DIR=/var/lib/fpgaserve/packages/$NAME

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fpgaserve-e2e.XXXXXX")
# A kubeconfig of our own: the user's current context is never touched.
export KUBECONFIG=$WORK/kubeconfig
CREATED=0
BUILD_PID=
PF_PID=

log() { printf '\n== %s\n' "$*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
# The CLI of $PYTHON's fpgaserve, the one that built the package (not whatever is on PATH).
fpgaserve() { "$PYTHON" -m fpgaserve.cli.main "$@"; }

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 2 s until it succeeds, at most SECONDS.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        ((SECONDS < deadline)) || fail "not within ${seconds}s: $what"
        sleep 2
    done
}

diagnostics() {
    echo "---- diagnostics" >&2
    kubectl get nodes -o wide >&2 || true
    kubectl get fpgaserve,all,secrets -A >&2 || true
    kubectl -n "$NS" describe fpgamodels,fpgawebservices,pods >&2 || true
    kubectl -n "$NS" logs -l "fpgaserve.io/webservice=$NAME" --all-containers --tail=100 >&2 || true
    kubectl -n "$OPERATOR_NS" logs "deployment/$RELEASE-operator" --tail=200 >&2 || true
    kubectl -n kube-system logs "daemonset/$RELEASE-device-plugin" --tail=50 >&2 || true
    kubectl get events -A --sort-by=.lastTimestamp >&2 || true
}

cleanup() {
    local status=$?
    trap - EXIT
    set +e # clean up as far as possible, whatever fails on the way
    [[ -n $PF_PID ]] && kill "$PF_PID" 2>/dev/null
    [[ -n $BUILD_PID ]] && kill "$BUILD_PID" 2>/dev/null
    if ((status != 0 && CREATED)); then
        diagnostics
    fi
    if ((CREATED)) && [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
        echo "kept kind cluster $CLUSTER: KUBECONFIG=$KUBECONFIG" >&2
    else
        if ((CREATED)); then
            kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || status=1
        fi
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PYTHON" -c 'import fpgaserve.sdk' 2>/dev/null ||
    fail "$PYTHON cannot import fpgaserve: set PYTHON to the interpreter of a venv with the project installed"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    fail "a kind cluster named $CLUSTER exists already; delete it or set KIND_CLUSTER"
fi

log "building $OPERATOR_IMAGE, $IMAGE and $SLIM_IMAGE (in the background) and creating the kind cluster $CLUSTER"
{ docker build --target operator --tag "$OPERATOR_IMAGE" "$ROOT" && docker build --tag "$IMAGE" "$ROOT" &&
    docker build --target serve-slim --tag "$SLIM_IMAGE" "$ROOT"; } \
    >"$WORK/build.log" 2>&1 &
BUILD_PID=$!
CREATED=1
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
if ! wait "$BUILD_PID"; then
    BUILD_PID=
    tail -n 50 "$WORK/build.log" >&2
    fail "docker build failed"
fi
BUILD_PID=
kind load docker-image "$IMAGE" "$OPERATOR_IMAGE" "$SLIM_IMAGE" --name "$CLUSTER"

log "CRDs, then the chart with the emulated device plugin"
kubectl apply -f "$ROOT/crds/"
kubectl wait --for=condition=Established --timeout=60s \
    crd/fpgamodels.fpgaserve.io crd/fpgawebservices.fpgaserve.io
# The CRDs exist already, so Helm skips the chart's copies (the same bytes; a test checks).
helm install "$RELEASE" "$ROOT/charts/fpgaserve" --namespace "$OPERATOR_NS" --create-namespace \
    --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" \
    --set "operatorImage.repository=${OPERATOR_IMAGE%:*}" --set "operatorImage.tag=${OPERATOR_IMAGE##*:}" \
    --set "slimImage.repository=${SLIM_IMAGE%:*}" --set "slimImage.tag=${SLIM_IMAGE##*:}" \
    --set devicePlugin.enabled=true \
    --wait --timeout 5m
kubectl -n "$OPERATOR_NS" rollout status "deployment/$RELEASE-operator" --timeout=180s
kubectl -n kube-system rollout status "daemonset/$RELEASE-device-plugin" --timeout=180s
node_has_fpgas() {
    [[ $(kubectl get nodes -o jsonpath='{.items[0].status.allocatable.fpgaserve\.io/fpga}') == 4 ]]
}
wait_for 120 "the node to advertise 4 fpgaserve.io/fpga" node_has_fpgas

log "building the service package (EfficientNet-Lite0, real weights) with the SDK"
SHA256=$(
    "$PYTHON" - "$WORK" <<'PY' | tail -n 1
import sys
from pathlib import Path

import imageio.v3 as iio
import skimage.data

from fpgaserve.sdk.pipeline import zoo_pipeline
from fpgaserve.sdk.zoo import QuantizedEfficientNetLite0

work = Path(sys.argv[1])
info = zoo_pipeline(QuantizedEfficientNetLite0(work / "models")).save(work / "service_def.zip")
iio.imwrite(work / "chelsea.jpg", skimage.data.chelsea())  # the photo to score
print(info.sha256)
PY
)
[[ $SHA256 =~ ^[0-9a-f]{64}$ ]] || fail "no sha256 from the package build: $SHA256"

# kind's nodes are containers: the package goes onto each node's disk with docker cp (works with
# remote Docker daemons too, unlike a bind mount), readable by the pods' non-root user.
for node in $(kind get nodes --name "$CLUSTER"); do
    docker exec "$node" mkdir -p "$PKG_DIR"
    docker cp "$WORK/service_def.zip" "$node:$PKG_DIR/service_def.zip"
    docker exec "$node" chmod -R a+rX /var/lib/fpgaserve
done

log "FpgaModel and FpgaWebservice $NAME in $NS"
kubectl create namespace "$NS"
kubectl apply -f - <<YAML
apiVersion: fpgaserve.io/v1alpha1
kind: FpgaModel
metadata:
  name: $NAME
  namespace: $NS
spec:
  description: EfficientNet-Lite0 on an emulated FPGA (kind end-to-end)
  source:
    uri: file://$PKG_DIR/service_def.zip
    sha256: $SHA256
---
apiVersion: fpgaserve.io/v1alpha1
kind: FpgaWebservice
metadata:
  name: $NAME
  namespace: $NS
spec:
  model: $NAME
  # The kind node shares this machine's cores with the control plane: the default 1 CPU may not fit.
  resources:
    cpu: 250m
    memory: 2Gi
YAML
kubectl -n "$NS" wait --for=condition=Ready "fpgamodel/$NAME" --timeout=120s
kubectl -n "$NS" wait --for=condition=Ready "fpgawebservice/$NAME" --timeout=600s
kubectl -n "$NS" get fpgaserve

owned() {
    kubectl -n "$NS" get deployments,services,secrets,pods,horizontalpodautoscalers,poddisruptionbudgets,ingresses \
        -l "fpgaserve.io/webservice=$NAME" -o name
}
OWNED=$(owned)
for object in "deployment.apps/$NAME" "service/$NAME" "secret/$NAME-keys"; do
    grep -qx "$object" <<<"$OWNED" || fail "$object is missing; the web service owns: ${OWNED//$'\n'/ }"
done
[[ $(kubectl get nodes -o jsonpath='{.items[0].status.allocatable.fpgaserve\.io/fpga}') == 4 ]] ||
    fail "the node no longer advertises its FPGAs"

log "scoring a photo through kubectl port-forward"
kubectl -n "$NS" port-forward "service/$NAME" :80 >"$WORK/port-forward.log" 2>&1 &
PF_PID=$!
forwarding() { grep -q '^Forwarding from 127.0.0.1:' "$WORK/port-forward.log"; }
wait_for 30 "kubectl port-forward to listen" forwarding
PORT=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/port-forward.log" | head -n 1)
SECRET=$(kubectl -n "$NS" get fpgawebservice "$NAME" -o jsonpath='{.status.keysSecret}')
KEY=$(kubectl -n "$NS" get secret "$SECRET" -o jsonpath='{.data.keys\.json}' | base64 -d |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["primaryKey"])')
fpgaserve score "http://127.0.0.1:$PORT" "$WORK/chelsea.jpg" --key "$KEY" --json >"$WORK/answer.json"
"$PYTHON" - "$WORK/answer.json" <<'PY'
import json
import sys

answer = json.load(open(sys.argv[1]))
top = answer["results"][0]["top5"][0]
# ImageNet's domestic cats are classes 281-285 (tabby, tiger cat, Persian, Siamese, Egyptian cat).
assert 281 <= top["index"] <= 285, f"chelsea is a cat, not {top}"
assert answer["deviceSeconds"] > 0, "no time on the (emulated) FPGA"
print(f"top-1: {top['label']} ({top['probability']:.2f}), FPGA time {answer['deviceSeconds'] * 1e3:.2f} ms")
PY
if fpgaserve score "http://127.0.0.1:$PORT" "$WORK/chelsea.jpg" --key not-the-key >/dev/null 2>&1; then
    fail "a wrong key was accepted"
fi
kill "$PF_PID"
PF_PID=

log "deleting the web service and the model"
kubectl -n "$NS" delete fpgawebservice "$NAME" --timeout=120s
nothing_owned() { [[ -z $(owned) ]]; }
wait_for 180 "the garbage collector to delete what the web service owned" nothing_owned
kubectl -n "$NS" delete fpgamodel "$NAME" --timeout=120s
[[ -z $(kubectl -n "$NS" get fpgamodels,fpgawebservices -o name) ]] || fail "custom resources are left"

log "PASS"
