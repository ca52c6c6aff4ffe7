# syntax=docker/dockerfile:1
# carweb's production image: `docker build -t carweb .`; docker-compose.yml runs it
# behind nginx with MongoDB, Mosquitto and Redis.

# Browser libraries, as `make assets` does it: only the built files ship (deploy/vendor.sh).
FROM node:20-slim AS assets
WORKDIR /build
COPY package.json package-lock.json ./
COPY deploy/vendor.sh deploy/
RUN npm ci --no-audit --no-fund --loglevel=error && deploy/vendor.sh

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /app

RUN groupadd --system --gid 10001 carweb \
    && useradd --system --uid 10001 --gid carweb --home-dir /nonexistent --no-create-home carweb \
    && mkdir -p /srv/carweb/static && chown 10001:10001 /srv/carweb/static

# Production dependencies only: requirements-dev.txt pulls SecantusDB (GPL, tests only).
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY carweb/ carweb/
COPY templates/ templates/
COPY static/ static/
COPY --from=assets /build/static/vendor/ static/vendor/
COPY wsgi.py ./
COPY deploy/ deploy/
RUN python -m compileall -q carweb wsgi.py

# Files stay owned by root: the app never writes into its own tree. Numeric, so that
# Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CARWEB_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["web"]
