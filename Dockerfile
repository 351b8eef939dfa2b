# syntax=docker/dockerfile:1
# The rft-operator images (see docs/image.md). Three targets, built from the same context:
#
#   docker build --target operator        -t ghcr.io/rft-operator/rft-operator:0.1.0 .
#   docker build --target trainer         -t ghcr.io/rft-operator/rft-trainer:0.1.0 .
#   docker build --target serving-helpers -t ghcr.io/rft-operator/rft-serving-helpers:0.1.0 .
#
# operator:        the Kopf operator (`python -m rft_operator`), `.[operator]`, no torch, on
#                  distroless.
# trainer:         the LoRA trainer (`python -m rft_trainer`, `torchrun -m rft_trainer`) and
#                  dataset validation (`python -m rft.pods.validate`), `.[trainer]`, on an NVIDIA CUDA
#                  base.
# serving-helpers: the vLLM server pods' model fetch (init container, `python -m rft.pods.fetch`) and
#                  adapter sidecar (`python -m rft.pods.adapter_sidecar`), `.[storage]` (boto3,
#                  google-cloud-storage), no torch, on distroless: every new server replica pulls
#                  it, so it is small. Inference itself is vLLM's own image.
#
# Every dependency is pinned with hashes (deploy/image/*.lock, from deploy/image/lock.sh), Python
# is uv's checksum-verified build, and base images are pinned by version tag; pin them by digest
# too with --build-arg (docs/image.md). No compilers, package caches or uv in the final images;
# all run as the non-root user 1000 with a read-only root filesystem in mind (bytecode is
# compiled at build time).

ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG BUILD_BASE=debian:12.12-slim
ARG OPERATOR_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG TRAINER_BASE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG SERVING_HELPERS_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG PYTHON_VERSION=3.11

FROM ${UV_IMAGE} AS uv

# --- the project's own wheel (pure Python) -----------------------------------------------------------
FROM ${BUILD_BASE} AS wheel
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy/image/build.lock deploy/image/build.lock
COPY core core
COPY operator operator
COPY trainer trainer
# tools/ holds only development tooling (the local cluster): it is not copied, and the wheel's
# package list (pyproject.toml) leaves it out.
RUN uv python install "${PYTHON_VERSION}" \
    && uv build --wheel --python "${PYTHON_VERSION}" \
        --build-constraints deploy/image/build.lock --require-hashes --out-dir /wheels .

# --- a virtualenv from a lock file, plus the wheel ----------------------------------------------------
# Shared recipe; the stages below differ in their base image and lock file.
FROM ${BUILD_BASE} AS operator-env
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
COPY deploy/image/operator.lock /tmp/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv \
    && uv pip sync --python /opt/venv/bin/python --require-hashes /tmp/requirements.lock \
    && uv pip install --python /opt/venv/bin/python --no-deps /tmp/wheels/*.whl \
    && rm -rf /opt/python/*/include /opt/python/*/share /opt/python/*/lib/pkgconfig \
        /opt/python/*/lib/python3*/ensurepip /opt/python/*/lib/python3*/idlelib \
        /opt/python/*/lib/python3*/tkinter /opt/python/*/lib/python3*/turtledemo \
        /tmp/requirements.lock /tmp/wheels

FROM ${TRAINER_BASE} AS trainer-env
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
COPY deploy/image/trainer.lock /tmp/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv \
    && uv pip sync --python /opt/venv/bin/python --require-hashes /tmp/requirements.lock \
    && uv pip install --python /opt/venv/bin/python --no-deps /tmp/wheels/*.whl \
    && rm -rf /opt/python/*/include /opt/python/*/share /opt/python/*/lib/pkgconfig \
        /opt/python/*/lib/python3*/ensurepip /opt/python/*/lib/python3*/idlelib \
        /opt/python/*/lib/python3*/tkinter /opt/python/*/lib/python3*/turtledemo \
        /tmp/requirements.lock /tmp/wheels

FROM ${BUILD_BASE} AS serving-helpers-env
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
COPY deploy/image/serving-helpers.lock /tmp/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv \
    && uv pip sync --python /opt/venv/bin/python --require-hashes /tmp/requirements.lock \
    && uv pip install --python /opt/venv/bin/python --no-deps /tmp/wheels/*.whl \
    && rm -rf /opt/python/*/include /opt/python/*/share /opt/python/*/lib/pkgconfig \
        /opt/python/*/lib/python3*/ensurepip /opt/python/*/lib/python3*/idlelib \
        /opt/python/*/lib/python3*/tkinter /opt/python/*/lib/python3*/turtledemo \
        /tmp/requirements.lock /tmp/wheels

# --- operator -----------------------------------------------------------------------------------
FROM ${OPERATOR_BASE} AS operator
ARG OPERATOR_BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=operator-env /opt/python /opt/python
COPY --from=operator-env /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 1000:1000
# 8080: Prometheus /metrics; 8081: Kopf's liveness endpoint (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "rft_operator"]
CMD ["--all-namespaces", "--standalone", "--liveness=http://0.0.0.0:8081/healthz"]
LABEL org.opencontainers.image.title="rft-operator" \
      org.opencontainers.image.description="Kubernetes operator for reinforcement fine-tuning of LLMs (Datasets, Models, Deployments, ReinforcementSteps)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/rft-operator/rft-operator" \
      org.opencontainers.image.documentation="https://github.com/rft-operator/rft-operator/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="rft-operator" \
      org.opencontainers.image.base.name="${OPERATOR_BASE}"

# --- trainer (also dataset validation) -------------------------------------------------------------
FROM ${TRAINER_BASE} AS trainer
ARG TRAINER_BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=trainer-env /opt/python /opt/python
COPY --from=trainer-env /opt/venv /opt/venv
# The base image sets NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES and the driver's
# library path; torch brings its own CUDA libraries (nvidia-* wheels in trainer.lock).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# uid 1000 is the base image's unprivileged user; the operator runs these pods as 1000:1000.
USER 1000:1000
# 8089: the trainer's GET /progress.
EXPOSE 8089
CMD ["python", "-m", "rft_trainer"]
LABEL org.opencontainers.image.title="rft-trainer" \
      org.opencontainers.image.description="rft-operator's LoRA trainer and dataset validation (torch, peft, transformers)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/rft-operator/rft-operator" \
      org.opencontainers.image.documentation="https://github.com/rft-operator/rft-operator/blob/main/docs/image.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="rft-operator" \
      org.opencontainers.image.base.name="${TRAINER_BASE}"

# --- serving-helpers (the vLLM server pods' model fetch and adapter sidecar) -----------------------
FROM ${SERVING_HELPERS_BASE} AS serving-helpers
ARG SERVING_HELPERS_BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
COPY --from=serving-helpers-env /opt/python /opt/python
COPY --from=serving-helpers-env /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 1000:1000
# 8001: the adapter sidecar. The operator's pods name their command: `python -m rft.pods.fetch URL DIR`
# (init container) or `python -m rft.pods.adapter_sidecar` (sidecar, also the default here).
EXPOSE 8001
CMD ["python", "-m", "rft.pods.adapter_sidecar"]
LABEL org.opencontainers.image.title="rft-serving-helpers" \
      org.opencontainers.image.description="rft-operator's model fetch and adapter sidecar for vLLM server pods (boto3, google-cloud-storage; no torch)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/rft-operator/rft-operator" \
      org.opencontainers.image.documentation="https://github.com/rft-operator/rft-operator/blob/main/docs/image.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="rft-operator" \
      org.opencontainers.image.base.name="${SERVING_HELPERS_BASE}"
