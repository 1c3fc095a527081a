# One image for every fpgaserve role: operator, device plugin, storage-init and the inference server
# (the command line picks the role; the operator never imports TensorFlow, so its pod stays small).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY inference ./inference
RUN python -m pip install --upgrade pip \
 && python -m pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    # numba caches compiled kernels next to the sources unless told otherwise; the root
    # filesystem is read-only in the pods the operator builds.
    NUMBA_CACHE_DIR=/tmp/numba-cache
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin fpgaserve
USER 10001:10001
EXPOSE 8080 8443
ENTRYPOINT ["fpgaserve"]
CMD ["--help"]
