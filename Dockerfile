# The connector image: one image for every role (authority, connector, broker).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY vocab ./vocab
COPY policies ./policies
RUN pip install --no-cache-dir . && useradd --create-home connector
USER connector
ENTRYPOINT ["connector"]
CMD ["--help"]
