# The connector image: one image for every role (authority, connector, broker); see
# examples/compose.yaml for a data space made of it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CONNECTOR_CONFIG=/etc/connector/connector.toml
WORKDIR /app
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY vocab ./vocab
COPY policies ./policies
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 connector \
    && mkdir -p /data /etc/connector && chown connector /data
# a participant's keys, its store (SQLite), its vault and audit log live in a volume
VOLUME ["/data"]
USER connector
# authority, DSP, management (+ /ui, /health, /ready, /metrics), data plane, broker
EXPOSE 8700 8801 8802 8803 8804
# a connector: ready when its store, the authority and its DAT are (`connector status`); the
# authority and the broker override this in examples/compose.yaml
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD connector status "$CONNECTOR_CONFIG" || exit 1
ENTRYPOINT ["connector"]
CMD ["--help"]
