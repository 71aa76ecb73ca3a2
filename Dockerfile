# syntax=docker/dockerfile:1
# audit-ingest worker image: `audit-ingest run` (default: one worker process per CPU the container may
# use, AUDIT_INGEST_WORKER__PROCESSES to choose; README "Processes"), `setup`, `parse`. Runs as uid 10001:
# files it reads from the host (authorized_keys, GeoIP databases) must be readable by that uid.
#   docker build -t audit-ingest .
# GeoIP databases are not in the image: mount them (see docker-compose.yml, /usr/share/GeoIP).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/audit-ingest
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is cached while only the code changes.
COPY pyproject.toml ./
RUN /opt/audit-ingest/bin/pip install --upgrade pip \
 && /opt/audit-ingest/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/audit-ingest/bin/pip install -r /tmp/requirements.txt
# Then the package itself (no dependency left to fetch).
COPY README.md ./
COPY ingest ./ingest
COPY patterns ./patterns
COPY kibana ./kibana
RUN /opt/audit-ingest/bin/pip install --no-deps . \
 && test -d /opt/audit-ingest/share/audit-ingest/patterns \
 && test -f /opt/audit-ingest/share/audit-ingest/kibana/audit.ndjson

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="audit-ingest" \
      org.opencontainers.image.description="Filebeat events from Redis, parsed and enriched, into Elasticsearch" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/audit-ingest/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUDIT_INGEST_PATTERNS_DIR=/app/patterns
RUN groupadd --system --gid 10001 audit \
 && useradd --system --uid 10001 --gid audit --home-dir /app --shell /usr/sbin/nologin audit \
 && mkdir -p /usr/share/GeoIP /etc/audit-ingest
COPY --from=build /opt/audit-ingest /opt/audit-ingest
# The pattern files are also in the wheel's shared data (/opt/audit-ingest/share/audit-ingest/patterns);
# this copy is the one AUDIT_INGEST_PATTERNS_DIR names, so users can mount their own over it.
COPY --chown=root:root patterns /app/patterns
WORKDIR /app
USER 10001:10001
# Prometheus metrics of `run`.
EXPOSE 9108
ENTRYPOINT ["audit-ingest"]
CMD ["run"]
