# syntax=docker/dockerfile:1
# Image for the source-bulk-export capture connector, after Estuary's
# estuary-cdk/common.Dockerfile: a multi-stage python:3.12-slim build, dependencies in a
# virtualenv at /opt/venv installed by Poetry from poetry.lock, and only the connector
# package shipped (no tests).
#
#   docker build -t ghcr.io/estuary/source-bulk-export:local .
#
# (The build context is this repository; .dockerignore admits only pyproject.toml,
# poetry.lock and source_bulk_export/.)

ARG PYTHON_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ARG CONNECTOR_NAME=source-bulk-export
ARG POETRY_VERSION=2.5.1

# Poetry lives in its own venv, outside the one that ships.
RUN python -m venv /opt/poetry \
 && /opt/poetry/bin/pip install --no-cache-dir "poetry==${POETRY_VERSION}"

RUN python -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    POETRY_VIRTUALENVS_CREATE=false \
    POETRY_NO_INTERACTION=1 \
    PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring

WORKDIR /opt/${CONNECTOR_NAME}

# Dependencies first: this layer is cached until pyproject.toml or poetry.lock change.
COPY pyproject.toml poetry.lock ./
# --compile: the image ships bytecode, so no start (and Flow restarts a connector after every
# error) compiles the import tree again, about 0.6 s each time, nor needs a writable venv to cache it.
RUN /opt/poetry/bin/poetry install --only main --no-root --no-interaction --compile

# Then the connector package itself.
COPY source_bulk_export ./source_bulk_export
RUN /opt/poetry/bin/poetry install --only main --no-interaction --compile \
 && /opt/venv/bin/python -m compileall -q source_bulk_export \
 && /opt/venv/bin/python -c "import source_bulk_export"

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runner

ARG CONNECTOR_NAME=source-bulk-export
ARG CONNECTOR_TYPE=capture
ARG USAGE_RATE=1.0
ARG DOCS_URL=https://go.estuary.dev/source-bulk-export

RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client tzdata tzdata-legacy \
 && rm -rf /var/lib/apt/lists/*

LABEL FLOW_RUNTIME_PROTOCOL=capture
LABEL FLOW_RUNTIME_CODEC=json
LABEL dev.estuary.usage-rate=${USAGE_RATE}

# The package is installed into /opt/venv in develop mode (a .pth pointing here), so both
# directories ship, at the same paths as in the builder.
COPY --from=builder /opt/${CONNECTOR_NAME} /opt/${CONNECTOR_NAME}
COPY --from=builder /opt/venv /opt/venv
COPY --from=ghcr.io/estuary/network-tunnel:dev /flow-network-tunnel /usr/bin/flow-network-tunnel

ENV DOCS_URL=${DOCS_URL} \
    ENCRYPTION_URL=https://config-encryption.estuary.dev/v1/encrypt-config \
    CONNECTOR_NAME=${CONNECTOR_NAME} \
    VIRTUAL_ENV=/opt/venv

WORKDIR /opt/${CONNECTOR_NAME}

CMD ["/opt/venv/bin/python", "-m", "source_bulk_export"]
